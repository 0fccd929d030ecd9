"""Simulation speed: `regmix.regression.simulate` on 1M and 10M candidates against plain `predict`, same process.

The model is RegMix's published LightGBM (1000 trees) fit on the 512 published runs, target Pile-CC.
Baseline: `predict` over every one of 1M candidates (timed; 10M is 10x that, extrapolated, since
it would take minutes). Also checks that screening does not change the answer: the 1M optimum with
the default screen against the one from scoring all 1M candidates exactly (same candidates).

    python bench/simulate_speed.py [--data ../shared/regmix_paper_data] [--model lightgbm]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from regmix.core.observations import read_csvs
from regmix.core.schema import loss_csv_name, mixture_csv_name
from regmix.core.space import usage_bounds
from regmix.regression.fit import fit
from regmix.regression.regressors import REGRESSORS
from regmix.regression.simulate import CHUNK, simulate
from regmix.search.synthesize import SynthesisSettings, draw_mixtures, load_prior, sparsify

TARGET = "the_pile_pile_cc"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "regmix_paper_data")
    p.add_argument("--model", default="lightgbm", choices=REGRESSORS)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    train = read_csvs(args.data / mixture_csv_name("1m"), args.data / loss_csv_name("pile", "1m"))
    model = fit(train, [args.model], [TARGET], folds=1, num_threads=args.threads)
    natural, _ = load_prior("the_pile")
    settings = SynthesisSettings()

    prior = natural.vector(model.domains)
    rng = np.random.default_rng(0)
    candidates = []
    while sum(len(c) for c in candidates) < 1_000_000:
        chunk = sparsify(draw_mixtures(prior, CHUNK, settings, rng), settings.minimum)
        candidates.append(chunk[(chunk <= usage_bounds(prior, settings.maximum_usage) + 1e-12).all(axis=1)])
    candidates = np.vstack(candidates)[:1_000_000]
    start = time.perf_counter()
    model.predict(candidates)
    plain = time.perf_counter() - start
    print(f"plain predict, 1M candidates ({args.model}): {plain:.1f}s  (10M extrapolated: {10 * plain:.0f}s)")

    exact = simulate(model, natural, None, 1_000_000, 128, settings, screen=1.0, threads=args.threads, progress=False)
    print(f"simulate 1M, every candidate scored by the model: {exact.seconds:.1f}s")
    for count in (1_000_000, 10_000_000):
        result = simulate(model, natural, None, count, 128, settings, threads=args.threads, progress=False)
        print(f"simulate {count // 1_000_000}M (screened, {result.scored} scored by the model): "
              f"{result.seconds:.1f}s; {count / 1e6 * plain / result.seconds:.1f}x faster than plain predict; "
              f"predicted loss {result.predicted_loss:.4f}", flush=True)
        if count == 1_000_000:
            same = np.isin(result.top_scores, exact.top_scores).sum()
            l1 = np.abs(result.mixture.weights - exact.mixture.weights).sum()
            print(f"  vs exact 1M: {same}/128 of the top-k identical, L1 distance of the optima {l1:.2e}")
    top = sorted(result.mixture.to_dict().items(), key=lambda kv: -kv[1])[:6]
    print("10M optimum:", ", ".join(f"{d.removeprefix('the_pile_')} {w:.3f}" for d, w in top))


if __name__ == "__main__":
    main()
