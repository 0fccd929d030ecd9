"""Do proxies trained with a reduced learning rate rank mixtures as a larger model does? (issue 29, item 5)

On the embedded default corpus: `--mixtures` mixtures drawn as a study draws them (regmix.search.synthesize), each
trained by the project's trainer (regmix.train.sweep.train_sweep) as a proxy with the `demo` preset and with
`demo_low_lr` (a tenth of the learning rate), and as the larger target: tinyllama_1M, `--target-steps` steps of
16 x 128 tokens, at each of `--target-lrs`, keeping per mixture the best (the larger run tuned per mixture, the
objective of "Can Small Training Runs Reliably Guide Data Curation?"). Reported: Spearman of each proxy ranking
against the target's, and whether the proxies' best mixture is the target's best (and the target's loss lost by
taking the proxies' pick: regret@1). Runs are kept under `--output`, so a rerun trains nothing new.

    python bench/proxy_lr_transfer.py [--mixtures 16] [--workers 2] [--proxy-steps 300]   # 300: writes *_300.md
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

from regmix.core.objective import Objective
from regmix.core.results import load_result
from regmix.data.corpus import load_manifest
from regmix.data.default_corpus import build_default_corpus
from regmix.data.prepare import prepare
from regmix.search.synthesize import SynthesisSettings, synthesize
from regmix.settings.run_config import RunConfig, save_run_config
from regmix.settings.training import TrainingSettings
from regmix.train.sweep import train_sweep

RESULTS = Path(__file__).parent / "results" / "proxy_lr_transfer.md"


def objective_values(folder: Path, names: list[str], objective: Objective) -> np.ndarray:
    return np.array([objective.value(load_result(folder / name).valid_losses) for name in names])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=Path("data/default"))
    p.add_argument("--output", type=Path, default=Path("runs/bench_proxy_lr"))
    p.add_argument("--mixtures", type=int, default=16)
    p.add_argument("--target-steps", type=int, default=300)
    p.add_argument("--target-lrs", type=float, nargs="+", default=[1e-3, 3e-3])
    p.add_argument("--proxy-steps", type=int, default=100, help="the proxies' steps (default: the demo's %(default)s)")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if not (args.corpus / "manifest.json").exists():
        build_default_corpus(args.corpus / "raw")
        prepare(args.corpus / "raw", args.corpus)
    manifest = load_manifest(args.corpus)
    objective = Objective.mean(manifest.valid_domains)
    mixtures = synthesize(manifest.token_distribution(), args.mixtures, SynthesisSettings(seed=7))
    names = [f"m{i}" for i in range(len(mixtures))]
    demo = TrainingSettings.from_name("demo")
    steps = {"max_step": args.proxy_steps, "eval_step_interval": args.proxy_steps}
    suffix = "" if args.proxy_steps == demo.max_step else f"_{args.proxy_steps}"
    proxies = {f"proxy_{preset}{suffix}": TrainingSettings.from_name(preset, **steps)
               for preset in ("demo", "demo_low_lr")}
    arms = dict(proxies)
    for lr in args.target_lrs:
        arms[f"target_1M_lr{lr:g}"] = dataclasses.replace(
            demo, model_name="tinyllama_1M", max_step=args.target_steps, learning_rate=lr, min_lr=lr / 10,
            eval_step_interval=args.target_steps, warmup_steps=args.target_steps // 10)
    values = {}
    for arm, training in arms.items():
        configs = args.output / arm / "configs"
        configs.mkdir(parents=True, exist_ok=True)
        paths = []
        for name, mixture in zip(names, mixtures):
            path = configs / f"{name}.yaml"
            save_run_config(RunConfig(name, mixture, manifest.valid_domains, training), path)
            paths.append(path)
        train_sweep(paths, manifest, args.output / arm / "runs", workers=args.workers, wandb_mode="off")
        values[arm] = objective_values(args.output / arm / "runs", names, objective)
    target = np.min([v for arm, v in values.items() if arm.startswith("target")], axis=0)
    lines = [f"# Proxy learning rate against a larger model's ranking ({len(names)} mixtures, default corpus, "
             f"proxies of {args.proxy_steps} steps)", "",
             f"target: tinyllama_1M, {args.target_steps} steps of 16 x 128 tokens, best of learning rates "
             f"{', '.join(f'{lr:g}' for lr in args.target_lrs)} per mixture; objective: {objective.describe()}", "",
             "| proxies | Spearman with the target | same best mixture | regret@1 (target loss) |", "|---|---|---|---|"]
    for arm in proxies:
        pick = int(np.argmin(values[arm]))
        lines.append(f"| {arm.removeprefix('proxy_')} | {spearmanr(values[arm], target)[0]:.3f} | "
                     f"{'yes' if pick == int(np.argmin(target)) else 'no'} | {target[pick] - target.min():.4f} |")
    for arm in arms:
        if arm.startswith("target"):
            lines.append(f"\n{arm}: Spearman with the per-mixture best {spearmanr(values[arm], target)[0]:.3f}")
    text = "\n".join(lines) + "\n"
    RESULTS.with_stem(RESULTS.stem + suffix).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
