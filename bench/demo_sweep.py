"""The demo's proxy sweep on CPU, trained two ways through `train_sweep`: one process per core (each
proxy alone, the single engine) against K proxies stacked per process (the stacked engine).

Same configs, corpus (the embedded default, prepared as the demo does) and settings (the `demo`
preset) for every layout; wandb off; each layout trains into a fresh folder. Prints seconds, proxies
per minute and the ratio to the one-process-per-core baseline measured in the same run.

    python bench/demo_sweep.py [--proxies 16] [--layouts 2x1 1x4 1x8 1x16 2x8] [--steps 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from pathlib import Path

from regmix.data.default_corpus import build_default_corpus
from regmix.data.prepare import prepare
from regmix.search.synthesize import SynthesisSettings, synthesize, write_configs
from regmix.settings.training import TrainingSettings
from regmix.train.sweep import train_sweep


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--proxies", type=int, default=16, help="configs in the sweep (default: %(default)s)")
    p.add_argument("--layouts", nargs="+", default=[f"{os.cpu_count()}x1", "1x8", "1x16", f"{os.cpu_count()}x8"],
                   help="WORKERSxGROUP: worker processes x proxies stacked per worker; the first is the baseline")
    p.add_argument("--steps", type=int, default=None, help="max_step (default: the demo preset's)")
    p.add_argument("--corpus", type=Path, default=Path("data/default"), help="prepared corpus (made if missing)")
    args = p.parse_args()
    if not (args.corpus / "manifest.json").exists():
        build_default_corpus(args.corpus / "raw")
    manifest = prepare(args.corpus / "raw", args.corpus, vocab_size=2048, progress=False)
    training = TrainingSettings.from_name("demo")
    if args.steps:
        training = dataclasses.replace(training, max_step=args.steps)
    settings = SynthesisSettings()
    mixtures = synthesize(manifest.token_distribution(), args.proxies, settings)
    print(f"{args.proxies} proxies of {training.model_name}, {training.max_step} steps of "
          f"{training.global_batch_size} x {training.block_size} tokens, {os.cpu_count()} cores")
    baseline = None
    with tempfile.TemporaryDirectory() as tmp:
        configs = write_configs(mixtures, manifest.valid_domains, Path(tmp) / "configs", training, settings)
        for layout in args.layouts:
            workers, group = (int(x) for x in layout.split("x"))
            start = time.perf_counter()
            entries = train_sweep(configs, manifest, Path(tmp) / layout, workers=workers, group_size=group,
                                  device="cpu", wandb_mode="off", progress=False, report=lambda line: None)
            seconds = time.perf_counter() - start
            assert all(e.status == "finished" for e in entries), [e.detail for e in entries if e.status != "finished"]
            baseline = baseline or seconds
            print(f"  {workers} worker(s) x {group:>2} stacked: {seconds:7.1f} s  "
                  f"{60 * args.proxies / seconds:6.1f} proxies/min  {baseline / seconds:5.2f}x the baseline",
                  flush=True)


if __name__ == "__main__":
    main()
