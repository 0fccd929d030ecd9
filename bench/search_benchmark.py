"""Offline mixture-search benchmark: every method of `regmix.search` against an objective with a known optimum.

No training. Each (problem, method, seed) trajectory is one `replay` (ask -> noisy evaluate -> tell, batch
by batch) that records the method's recommendation at every budget; the score is the regret there: the
true (noiseless) objective at the recommended mixture minus the objective's optimum. Goal to show: BO
(or TuRBO) reaches, with at most 128 runs, the regret the RegMix path (random proxies, LightGBM, 1M
simulated candidates, mean of the top 128) reaches with 512.

Problems (`--problems`, all by default):
- paper: RegMix's published runs (`--data`, default ../shared/regmix_paper_data beside the checkout; 17
  domains). Oracle: the GP regressor of `regmix.regression.fit` (ARD RBF on log weights) fitted on all 768 runs
  (512 train + 256 test, test put on the train's domain order), target `--target` (the_pile_pile_cc),
  as a `ModelObjective`. The proposers see it plus Gaussian noise of the oracle's own fitted white-noise
  std in loss units (sqrt(WhiteKernel noise_level) x the stored y scale; `--noise` overrides). Space:
  `SearchSpace.around(natural Pile distribution, maximum_usage=15)` (RegMix's usage caps). Optimum:
  `minimize_on_space` (SLSQP) from the 32 best of `--prior-draws` synthesis-prior draws and the 16
  best observed runs. A smooth GP oracle may favour the GP-based methods (bo, turbo): the synthetic
  problems below are there to check the ranking on a truth no method models exactly.
- regmix_1000 / olmix_dclm / olmix_full / olmix_reuse5: the public run sets of bench/run_sets.py, each
  set's mean metric. Oracle: regmix's `ensemble` fitted on all the set's runs (the regressor that ranks
  held-out runs best across those sets), the noise the runs' residual std around it, the space the whole
  simplex around the runs' mean mixture (the sets ship no token counts, so no usage caps), the optimum
  SLSQP from the 8 best of `--prior-draws` draws and the 4 best runs.
- synthetic5 / synthetic7 / synthetic17: `PowerLawObjective(dim, seed=--problem-seed, noise=0.01)`
  (per-domain power laws with transfer, convex: the SLSQP optimum from the prior, uniform and random
  starts is the global one). Noise is per domain loss, so the objective (their mean) sees 0.01/sqrt(dim);
  each trajectory seed gets its own noise stream.

Methods: random and regmix (published setting: lightgbm, 1,000,000 candidates, top_k 128, threads 2) at
`--budgets` (paper: 32 64 128 256 512); bo and turbo (library defaults) at `--bo-budgets` (paper: 32 64
128; ~30-60 s per batch of 16 on CPU at 17 domains). Synthetic problems: every method at
`--synthetic-budgets` (16 32 64 128). Batch: 16 for paper and synthetic17, 8 for synthetic5/7
(`--batch` sets all). Seeds 0..`--seeds`-1; a seed fixes the proposer and the noise stream, so random
and regmix (same draws) see the very same runs.

Caching: each finished trajectory is one JSON line in `--results` (bench/results/search_benchmark.jsonl),
keyed by problem, method, seed, budgets, batch, method settings, noise and target; a rerun skips the
trajectories already there (`--fresh` reruns them), so a killed bench continues. Library print-outs
during a trajectory (e.g. fit's note on LightGBM with few rows) are swallowed.

Output per problem: regret table (rows budgets, columns methods, mean +- std over seeds), the optimum,
the smallest budget at which bo / turbo mean regret <= regmix's at its largest budget, mean wall seconds
per trajectory; and one PNG (`--plot`) with regret vs budget per problem (mean line, min-max band over
seeds).

    python bench/search_benchmark.py                                        # everything
    python bench/search_benchmark.py --problems synthetic5 synthetic7 --seeds 3
    python bench/search_benchmark.py --problems paper --bo-budgets 32 64 128
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from botorch.exceptions import InputDataWarning
from linear_operator.utils.warnings import NumericalWarning
from search_problems import DATA, GP_METHODS, PROBLEMS, TARGET, Problem, make_problem
from tqdm.auto import tqdm

from regmix.search import make_proposer
from regmix.search.offline import regret, replay

warnings.filterwarnings("ignore", category=NumericalWarning)
warnings.filterwarnings("ignore", category=InputDataWarning)

RESULTS = Path(__file__).resolve().parent / "results"
METHODS = ("random", "regmix", "bo", "turbo")


def method_settings(method: str, args: argparse.Namespace) -> dict[str, Any]:
    if method == "regmix":
        return {"regressor": args.regressor, "candidates": args.candidates, "top_k": args.top_k,
                "threads": args.threads}
    return dict(args.bo_setting) if method in GP_METHODS else {}


def trajectory_key(problem: Problem, method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    return {"problem": problem.name, "method": method, "seed": seed, "budgets": problem.budgets[method],
            "batch": problem.batch, "settings": method_settings(method, args), **problem.key}


def key_text(key: dict[str, Any]) -> str:
    return json.dumps(key, sort_keys=True)


def run_trajectory(problem: Problem, key: dict[str, Any]) -> dict[str, Any]:
    """One replay of `key`'s method and seed; its recommendation's regret at every budget."""
    start = time.perf_counter()
    proposer = make_proposer(key["method"], problem.space, problem.objective, key["seed"], key["settings"])
    with contextlib.redirect_stdout(io.StringIO()):
        recommendations = replay(proposer, problem.runs(key["seed"]), key["budgets"], key["batch"])
    seconds = time.perf_counter() - start
    return {"key": key, "optimum": problem.optimum, "seconds": round(seconds, 2),
            "regret": [regret(r.mixture, problem.truth, problem.space, problem.optimum) for _, r in recommendations],
            "predicted": [r.predicted for _, r in recommendations],
            "uncertainty": [r.uncertainty for _, r in recommendations],
            "mixtures": [np.round(r.mixture.vector(problem.space.domains), 6).tolist() for _, r in recommendations],
            "basis": recommendations[-1][1].basis}


def load_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Finished trajectories by key (the last line of a key wins)."""
    if not path.is_file():
        return {}
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {key_text(r["key"]): r for r in records}


def run_problem(problem: Problem, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (method, seed) trajectory of `problem`, from the cache where there, appended to it when run."""
    keys = [trajectory_key(problem, m, s, args) for s in range(args.seeds) for m in args.methods]
    done = {} if args.fresh else load_cache(args.results)
    todo = [k for k in keys if key_text(k) not in done]
    if len(todo) < len(keys):
        print(f"{len(keys) - len(todo)} of {len(keys)} trajectories from {args.results}")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with tqdm(todo, desc=problem.name, unit="traj") as bar:
        for key in bar:
            bar.set_postfix_str(f"{key['method']} seed {key['seed']}")
            record = run_trajectory(problem, key)
            with args.results.open("a") as f:
                f.write(json.dumps(record) + "\n")
            done[key_text(key)] = record
    return [done[key_text(k)] for k in keys]


def regrets(problem: Problem, records: Sequence[dict[str, Any]]) -> dict[str, dict[int, np.ndarray]]:
    """method -> budget -> regret per seed, measured against this run's optimum."""
    out: dict[str, dict[int, list[float]]] = {}
    for r in records:
        per_budget = out.setdefault(r["key"]["method"], {})
        for budget, value in zip(r["key"]["budgets"], r["regret"]):
            per_budget.setdefault(budget, []).append(value + r["optimum"] - problem.optimum)
    return {m: {b: np.array(v) for b, v in sorted(per.items())} for m, per in out.items()}


def report(problem: Problem, records: Sequence[dict[str, Any]]) -> str:
    """The regret table, the optimum, the answer to the goal and the wall times."""
    table = regrets(problem, records)
    methods = [m for m in METHODS if m in table]
    budgets = sorted({b for per in table.values() for b in per})
    width = 19

    def cell(values: np.ndarray | None) -> str:
        if values is None:
            return ""
        spread = values.std(ddof=1) if len(values) > 1 else 0.0
        return f"{values.mean():.4f} ± {spread:.4f}"

    seeds = max(len(v) for per in table.values() for v in per.values())
    lines = [f"== {problem.name}: regret (true objective at the recommendation - optimum), mean ± std over "
             f"{seeds} seeds, batch {problem.batch} ==", *problem.notes,
             f"{'budget':>6}  " + "".join(f"{m:>{width}}" for m in methods)]
    for b in budgets:
        lines.append(f"{b:>6}  " + "".join(f"{cell(table[m].get(b)):>{width}}" for m in methods))
    seconds = {m: np.mean([r["seconds"] for r in records if r["key"]["method"] == m]) for m in methods}
    lines.append(f"{'s/traj':>6}  " + "".join(f"{seconds[m]:>{width}.1f}" for m in methods))
    lowest = min(v.min() for per in table.values() for v in per.values())
    if lowest < -1e-6:
        lines.append(f"note: a recommendation beats the optimum by {-lowest:.4g}: the optimum is not the global one")
    if "regmix" in table:
        top = max(table["regmix"])
        reference = table["regmix"][top].mean()
        for m in (m for m in GP_METHODS if m in table):
            reached = [b for b, v in table[m].items() if v.mean() <= reference]
            answer = (f"at {reached[0]} runs (mean regret {table[m][reached[0]].mean():.4f})" if reached else
                      f"not within {max(table[m])} runs (best mean {min(v.mean() for v in table[m].values()):.4f})")
            lines.append(f"goal: {m} reaches regmix's mean regret at {top} runs ({reference:.4f}) {answer}")
    return "\n".join(lines)


def plot(results: dict[str, tuple[Problem, list[dict[str, Any]]]], path: Path) -> None:
    """Regret vs budget per problem: mean line, min-max band over seeds, log2 x axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.2 * len(results), 4.2), squeeze=False)
    for ax, (name, (problem, records)) in zip(axes[0], results.items()):
        table = regrets(problem, records)
        for m in (m for m in METHODS if m in table):
            budgets = np.array(list(table[m]))
            values = list(table[m].values())
            line, = ax.plot(budgets, [v.mean() for v in values], marker="o", label=m)
            ax.fill_between(budgets, [v.min() for v in values], [v.max() for v in values], color=line.get_color(),
                            alpha=0.15)
        if "regmix" in table:
            ax.axhline(table["regmix"][max(table["regmix"])].mean(), color="gray", ls="--", lw=0.8,
                       label=f"regmix at {max(table['regmix'])}")
        everything = np.concatenate([v for per in table.values() for v in per.values()])
        if (everything > 0).all():
            ax.set_yscale("log")
        else:
            ax.set_yscale("symlog", linthresh=max(1e-4, float(np.abs(everything).max()) * 1e-3))
        ax.set_xscale("log", base=2)
        ticks = sorted({b for per in table.values() for b in per})
        ax.set_xticks(ticks, [str(b) for b in ticks])
        ax.set_xlabel("runs (budget)")
        ax.set_ylabel("regret")
        ax.set_title(f"{name} ({problem.space.dim} domains)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _setting(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{item!r} is not KEY=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS))
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 per method (default: %(default)s)")
    p.add_argument("--data", type=Path, default=DATA, help="RegMix's published CSVs (default: %(default)s)")
    p.add_argument("--target", default=TARGET, help="valid domain the paper oracle models (default: %(default)s)")
    p.add_argument("--noise", type=float, help="noise std of the paper oracle (default: the GP's fitted noise)")
    p.add_argument("--prior-draws", type=int, default=200_000, help="prior draws seeding the paper optimum search")
    p.add_argument("--budgets", type=int, nargs="+", default=[32, 64, 128, 256, 512],
                   help="paper budgets of random and regmix (default: %(default)s)")
    p.add_argument("--bo-budgets", type=int, nargs="+", default=[32, 64, 128],
                   help="paper budgets of bo and turbo (default: %(default)s)")
    p.add_argument("--synthetic-budgets", type=int, nargs="+", default=[16, 32, 64, 128],
                   help="budgets of every method on the synthetic problems (default: %(default)s)")
    p.add_argument("--batch", type=int, help="runs per batch (default: 16; 8 for synthetic5/7)")
    p.add_argument("--problem-seed", type=int, default=0, help="seed of the synthetic problems' constants")
    p.add_argument("--synthetic-noise", type=float, default=0.01, help="noise std per synthetic domain loss")
    p.add_argument("--regressor", default="lightgbm", help="regmix's regressor (default: %(default)s, as published)")
    p.add_argument("--candidates", type=int, default=1_000_000, help="regmix's simulated candidates")
    p.add_argument("--top-k", type=int, default=128, help="regmix averages the best k candidates")
    p.add_argument("--threads", type=int, default=2, help="regmix's LightGBM / simulation threads")
    p.add_argument("--bo-setting", type=_setting, nargs="+", default=[], metavar="KEY=VALUE",
                   help="settings of bo and turbo, e.g. num_restarts=4 design=sobol (JSON values)")
    p.add_argument("--results", type=Path, default=RESULTS / "search_benchmark.jsonl",
                   help="JSON lines cache of finished trajectories (default: %(default)s)")
    p.add_argument("--plot", type=Path, default=RESULTS / "search_benchmark.png", help="PNG (default: %(default)s)")
    p.add_argument("--fresh", action="store_true", help="rerun trajectories already in --results")
    return p


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    results: dict[str, tuple[Problem, list[dict[str, Any]]]] = {}
    for name in args.problems:
        problem = make_problem(name, args)
        results[name] = (problem, run_problem(problem, args))
        print(report(*results[name]), flush=True)
        plot(results, args.plot)
    print(f"plot: {args.plot}\nresults: {args.results}")


if __name__ == "__main__":
    main()
