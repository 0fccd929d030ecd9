"""The exact optimum against RegMix's simulation, on its published data, for its 1B run (25B tokens).

The log-linear law and LightGBM are fit on the 512 published 1M proxies (all 13 targets), and for two
objectives (Pile-CC loss; the mean over all targets) the large run's mixture is found twice within the same
bounds: the published usage bounds (natural share x 15) and repetition caps at R = 4 epochs. First by
RegMix's simulation (mean of the top 128 of 1M candidates), then by the exact optimum seeded by it. Per
domain: natural, the bound and which one binds, both answers and the large run's epochs of the domain at
the exact one. Per objective:
the predicted loss at natural, the simulation's and the exact answer, the worst change of any target
against natural, and the exact optimum's time. Last, how the guard (no target worse than at natural by
more than a margin) and a KL pull toward natural change each regressor's exact optimum.

Token counts per domain: the_pile preset's shares x --corpus-tokens. ../shared/reference gives no size for
RegMix's 17-domain subset of The Pile, so the default is an ASSUMPTION (see --corpus-tokens).

    python bench/exact_optimum.py [--data ../shared/regmix_paper_data] [--corpus-tokens 200e9]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Mapping

import numpy as np

from regmix.core.observations import read_csvs
from regmix.core.schema import loss_csv_name, mixture_csv_name
from regmix.core.space import usage_bounds
from regmix.regression.fit import FittedModel
from regmix.regression.optimal_mixture import large_run_settings
from regmix.regression.optimum import RepetitionCaps, epochs, large_run_tokens, repetition_caps
from regmix.regression.regressors import make_regressor
from regmix.regression.simulate import Simulation, exact_simulation, objective_weights, simulate
from regmix.search.synthesize import SynthesisSettings, load_prior

TARGET = "the_pile_pile_cc"
REGRESSORS = ("loglinear", "lightgbm")
# ~300B GPT-NeoX tokens in the whole Pile; the 17 domains RegMix kept (no Books3, OpenWebText2,
# OpenSubtitles, BookCorpus2, YouTube subtitles) hold about 3/4 of its bytes: ~230B. Rounded down (tighter caps).
CORPUS_TOKENS = 200e9
# (guard margin, kl) of the exact optimum; the first, neither, is the one set against the simulation
VARIANTS = ((None, 0.0), (0.0, 0.0), (0.02, 0.0), (None, 0.05), (None, 0.1))


def worst_change(model: FittedModel, weights: np.ndarray, natural: np.ndarray) -> str:
    """The target whose predicted loss rises most against natural (what the guard bounds)."""
    change = model.predict(weights[None])[0] - model.predict(natural[None])[0]
    return f"{change.max():+.4f} {model.targets[int(np.argmax(change))].removeprefix('the_pile_')}"


def per_domain(model: FittedModel, natural: np.ndarray, upper: np.ndarray, caps: RepetitionCaps,
               usage: np.ndarray, tokens: Mapping[str, int], sim: Simulation, exact: Simulation) -> None:
    weights = exact.mixture.weights
    seen = epochs(dict(zip(model.domains, weights)), tokens, caps.target_tokens)
    print(f"  {'domain':22s} {'natural':>8s} {'bound':>7s} {'binds':>9s} {'simulate':>9s} {'exact':>8s} "
          f"{'epochs':>7s}")
    for j, domain in enumerate(model.domains):
        at_bound = weights[j] >= upper[j] - 1e-6 and upper[j] < 1.0
        binds = "/".join(name for name, bound in (("usage", usage[j]), ("cap", caps.caps[j]))
                         if at_bound and bound <= upper[j] + 1e-12)
        print(f"  {domain.removeprefix('the_pile_'):22s} {natural[j]:8.4f} {upper[j]:7.4f} {binds or '-':>9s} "
              f"{sim.mixture.weights[j]:9.4f} {weights[j]:8.4f} {seen[domain]:7.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "regmix_paper_data")
    p.add_argument("--corpus-tokens", type=float, default=CORPUS_TOKENS,
                   help="tokens in RegMix's 17-domain Pile subset. ASSUMED default 200e9: ~300B GPT-NeoX tokens "
                        "in the whole Pile x ~3/4 of its bytes in the kept domains ~ 230B, rounded down")
    p.add_argument("--repetitions", type=float, default=4.0, help="R: epochs a domain may be repeated")
    p.add_argument("--candidates", type=int, default=1_000_000, help="the simulation's candidates")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    train = read_csvs(args.data / mixture_csv_name("1m"), args.data / loss_csv_name("pile", "1m"))
    natural_mixture, _ = load_prior("the_pile")
    settings = SynthesisSettings()
    natural = natural_mixture.vector(train.domains)
    natural = natural / natural.sum()
    tokens = {d: int(round(share * args.corpus_tokens)) for d, share in zip(train.domains, natural)}
    target_tokens = large_run_tokens(large_run_settings())
    caps = repetition_caps(tokens, train.domains, target_tokens, args.repetitions)
    usage = usage_bounds(natural, settings.maximum_usage)
    upper = np.minimum(usage, caps.caps)
    print(f"ASSUMPTION: the 17 domains hold {args.corpus_tokens:.3g} tokens (--corpus-tokens; not in "
          f"../shared/reference), split by the_pile preset's shares")
    print(f"large run: {target_tokens:.4g} tokens, R = {args.repetitions:g} (limit {caps.limit:g} epochs); "
          f"bounds: min(usage bound = natural x {settings.maximum_usage:g}, cap = tokens x R / run tokens); "
          f"caps bind before the usage bounds only below "
          f"{target_tokens * settings.maximum_usage / args.repetitions:.3g} corpus tokens\n")
    X, Y = train.mixture_frame(), train.loss_frame()
    objectives = {"pile_cc": {TARGET: 1.0}, "mean of 13": {t: 1.0 for t in train.targets}}
    summary, variants = [], []
    for name in REGRESSORS:
        start = time.perf_counter()
        model = FittedModel(name, make_regressor(name, args.threads).fit(X, Y), train.domains, train.targets)
        print(f"== {name}: fit on {len(X)} runs x {len(train.targets)} targets in {time.perf_counter() - start:.1f}s")
        for label, objective in objectives.items():
            target = objective_weights(model, objective)
            sim = simulate(model, natural_mixture, objective, args.candidates, settings=settings,
                           threads=args.threads, progress=False, caps=caps.caps)
            timed = []
            for margin, kl in VARIANTS:
                start = time.perf_counter()
                result = exact_simulation(sim, model, objective, natural_mixture, settings, caps, kl, margin)
                timed.append((result, time.perf_counter() - start))
                weights = result.mixture.weights
                variants.append((name, label, "-" if margin is None else f"{margin:g}", f"{kl:g}",
                                 result.predicted_loss, worst_change(model, weights, natural),
                                 weights[train.domains.index(TARGET)], np.abs(weights - natural).sum(), timed[-1][1]))
            exact, seconds = timed[0]
            print(f"-- {name}, objective {label}: simulate {sim.seconds:.1f}s, exact optimum {seconds:.3f}s")
            per_domain(model, natural, upper, caps, usage, tokens, sim, exact)
            at_natural = float(model.predict(natural[None])[0] @ target)
            summary.append((name, label, at_natural, sim.predicted_loss, exact.predicted_loss,
                            worst_change(model, sim.mixture.weights, natural),
                            worst_change(model, exact.mixture.weights, natural), seconds))
        print()
    print("predicted objective (lower is better); worst target: the largest rise of any target's predicted loss "
          "against natural")
    print(f"{'regressor':10s} {'objective':11s} {'natural':>8s} {'simulate':>9s} {'exact':>8s} "
          f"{'worst target, simulate':>30s} {'worst target, exact':>30s} {'exact s':>8s}")
    for name, label, nat, sim_loss, exact_loss, sim_worst, exact_worst, seconds in summary:
        print(f"{name:10s} {label:11s} {nat:8.4f} {sim_loss:9.4f} {exact_loss:8.4f} {sim_worst:>30s} "
              f"{exact_worst:>30s} {seconds:8.3f}")
    print("\nthe exact optimum with a guard (no target worse than natural by more than the margin) or a KL pull")
    print(f"{'regressor':10s} {'objective':11s} {'guard':>6s} {'kl':>5s} {'objective':>10s} "
          f"{'worst target':>30s} {'pile_cc w':>10s} {'L1 to nat':>10s} {'seconds':>8s}")
    for name, label, margin, kl, loss, worst, pile_cc, distance, seconds in variants:
        print(f"{name:10s} {label:11s} {margin:>6s} {kl:>5s} {loss:10.4f} {worst:>30s} {pile_cc:10.4f} "
              f"{distance:10.4f} {seconds:8.3f}")


if __name__ == "__main__":
    main()
