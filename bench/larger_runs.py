"""How many larger runs does a scale-aware regressor need? (issue 29, item 2: the default of `larger.runs`)

Reads the runs of bench/scale_transfer.py's studies (three scales on shared mixtures: the demo swarm, tinyllama_1M
at 100 steps, tinyllama_1M at 300 steps). For k runs of the middle scale (its first k: the swarm's first mixtures,
as a study trains them), each scale-aware regressor is fit on the swarm and those k runs and scored at the largest
scale by the project's own `fit.scale_extrapolation_scores` on the objective (the mean validation loss as one
target): Spearman (%) and regret@1 at the largest scale. Beside them, single-scale saturating (the best
single-scale ranker at the largest scale in bench/scale_transfer.py) fit on the swarm alone.
Appends the table to bench/results/larger_runs.md.

    python bench/larger_runs.py /tmp/st/default/runs/scale_default/regmix /tmp/st/system/runs/scale_system/regmix
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
from pathlib import Path

import numpy as np

from regmix.core.objective import Objective
from regmix.core.observations import Observations, find_csvs, read_csvs
from regmix.regression.fit import scale_extrapolation_scores
from regmix.regression.regressors import make_regressor

RESULTS = Path(__file__).resolve().parent / "results" / "larger_runs.md"
AWARE = ("scaling", "scaling_lightgbm")


def objective_target(observations: Observations, objective: Objective) -> Observations:
    """The runs with the objective as their one target (bench/scale_transfer.py scores regressors on it too)."""
    values = [objective.value(dict(zip(observations.targets, row))) for row in observations.losses]
    return dataclasses.replace(observations, targets=("objective",), losses=np.array(values)[:, None])


def objective_runs(study: Path) -> Observations:
    """The study's runs with the mean validation loss as their one target."""
    observations = read_csvs(*find_csvs(study))
    return objective_target(observations, Objective.mean(observations.targets))


def scored(name: str, observations: Observations, aware: bool) -> str:
    with contextlib.redirect_stdout(io.StringIO()):
        row = scale_extrapolation_scores(make_regressor(name, 2), observations, aware).loc["objective"]
    return f"{row['spearman']:.1f} / {row['regret']:.4f}"


def positions(runs: Observations, scale: tuple[float, float]) -> np.ndarray:
    return np.flatnonzero([(float(n), float(d)) == scale for n, d in runs.scale])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("studies", nargs="+", type=Path, help="a study's runs/<name>/regmix folder")
    p.add_argument("--ks", nargs="+", type=int, default=[3, 6, 9, 12])
    args = p.parse_args()
    lines = []
    for study in args.studies:
        runs = objective_runs(study)
        scales = runs.scales()
        if len(scales) != 3:
            raise SystemExit(f"{study}: expected runs at three scales, found {len(scales)}")
        swarm, middle, largest = (positions(runs, s) for s in scales)
        lines += [f"\n## {study} ({len(swarm)} swarm runs at {scales[0][0]:,.0f} params; {len(middle)} at "
                  f"{scales[1][0]:,.0f} params and {scales[1][1]:,.0f} tokens; {len(largest)} scored at "
                  f"{scales[2][1]:,.0f} tokens)", "",
                  "Spearman (%) / regret@1 at the largest scale, fit without it:", "",
                  "| middle-scale runs | " + " | ".join(AWARE) + " | saturating (swarm only) |",
                  "|---|" + "---|" * (len(AWARE) + 1)]
        baseline = scored("saturating", runs.take(np.r_[swarm, largest]), False)
        for k in args.ks:
            subset = runs.take(np.r_[swarm, middle[:k], largest])
            lines.append(f"| {k} | " + " | ".join(scored(name, subset, True) for name in AWARE) + f" | {baseline} |")
    text = "\n".join(lines) + "\n"
    print(text)
    with RESULTS.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
