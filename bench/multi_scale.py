"""Which regressor ranks mixtures at the largest scale when it only saw smaller ones? (issue 29, item 3)

RegMix's published runs at three scales, from sail-sg/regmix's data/ folder (MIT; put its CSVs in `--data`):
1M proxies (train_* 512 runs and test_* 256 runs), 60M proxies on the 256 test mixtures (test_*_60m), and 64 1B
models on other mixtures (test_*_1B). Scale columns are added here: non-embedding parameters of the three
TinyLlama presets (regmix.train.models, counted on GPT-NeoX's padded vocabulary), and tokens trained: 1000 steps
of 512 x 2048 for both proxy sizes (RegMix's proxy recipe; that the 60M proxies used it too is an assumption) and
25B for the 1B models (the paper's 1B runs).

Scored at 1B, on the mean of the 13 validation losses and on Pile-CC (RegMix's target), by the project's own
fit.evaluate (Spearman in %, regret@1: the 1B loss of the mixture predicted best minus the best):
- each single-scale regressor of the zoo fit on the 1M runs, and on the 60M runs;
- the scale-aware ones (scaling, scaling_lightgbm) fit on the 1M runs with all 256 or only `--few` of the 60M runs
  (many small and a few larger, on shared mixtures), predicting at the 1B models' scale;
- the proxies' own ranking where the mixtures are shared (60M against 1M losses on the 256 test mixtures).

    python bench/multi_scale.py --data DIR [--models linear lightgbm loglinear saturating] [--few 32]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from regmix.core.observations import Observations, read_csvs
from regmix.regression.fit import SCALE_AWARE, evaluate
from regmix.regression.regressors import make_regressor

TOKENS = {"1m": 1000 * 512 * 2048, "60m": 1000 * 512 * 2048, "1B": 25e9}
PRESET = {"1m": "tinyllama_1M", "60m": "tinyllama_60M", "1B": "tinyllama_1_1b"}
RESULTS = Path(__file__).parent / "results" / "multi_scale.md"


def parameters(preset: str) -> float:
    from regmix.train.models import model_config, parameter_counts

    return float(parameter_counts(model_config(preset, 50277, 2048))[0])


def load(data: Path) -> dict[str, Observations]:
    """Each scale's runs with their scale columns (1m: train and test runs together)."""
    sets = {"1m": [("train", "1m"), ("test", "1m")], "60m": [("test", "60m")], "1B": [("test", "1B")]}
    out = {}
    for scale, parts in sets.items():
        runs = [read_csvs(data / f"{split}_mixture_{tag}.csv", data / f"{split}_pile_loss_{tag}.csv")
                for split, tag in parts]
        first = runs[0]
        mixtures = np.vstack([r.on_domains(first.domains).mixtures for r in runs])
        losses = np.vstack([r.select(first.targets).losses for r in runs])
        index = tuple(f"{scale}:{split}{i}" for (split, _), r in zip(parts, runs) for i in r.index)
        scale_rows = np.tile([parameters(PRESET[scale]), TOKENS[scale]], (len(index), 1))
        out[scale] = Observations(first.domains, first.targets, index, mixtures, losses, scale_rows)
    return out


def targets_of(observations: Observations) -> pd.DataFrame:
    losses = observations.loss_frame()
    return pd.DataFrame({"mean": losses.mean(axis=1), "pile_cc": losses["the_pile_pile_cc"]})


def score(model, X: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    predicted = np.asarray(model.predict(X)).reshape(len(X), -1)
    figures = {}
    for j, target in enumerate(truth.columns):
        e = evaluate(truth[target].to_numpy(), predicted[:, j])
        figures[f"spearman {target}"], figures[f"regret {target}"] = e["spearman"], e["regret"]
    return figures


def markdown(table: pd.DataFrame) -> str:
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row] for row in table.itertuples(index=False)]
    lines = ["| " + " | ".join(table.columns) + " |", "|" + "---|" * len(table.columns)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def combined(parts: list[Observations]) -> Observations:
    return Observations(parts[0].domains, parts[0].targets, tuple(i for p in parts for i in p.index),
                        np.vstack([p.mixtures for p in parts]), np.vstack([p.losses for p in parts]),
                        np.vstack([p.scale for p in parts]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="sail-sg/regmix's data/ CSVs")
    p.add_argument("--models", nargs="+", default=["linear", "lightgbm", "loglinear", "saturating", "gp"])
    p.add_argument("--few", type=int, nargs="+", default=[16, 64], help="60M runs the scale-aware fits see")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    scales = load(args.data)
    big = scales["1B"]
    truth = targets_of(big)
    rows = []
    for name in args.models:
        for source in ("1m", "60m"):
            started = time.perf_counter()
            model = make_regressor(name, args.threads).fit(scales[source].mixture_frame(), targets_of(scales[source]))
            rows.append({"regressor": name, "fit on": f"{source} ({len(scales[source])} runs)",
                         **score(model, big.mixture_frame(), truth), "s": time.perf_counter() - started})
    rng = np.random.default_rng(0)
    for name in SCALE_AWARE:
        for few in [*args.few, len(scales["60m"])]:
            chosen = np.sort(rng.choice(len(scales["60m"]), size=min(few, len(scales["60m"])), replace=False))
            runs = combined([scales["1m"], scales["60m"].take(chosen)])
            started = time.perf_counter()
            model = make_regressor(name, args.threads).fit(runs.feature_frame(), targets_of(runs))
            rows.append({"regressor": name, "fit on": f"1m + {few} of 60m ({len(runs)} runs)",
                         **score(model, big.feature_frame(), truth), "s": time.perf_counter() - started})
    proxy_60m, proxy_1m = targets_of(scales["60m"]), targets_of(scales["1m"]).iloc[512:]  # the test mixtures
    agreement = {t: evaluate(proxy_60m[t].to_numpy(), proxy_1m[t].to_numpy())["spearman"] for t in truth.columns}
    table = pd.DataFrame(rows)
    text = ("# Ranking the 64 1B models' mixtures from smaller runs (RegMix's published runs)\n\n"
            "scales (non-embedding params, tokens): "
            + ", ".join(f"{s} {o.scale[0, 0]:,.0f} / {o.scale[0, 1]:,.0f}" for s, o in scales.items())
            + f"\n\n{markdown(table)}\n\n"
            f"the proxies' own agreement on the 256 shared mixtures (Spearman of 60M against 1M losses): "
            + ", ".join(f"{t} {v:.1f}" for t, v in agreement.items()) + "\n")
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
