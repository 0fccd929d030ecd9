"""Train RegMix proxy models: one per mixture config, a whole sweep folder of them, resumable.

`python -m regmix.train_proxy --config n1.yaml --corpus data/prepared` trains one proxy;
`--config FOLDER` trains every config in it. Each run lives in `<output>/<config name>/`:

    config.yaml      the config as trained (copied from the sweep folder)
    metrics.jsonl    one line per evaluation: step, tokens, train loss, metric/<valid>_val_loss, ...
    result.json      written last, atomically: its presence means the run is done (finished or failed)
    checkpoint.pt    model, optimizer, sampler, schedule and step while training (removed at the end)
    lock             flock-ed by the worker training it (pid and host inside), so no run is trained twice
    wandb/           wandb's run files (offline-run-*/run-<id>.wandb unless online)

Runs with a result.json are skipped; an interrupted run resumes from its last checkpoint exactly.
A bad config or a diverged run (NaN/inf loss) is reported and the sweep goes on. A result or
checkpoint left by another mixture under the same name (a re-synthesized folder) is reported, never
reused or overwritten. The sweep itself is regmix.train.sweep; the loop regmix.train.loop.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from regmix.cli import ArgumentParser, RunFailed, add_dry_run_argument, integer_at_least, run_command, torch_device
from regmix.core.files import ConfigError, check_output_folder, noting
from regmix.core.schema import runs_folder
from regmix.data.corpus import CorpusManifest, load_manifest, verify_corpus
from regmix.settings.run_config import RunConfig, load_run_config, run_config_paths
from regmix.train.executor import add_executor_arguments, executor_from_args
from regmix.train.runlog import WANDB_MODES


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m regmix.train_proxy", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="example:\n  python -m regmix.synthesize --prior the_pile --output mixture_config/demo "
               "--num-configs 16\n  python -m regmix.train_proxy --config mixture_config/demo "
               "--corpus data/prepared --workers 2")
    p.add_argument("--config", type=Path, required=True,
                   help="a mixture config (.yaml) or a folder of them (a sweep)")
    p.add_argument("--corpus", type=Path, required=True,
                   help="prepared corpus folder (with manifest.json), made by `python -m regmix.prepare`")
    p.add_argument("--output", type=Path, default=None,
                   help="folder for the run folders (default: runs/<name of the config folder>)")
    p.add_argument("--workers", type=integer_at_least(0), default=0,
                   help="parallel worker processes; 0 = one per GPU on CUDA, one per core on CPU")
    p.add_argument("--group-size", type=integer_at_least(0), default=0,
                   help="proxies trained at once by one worker (stacked); 0 = 16 on CUDA, the CPU default on CPU")
    p.add_argument("--device", type=torch_device, default=None,
                   help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="auto",
                   help="wandb logging: auto = online with a wandb login, otherwise offline files")
    p.add_argument("--wandb-project", default="regmix", help="wandb project name")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_executor_arguments(p)
    add_dry_run_argument(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from regmix.train.sweep import train_sweep  # torch and litgpt: after the flags, so --help starts fast

    output = args.output or runs_folder(args.config)
    if not args.config.exists():
        raise ConfigError(args.config, "no such config file or folder")
    check_output_folder(output)
    manifest = load_manifest(args.corpus)
    print(f"{args.corpus}: {verify_corpus(manifest).summary()}")  # once per sweep: a damaged shard trains nothing
    paths = run_config_paths(args.config) if args.config.is_dir() else [args.config]
    if not paths:
        raise ConfigError(args.config, "no .yaml configs in this folder")
    if args.dry_run:
        return dry_run(paths, manifest, output, args)
    if not args.config.is_dir():  # one config: a bad one is bad input (exit 2), not a failed sweep
        load_run_config(args.config).check_corpus(manifest, args.config)
    entries = train_sweep(paths, manifest, output, workers=args.workers, device=args.device,
                          group_size=args.group_size, wandb_mode=args.wandb, wandb_project=args.wandb_project,
                          progress=not args.no_progress, executor=executor_from_args(args))
    failed = [e.name for e in entries if e.status == "failed"]
    if failed:
        raise RunFailed(f"{output}: {len(failed)} of {len(entries)} runs failed ({', '.join(failed[:5])}"
                        f"{', ...' if len(failed) > 5 else ''}); the summary above says why")
    return 0


def dry_run(paths: Sequence[Path], manifest: CorpusManifest, output: Path, args: argparse.Namespace) -> int:
    """--dry-run: every bad config (1), or the runs still to train, per training settings, with their tokens and
    time here (regmix.train.estimate, as `regmix validate` plans); trains and writes nothing."""
    from regmix.core.schema import RESULT_NAME
    from regmix.train.estimate import estimate
    from regmix.train.loop import group_key

    problems: list[ConfigError] = []
    groups: dict[tuple, list[RunConfig]] = {}
    for path in paths:
        with noting(problems, path):
            config = load_run_config(path)
            config.check_corpus(manifest, path)
            if not (output / config.name / RESULT_NAME).exists():  # as the sweep skips it
                groups.setdefault(group_key(config), []).append(config)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"{len(problems)} of {len(paths)} configs are bad; nothing was trained")
        return 1
    todo = sum(map(len, groups.values()))
    print(f"{len(paths) - todo} of {len(paths)} runs already finished in {output} (not trained again)")
    for configs in groups.values():
        print("\n".join(estimate(configs[0].training, len(configs), manifest.tokenizer.vocab_size, args.device,
                                 args.workers)))
    print("nothing was trained or written")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_command(main))
