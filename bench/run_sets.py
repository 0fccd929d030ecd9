"""Every public proxy-run set as a regression benchmark: each regressor of the zoo, out of fold, on each set.

Sets (`--sets`, all by default; ../shared beside the checkout, `--shared` elsewhere):
- regmix_768: RegMix's released CSVs (regmix_paper_data: 512 train + 256 test runs, 1M proxies, 17 Pile domains,
  13 validation losses);
- regmix_1000: RegMix's 1,000 runs of its first public commit (public_runs/regmix_1000; the 512 released plus
  488 in no released test set);
- olmix_dclm, olmix_full, olmix_reuse5: Olmix's swarms (public_runs/olmix; 30M proxies, 110 downstream BPB
  metrics): 127 runs over 24 DCLM topics, 512 runs over 64 domains, 64 runs over 22 domains (21 new + the
  previous optimum frozen as `existing`).

Targets per set: `mean` (the mean of every metric: the objective Olmix optimizes, and RegMix's average
loss) and `--per-set` metrics evenly spaced over the set's columns (0: `mean` alone; `--all-metrics`: every
metric). The GP-based regressors (gp, ensemble, law_gp) cost minutes per fit on 500-1000 runs: the
published table runs them on `mean` alone (a second pass with `--per-set 0`).
For each (set, regressor, target): 5-fold out-of-fold predictions (`regmix.regression.fit.out_of_fold`, the
fit command's own CV), scored by `regmix.regression.fit.evaluate`: Spearman (%), RMSE, regret@1 (true
value of the run predicted best minus the best; in the metric's units) and lower-tail optimism (mean true
minus predicted over the 10% of runs predicted best). Results are cached one JSON line per (set,
regressor, target) in `--results`, so a killed run continues.

Output: per set a markdown table (mean over targets and the `mean` target alone) in `--output`/<set>.md,
all sets in summary.md, and one PNG per set (the four figures per regressor, a dot per target).

    python bench/run_sets.py [--sets olmix_dclm regmix_1000] [--models linear loglinear lightgbm] [--per-set 4]
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.core.observations import Observations, read_csvs
from regmix.core.schema import loss_csv_name, mixture_csv_name
from regmix.regression.fit import REGRESSORS, evaluate, out_of_fold
from regmix.regression.regressors import make_regressor

SHARED = Path(__file__).resolve().parents[2] / "shared"
SETS = ("regmix_768", "regmix_1000", "olmix_dclm", "olmix_full", "olmix_reuse5")
OLMIX = {"olmix_dclm": "dclm", "olmix_full": "full_recomputation", "olmix_reuse5": "full_reuse_update_5_seed_0"}
FIGURES = ("spearman", "rmse", "regret", "optimism")


def snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def load_set(name: str, shared: Path) -> Observations:
    """One run set as Observations (metrics as targets, lower is better)."""
    if name == "regmix_768":
        data = shared / "regmix_paper_data"
        train = read_csvs(data / mixture_csv_name("1m"), data / loss_csv_name("pile", "1m"))
        test = read_csvs(data / mixture_csv_name("1m", "test"), data / loss_csv_name("pile", "1m", "test"))
        test = test.on_domains(train.domains)
        return Observations(train.domains, train.targets, tuple(f"train{i}" for i in train.index) +
                            tuple(f"test{i}" for i in test.index), np.vstack([train.mixtures, test.mixtures]),
                            np.vstack([train.losses, test.losses]))
    if name == "regmix_1000":
        data = shared / "public_runs" / "regmix_1000"
        mixtures = pd.read_csv(data / "tiny_config_1M_pile.csv", index_col="index")
        losses = pd.read_csv(data / "tiny_wandb_1M_1000_pile_4B.csv", index_col="index").loc[mixtures.index]
    else:
        data = shared / "public_runs" / "olmix"
        mixtures, losses = (pd.read_csv(data / f"{OLMIX[name]}_{part}.csv", index_col=0).set_index("run")
                            .drop(columns=["name", "index"]) for part in ("ratios", "metrics"))
        losses = losses.loc[mixtures.index]
    losses = losses.apply(pd.to_numeric, errors="coerce")
    complete = losses.notna().all(axis=1)
    return Observations(tuple(snake(c) for c in mixtures.columns), tuple(snake(c) for c in losses.columns),
                        tuple(str(i) for i in mixtures.index[complete]), mixtures[complete].to_numpy(float),
                        losses[complete].to_numpy(float))


def on_mean(observations: Observations) -> Observations:
    """The runs with one target: the mean of every metric (the objective Olmix optimizes)."""
    return Observations(observations.domains, ("mean",), observations.index, observations.mixtures,
                        observations.losses.mean(axis=1, keepdims=True))


def targets_of(observations: Observations, per_set: int | None) -> pd.DataFrame:
    """`mean` and `per_set` metrics evenly spaced over the set's columns (every metric with None)."""
    frame = observations.loss_frame()
    picked = list(frame.columns) if per_set is None or per_set >= frame.shape[1] else [
        frame.columns[i] for i in np.linspace(0, frame.shape[1] - 1, per_set).round().astype(int)][:per_set]
    return pd.concat([frame.mean(axis=1).rename("mean"), frame[picked]], axis=1)


def measure(set_name: str, observations: Observations, model: str, targets: pd.DataFrame, cached: dict,
            results: Path, threads: int) -> list[dict]:
    """The figures of `model` on each target (cached rows first)."""
    rows, todo = [], []
    for target in targets.columns:
        key = (set_name, model, target)
        (rows.append(cached[key]) if key in cached else todo.append(target))
    if not todo:
        return rows
    X = observations.mixture_frame()
    start = time.perf_counter()
    try:
        predictions = out_of_fold(make_regressor(model, threads), X, targets[todo], folds=5)
    except (ValueError, np.linalg.LinAlgError) as exc:  # e.g. too few runs for the domains
        print(f"  {set_name} {model}: skipped ({exc})")
        return rows
    seconds = (time.perf_counter() - start) / len(todo)
    with results.open("a") as fh:
        for j, target in enumerate(todo):
            row = {"set": set_name, "model": model, "target": target, "seconds": seconds,
                   **evaluate(targets[target].to_numpy(), predictions[:, j])}
            fh.write(json.dumps(row) + "\n")
            rows.append(row)
    return rows


def table(frame: pd.DataFrame) -> str:
    """Markdown: per regressor, the mean over targets and the `mean` target alone, of the four figures."""
    everything = frame.groupby("model")[list(FIGURES) + ["seconds"]].mean()
    objective = frame[frame.target == "mean"].set_index("model")[list(FIGURES)]
    lines = ["| regressor | " + " | ".join(f"{f} (all targets)" for f in FIGURES) + " | " +
             " | ".join(f"{f} (mean)" for f in FIGURES) + " | s per target |",
             "|---" * (2 * len(FIGURES) + 2) + "|"]
    for model, row in everything.sort_values("spearman", ascending=False).iterrows():
        own = objective.loc[model] if model in objective.index else pd.Series(np.nan, index=list(FIGURES))
        lines.append(f"| {model} | " + " | ".join(f"{row[f]:.4g}" for f in FIGURES) + " | " +
                     " | ".join(f"{own[f]:.4g}" for f in FIGURES) + f" | {row['seconds']:.2f} |")
    return "\n".join(lines)


def plot(frame: pd.DataFrame, title: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(frame.groupby("model")["spearman"].mean().sort_values(ascending=False).index)
    fig, axes = plt.subplots(1, len(FIGURES), figsize=(4 * len(FIGURES), 0.45 * len(models) + 1.6), sharey=True)
    for ax, figure in zip(axes, FIGURES):
        for i, model in enumerate(models):
            values = frame[frame.model == model]
            ax.scatter(values[figure], np.full(len(values), i), s=12, alpha=0.5, color="tab:blue")
            own = values[values.target == "mean"][figure]
            ax.scatter(own, np.full(len(own), i), s=40, marker="D", color="tab:red")
        ax.set_title(figure + (" (%)" if figure == "spearman" else ""))
        ax.set_yticks(range(len(models)), models)
        ax.grid(alpha=0.3)
    axes[0].invert_yaxis()
    fig.suptitle(f"{title}: out-of-fold, a dot per target, red: the mean of all metrics")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=SETS)
    p.add_argument("--models", nargs="+", default=list(REGRESSORS), choices=REGRESSORS)
    p.add_argument("--per-set", type=int, default=4, help="metrics per set besides `mean` (0: `mean` alone)")
    p.add_argument("--all-metrics", action="store_true", help="every metric of every set")
    p.add_argument("--shared", type=Path, default=SHARED)
    p.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "run_sets")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    results = args.output / "results.jsonl"
    cached = {}
    if results.exists():
        for line in results.read_text().splitlines():
            row = json.loads(line)
            cached[row["set"], row["model"], row["target"]] = row
    summary = []
    for set_name in args.sets:
        observations = load_set(set_name, args.shared)
        targets = targets_of(observations, None if args.all_metrics else args.per_set)
        print(f"{set_name}: {len(observations)} runs, {len(observations.domains)} domains, "
              f"{len(observations.targets)} metrics; targets {list(targets.columns)}", flush=True)
        for model in args.models:
            for row in measure(set_name, observations, model, targets, cached, results, args.threads):
                cached[set_name, model, row["target"]] = row
            print(f"  {model} done", flush=True)
        frame = pd.DataFrame([row for key, row in cached.items() if key[0] == set_name])  # earlier passes too
        ran = frame.groupby("model")["target"].nunique()
        partial = ", ".join(m for m, n in ran.items() if n < ran.max())
        text = (f"# {set_name}: {len(observations)} runs, {len(observations.domains)} domains, targets "
                f"{', '.join(dict.fromkeys(frame.target))}\n\n{table(frame)}\n"
                + (f"\n{partial}: `mean` alone (their 'all targets' columns are its figures)\n" if partial else ""))
        (args.output / f"{set_name}.md").write_text(text)
        plot(frame, set_name, args.output / f"{set_name}.png")
        print(text, flush=True)
        summary.append(text)
    (args.output / "summary.md").write_text("\n".join(summary))


if __name__ == "__main__":
    main()
