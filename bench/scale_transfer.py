"""Does the scale-aware optimum win at a larger scale where the single-scale one does not? (issue 29, must show)

On one corpus (`--corpus default`: the embedded demo corpus; `system`: bench/system_corpus.py's Debian text), in
`--workdir`, with the project's own commands:

1. `regmix pipeline`: the demo's study (24 tinyllama_demo proxies of 100 steps, anchors, verification) with two
   larger scales on shared mixtures, `larger: [{runs: 12, model_name: tinyllama_1M}, {runs: 12, model_name:
   tinyllama_1M, max_step: 300}]` (16x the demo's non-embedding parameters, then 3x the tokens);
2. per regressor, `fit.scale_extrapolation_scores` on the objective (the mean validation loss as one target):
   Spearman and regret@1 at the largest scale (tinyllama_1M, 300 steps) of a fit that never saw it (scale-aware:
   the two smaller scales; single-scale: the demo swarm);
3. the single-scale optimum (the study's own answer: its default regressors, which learn from the demo swarm, the
   scale with the most runs) and the scale-aware one (`fit --model scaling scaling_lightgbm` over all three
   scales, `simulate --params --tokens` at the target: tinyllama_1M for `--target-steps` steps, beyond every
   scale observed);
4. `regmix transfer`: both optima, natural and uniform trained at the target with 3 seeds (the demo's other
   settings), the table with seed spreads and Welch's verdicts (regmix.study.verify, issue 24's rule).

Appends its table to bench/results/scale_transfer.md. Every step resumes: a rerun trains nothing that finished.

    python bench/system_corpus.py WORKDIR/data/system_raw   # for --corpus system, once
    python bench/scale_transfer.py --corpus default --workdir /tmp/scale_default
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import os
import shutil
from pathlib import Path

from larger_runs import objective_target

from regmix import pipeline
from regmix.core.objective import Objective
from regmix.core.observations import find_csvs, read_csvs
from regmix.regression import fit as fit_command
from regmix.regression import simulate as simulate_command
from regmix.regression.fit import scale_extrapolation_scores
from regmix.regression.regressors import make_regressor
from regmix.settings.training import TrainingSettings
from regmix.study import transfer as transfer_command
from regmix.study.verify import seed_runs, verdict, welch_p
from regmix.train.models import model_size

RESULTS = Path(__file__).resolve().parent / "results" / "scale_transfer.md"
REGRESSORS = ("linear", "lightgbm", "loglinear", "saturating", "gp", "ensemble", "scaling", "scaling_lightgbm")
CORPORA = {"default": "", "system": "corpus: {source: data/system_raw, prepared: data/system}\n"}


def experiment_text(name: str, corpus: str, larger_runs: int) -> str:
    return (f"name: {name}\n{CORPORA[corpus]}"
            f"larger: [{{runs: {larger_runs}, model_name: tinyllama_1M}},\n"
            f"         {{runs: {larger_runs}, model_name: tinyllama_1M, max_step: 300}}]\n"
            "sweep: {wandb: 'off'}\n")


def regressor_table(observations, objective: Objective) -> list[str]:
    """Spearman and regret@1 at the largest scale, per regressor, on the objective as one target."""
    one = objective_target(observations, objective)
    lines = ["| regressor | fit on | Spearman at the largest scale | regret@1 |", "|---|---|---|---|"]
    for name in REGRESSORS:
        aware = name.startswith("scaling")
        row = scale_extrapolation_scores(make_regressor(name, 2), one, aware).loc["objective"]
        seen = "both smaller scales" if aware else "the demo swarm"
        lines.append(f"| {name} | {seen} | {row['spearman']:.1f} | {row['regret']:.4f} |")
    return lines


def verdict_table(results, objective: Objective) -> list[str]:
    stats = {name: seed_runs(name, [r.valid_losses for r in runs if r.ok], objective) for name, runs in results.items()
             if any(r.ok for r in runs)}
    names = {"optimal": "scale-aware optimum", "single_scale": "single-scale optimum"}
    lines = ["| mixture | objective at the target (mean ± std) | vs natural | vs uniform | vs the other optimum |",
             "|---|---|---|---|---|"]
    for name, label in [*names.items(), ("natural", "natural"), ("uniform", "uniform")]:
        if name not in stats:
            lines.append(f"| {label} | no finished run | | | |")
            continue
        s = stats[name]
        cells = []
        for other in ("natural", "uniform", "single_scale" if name == "optimal" else "optimal"):
            if name in names and other != name and other in stats:
                cells.append(f"{verdict(s, stats[other])} (p={welch_p(s, stats[other]):.3f})")
            else:
                cells.append("")
        lines.append(f"| {label} | {s.mean:.4f} ± {s.std:.4f} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", choices=sorted(CORPORA), default="default")
    p.add_argument("--workdir", type=Path, required=True)
    p.add_argument("--larger-runs", type=int, default=12, help="runs at each larger scale (default: %(default)s)")
    p.add_argument("--target-steps", type=int, default=600, help="the target's steps of 16 x 128 tokens")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(args.workdir)
    name = f"scale_{args.corpus}"
    Path(f"{name}.yaml").write_text(experiment_text(name, args.corpus, args.larger_runs))
    pipeline.main(["--config", f"{name}.yaml"])
    study, prepared = Path(f"runs/{name}/regmix"), "data/default" if args.corpus == "default" else "data/system"

    observations = read_csvs(*find_csvs(study))
    objective = Objective.mean(observations.targets)
    target = TrainingSettings.from_name("demo", model_name="tinyllama_1M", max_step=args.target_steps,
                                        eval_step_interval=args.target_steps)
    params = model_size("tinyllama_1M", 2048, target.block_size)
    tokens = args.target_steps * target.global_batch_size * target.block_size
    with contextlib.redirect_stdout(io.StringIO()):  # the figures of every fold: not this table's
        regressors = regressor_table(observations, objective)
    shutil.copyfile(f"mixture_config/{name}/regmix/optimal_mixture.yaml", "single_scale.yaml")
    fit_command.main(["--study", str(study), "--model", "scaling", "scaling_lightgbm", "--output", "scale_aware.npz"])
    simulate_command.main(["--model", "scale_aware.npz", "--prior", prepared, "--output", "scale_aware.yaml",
                           "--large-model", "tinyllama_1M", "--params", str(params), "--tokens", str(tokens),
                           "--quiet"])
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in dataclasses.asdict(target).items()]
    results = transfer_command.main(["--optimal", "scale_aware.yaml", "--corpus", prepared, "--baselines", "natural",
                                     "uniform", "single_scale.yaml", "--output", "transfer", "--seeds",
                                     str(args.seeds), "--workers", "2", "--wandb", "off", "--no-estimate", *flags])
    table = verdict_table(results, objective)
    scales = ", ".join(f"{n / 1e6:.3g}M params x {d / 1e6:.3g}M tokens" for n, d in observations.scales())
    text = "\n".join([f"\n## {args.corpus} corpus ({len(observations)} runs at {scales})", "",
                      f"target: tinyllama_1M ({params / 1e6:.3g}M non-embedding params), {args.target_steps} steps "
                      f"of 16 x 128 tokens ({tokens / 1e6:.3g}M tokens), {args.seeds} seeds; objective: "
                      f"{objective.describe()}", "", *table, "",
                      "Each regressor at the largest scale observed (tinyllama_1M, 300 steps), fit without it:", "",
                      *regressors, ""])
    print(text)
    with RESULTS.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
