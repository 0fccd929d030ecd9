"""Simulate: score millions of candidate mixtures with the fitted regressor, average the top k.

Candidates come from the synthesis prior (`regmix.search.synthesize`: tempered natural distribution,
Dirichlet strengths, per-domain usage bounds, sparsified), in chunks so memory stays bounded at any
count. Scoring 10M candidates exactly with 1000 boosted trees takes minutes, so by default a cheap
surrogate (depth-2 boosted trees distilled from the model on a pilot sample, compiled to lookup
tables) screens each chunk and only its best `screen` fraction is scored by the model itself;
`screen=1` scores every candidate. An optional refinement round draws candidates around the first
optimum. The mean of the top k (RegMix: 128) is the optimal mixture, written as a RegMix config for
the large run.

`uncertainty` (kappa, ours, not RegMix's): the top k by the predicted objective plus kappa times the
model's own uncertainty there, a pessimistic score, so the answer avoids mixtures the regressor only
guesses at (far from every run, where an optimum's gain is most over-predicted). An ensemble's
disagreement comes with its prediction, so every candidate is scored so; a GP's std is slow, so the
best SHORTLIST_FACTOR x k by prediction are re-ranked by it. A model without an uncertainty ignores it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from regmix.cli import ArgumentParser, integer_at_least, number_above, run_command, share
from regmix.core.files import ConfigError, check_outputs, write_files
from regmix.core.mixture import Mixture, project_onto_simplex
from regmix.core.objective import Objective
from regmix.core.schema import MODEL_NAME
from regmix.core.space import usage_bounds
from regmix.regression.optimal_mixture import large_run_settings, mixture_plot, optimal_run_config, scale_record
from regmix.regression.surrogate import Surrogate
from regmix.search.synthesize import SynthesisSettings, draw_dirichlet, draw_mixtures, load_prior, sparsify
from regmix.settings.run_config import RunConfig, run_config_text
from regmix.settings.training import TrainingSettings
from regmix.train.models import model_problem

if TYPE_CHECKING:
    from regmix.regression.fit import FittedModel

CHUNK = 1 << 18
PILOT = 30_000
SHORTLIST_FACTOR = 8


@dataclass
class Simulation:
    """The optimum and how it was found."""

    mixture: Mixture
    predicted_loss: float
    spread: float | None
    top_weights: np.ndarray
    top_scores: np.ndarray
    candidates: int
    scored: int
    seconds: float


def objective_weights(model: FittedModel, objective: Objective | Mapping[str, float] | None = None) -> np.ndarray:
    """The objective's weights over the model's targets; None is the default objective (the mean over them).
    A mapping is read as a target is (regmix.core.objective: bare valid domains or their loss columns)."""
    if objective is None:
        objective = Objective.mean(model.targets)
    elif not isinstance(objective, Objective):
        objective = Objective.parse(dict(objective))
    missing = [d for d in objective.weights if d not in model.targets]
    if missing:
        raise ValueError(f"targets {missing} were not fitted; the model has {list(model.targets)}")
    return np.array([objective.weights.get(t, 0.0) for t in model.targets])


class _TopK:
    """The k best (lowest) scores seen so far and their mixtures."""

    def __init__(self, k: int, dim: int):
        self.k = k
        self.weights = np.empty((0, dim))
        self.scores = np.empty(0)

    def add(self, weights: np.ndarray, scores: np.ndarray) -> None:
        weights = np.vstack([self.weights, weights])
        scores = np.concatenate([self.scores, scores])
        # ties (trees predict plateaus) are broken by the weights, so arrival order never matters
        keep = np.lexsort((*weights.T[::-1], scores))[:self.k]
        self.weights, self.scores = weights[keep], scores[keep]


def _stream(draw: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray | None]], seed: Sequence[int],
            threads: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Chunks drawn (and pre-scored) `threads` at a time; chunk i always uses seed (*seed, i), whatever `threads`."""
    with ThreadPoolExecutor(threads) as pool:
        pending, next_id, empty = [], 0, 0
        while True:
            while len(pending) < threads:
                pending.append(pool.submit(draw, np.random.default_rng([*seed, next_id])))
                next_id += 1
            chunk, rough = pending.pop(0).result()
            empty = empty + 1 if len(chunk) == 0 else 0
            if empty >= 20:
                raise ValueError("20 chunks in a row without a candidate inside the usage bounds")
            yield chunk, rough


def simulate(model: FittedModel, natural: Mixture, objective: Objective | Mapping[str, float] | None = None,
             num_candidates: int = 1_000_000, top_k: int = 128, settings: SynthesisSettings = SynthesisSettings(),
             screen: float = 0.01, refine: int = 0, seed: int = 0, threads: int = 2,
             progress: bool = True, caps: np.ndarray | None = None, uncertainty: float = 0.0) -> Simulation:
    """The mean of the `top_k` best of `num_candidates` mixtures (+ `refine` more around the first optimum).

    `caps` (model.domains order, e.g. the large run's repetition caps): a candidate above them is
    projected onto the capped simplex, so every candidate, and their mean, respects them. `uncertainty`:
    kappa of the pessimistic choice (module docstring).
    """
    start = time.perf_counter()
    if num_candidates < top_k or top_k < 1:
        raise ValueError(f"need num_candidates >= top_k >= 1, got {num_candidates} and {top_k}")
    if not 0 < screen <= 1:
        raise ValueError("screen must be in (0, 1]")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if not (np.isfinite(uncertainty) and uncertainty >= 0):
        raise ValueError(f"uncertainty must be >= 0, got {uncertainty}")
    domains = model.domains
    prior = natural.vector(domains)
    prior = prior / prior.sum()
    bounds = usage_bounds(prior, settings.maximum_usage)
    target = objective_weights(model, objective)
    if caps is not None and (len(caps) != len(domains) or caps.sum() < 1.0 - 1e-9):
        raise ValueError(f"caps must be {len(domains)} upper bounds that sum to >= 1, got {caps}")

    def predicted(weights: np.ndarray) -> np.ndarray:
        return model.predict(weights) @ target

    def pessimistic_score(weights: np.ndarray) -> np.ndarray:
        mean, spread = model.predict_with_spread(weights)
        return (mean + uncertainty * spread) @ target

    penalty = uncertainty > 0 and model.predict_spread(prior[None, :]) is not None
    whole = penalty and model.predict_with_spread(prior[None, :]) is not None  # every candidate, or a shortlist
    score = pessimistic_score if whole else predicted

    def within_bounds(weights: np.ndarray) -> np.ndarray:
        weights = weights[(weights <= bounds + 1e-12).all(axis=1)]
        if caps is not None:
            over = (weights > caps + 1e-12).any(axis=1)
            weights[over] = project_onto_simplex(weights[over], np.zeros(len(caps)), caps)
        return weights

    shortlist = penalty and not whole
    best = _TopK(min(SHORTLIST_FACTOR * top_k, num_candidates) if shortlist else top_k, len(domains))
    scored = 0

    def run(total: int, draw: Callable[[np.random.Generator], np.ndarray], round_id: int, label: str) -> None:
        nonlocal scored
        done, surrogate = 0, None
        if screen < 1:
            pilot = draw(np.random.default_rng([seed, round_id, 1 << 30]))[:PILOT]
            surrogate = Surrogate(pilot, score(pilot))

        def draw_and_screen(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
            candidates = draw(rng)
            return candidates, None if surrogate is None else surrogate.predict(candidates)

        with tqdm(total=total, desc=label, unit="mix", unit_scale=True, disable=not progress) as bar:
            for candidates, rough in _stream(draw_and_screen, (seed, round_id), threads):
                candidates = candidates[:total - done]
                done += len(candidates)
                bar.update(len(candidates))
                keep = max(top_k, int(np.ceil(screen * len(candidates))))
                if rough is not None and keep < len(candidates):
                    candidates = candidates[np.argpartition(rough[:len(candidates)], keep - 1)[:keep]]
                best.add(candidates, score(candidates))
                scored += len(candidates)
                if done >= total:
                    return

    def prior_draw(rng: np.random.Generator) -> np.ndarray:
        return within_bounds(sparsify(draw_mixtures(prior, CHUNK, settings, rng), settings.minimum))

    run(num_candidates, prior_draw, 0, "simulate")
    if refine:
        center = best.weights[:top_k].mean(axis=0)
        strengths = np.array([50.0, 200.0, 1000.0])

        def local_draw(rng: np.random.Generator) -> np.ndarray:
            alpha = strengths[rng.integers(0, len(strengths), CHUNK)][:, None] * center[None, :]
            return within_bounds(sparsify(draw_dirichlet(alpha, rng), settings.minimum))

        run(refine, local_draw, 1, "refine")

    top_weights = best.weights[:top_k]
    if shortlist:
        penalized = best.scores + uncertainty * (model.predict_spread(best.weights) @ target)
        top_weights = best.weights[np.argsort(penalized, kind="stable")[:top_k]]
    top_scores = predicted(top_weights)  # the predictions themselves, whatever chose them
    optimum = top_weights.mean(axis=0)
    optimum = optimum / optimum.sum()
    spread = model.predict_spread(optimum[None, :])
    return Simulation(
        mixture=Mixture(domains, optimum), predicted_loss=float(predicted(optimum[None, :])[0]),
        spread=None if spread is None else float(spread[0] @ target), top_weights=top_weights,
        top_scores=top_scores, candidates=num_candidates + refine, scored=scored,
        seconds=time.perf_counter() - start)


def exact_simulation(result: Simulation, model: FittedModel, objective: Objective | Mapping[str, float] | None,
                     natural: Mixture, settings: SynthesisSettings, caps: np.ndarray | None, kl: float = 0.0,
                     guard_margin: float | None = None) -> Simulation:
    """The simulation's answer replaced by the exact optimum within the same bounds (usage bounds and caps),
    seeded by its top candidates (regmix.regression.optimum.exact_optimum); `guard_margin`: no target may be predicted
    worse than at the natural mixture by more than this."""
    from regmix.regression.optimum import exact_optimum  # SciPy and scikit-learn: not needed for --help

    start = time.perf_counter()
    prior = natural.vector(model.domains)
    prior = prior / prior.sum()
    upper = usage_bounds(prior, settings.maximum_usage)
    if caps is not None:
        upper = np.minimum(upper, caps)
    target = objective_weights(model, objective)
    weights = exact_optimum(model, target, upper, prior, kl, starts=result.top_weights, guard_margin=guard_margin)
    spread = model.predict_spread(weights[None, :])
    return dataclasses.replace(
        result, mixture=Mixture(model.domains, weights),
        predicted_loss=float(model.predict(weights[None, :])[0] @ target),
        spread=None if spread is None else float(spread[0] @ target),
        seconds=result.seconds + time.perf_counter() - start)


def optimal_config(result: Simulation, model: FittedModel, objective: Objective | Mapping[str, float] | None,
                   large: TrainingSettings | None = None, settings: SynthesisSettings = SynthesisSettings(),
                   **extra: Any) -> RunConfig:
    """The large run's config of a simulation (`large`: its training, default large_run_settings(); `extra`: more
    keys to record, e.g. the caps)."""
    target = objective_weights(model, objective)
    return optimal_run_config(
        result.mixture, Objective({d: float(w) for d, w in zip(model.targets, target) if w > 0}), result.predicted_loss,
        result.spread, large, settings, regressor=model.name, num_candidates=result.candidates,
        top_k=len(result.top_scores),
        top_k_loss_range=[round(float(result.top_scores.min()), 6), round(float(result.top_scores.max()), 6)],
        **extra)


def check_prior(natural: Mixture, model: FittedModel, prior: str | os.PathLike, model_path: str | os.PathLike
                ) -> None:
    """Raise ConfigError naming both files unless the prior covers the model's domains, and only those: a domain
    the prior lacks could never be drawn, and one the model lacks would be scored as if it were not there."""
    only_model = [d for d in model.domains if d not in natural.domains]
    only_prior = [d for d in natural.active() if d not in model.domains]
    if only_model or only_prior:
        raise ConfigError(prior, f"its domains do not match those of the model {model_path}: only in the prior "
                                 f"{only_prior}, only in the model {only_model}; give the prior the model's runs "
                                 "were drawn from")


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="regmix simulate", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path(MODEL_NAME),
                   help="model file from `regmix fit` (default: %(default)s, its --output's default)")
    p.add_argument("--prior", default="the_pile",
                   help="natural distribution: prepared corpus folder, YAML/JSON token distribution or preset")
    p.add_argument("--target", nargs="+", help="valid domain(s) to minimise, optionally weighted: the_pile_pile_cc "
                   "or the_pile_pile_cc=0.7 the_pile_arxiv=0.3 (default: the mean over the model's targets, as "
                   "every command)")
    p.add_argument("--num-candidates", type=integer_at_least(1), default=1_000_000,
                   help="mixtures drawn from the prior and scored, at least --top-k (default: %(default)s)")
    p.add_argument("--top-k", type=integer_at_least(1), default=128,
                   help="the optimum is the mean of the best k candidates (default: %(default)s, as published)")
    p.add_argument("--screen", type=share(include_one=True), default=0.01,
                   help="fraction of each chunk the surrogate passes to the model, in (0, 1] (1: score all exactly)")
    p.add_argument("--refine", type=integer_at_least(0), default=0,
                   help="candidates of a second round around the first optimum")
    p.add_argument("--uncertainty", type=number_above(0.0, inclusive=True), default=0.0,
                   help="kappa: choose the top k by prediction + kappa x the model's uncertainty (ensemble, gp; "
                        "default: %(default)s, RegMix's plain top k)")
    p.add_argument("--maximum-usage", type=number_above(0.0), default=SynthesisSettings.maximum_usage,
                   help="epochs a domain may be repeated in the large run (bounds each weight), > 0")
    p.add_argument("--temperature", type=number_above(0.0), default=SynthesisSettings.temperature,
                   help="prior = natural distribution ** temperature, > 0 (default: %(default)s)")
    p.add_argument("--seed", type=integer_at_least(0), default=0, help="seed of the candidates (default: %(default)s)")
    p.add_argument("--threads", type=integer_at_least(1), default=os.cpu_count() or 1,
                   help="LightGBM threads (default: all cores)")
    p.add_argument("--large-model", default="tinyllama_1_1b",
                   help="model_name written for the large run: a preset, a litgpt model name or a litgpt "
                        "model_config.yaml; `regmix models` lists them (default: %(default)s)")
    p.add_argument("--params", type=number_above(0.0),
                   help="a scale-aware model (fit --model scaling ...): the optimum at this many non-embedding "
                        "parameters (with --tokens; default: --large-model's size and the large run's tokens)")
    p.add_argument("--tokens", type=number_above(0.0), help="a scale-aware model: the optimum at these training tokens")
    p.add_argument("--output", type=Path, default=Path("optimal_mixture.yaml"),
                   help="where to write the optimal mixture config (default: %(default)s)")
    p.add_argument("--plot", type=Path, help="PNG comparing natural and optimal weights (default: next to --output)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> Simulation:
    """The command: check every input before the simulation, then write the config and its plot together."""
    parser = _parser()
    args = parser.parse_args(argv)
    from regmix.regression.model_file import load_model  # LightGBM and scikit-learn: after the flags

    plot = args.plot or args.output.with_suffix(".png")
    if args.num_candidates < args.top_k:
        parser.error(f"--num-candidates {args.num_candidates} must be at least --top-k {args.top_k}")
    if (args.params is None) != (args.tokens is None):
        parser.error("give --params and --tokens together (the scale of the optimum)")
    large_model = model_problem(args.large_model)
    if large_model:
        parser.error(f"--large-model {large_model}, got {args.large_model!r}")
    check_outputs({"--output": args.output, "--plot": plot}, {"--model": args.model, "--prior": args.prior})
    settings = SynthesisSettings(maximum_usage=args.maximum_usage, temperature=args.temperature)
    target = Objective.parse(args.target, "--target")
    model = load_model(args.model)
    natural, _ = load_prior(args.prior)
    check_prior(natural, model, args.prior, args.model)
    objective = target or Objective.mean(model.targets)
    try:
        objective_weights(model, objective)
    except ValueError as exc:
        raise ConfigError(args.model, f"{exc} (--target)") from None
    print(f"objective: {objective.describe()}")
    if model.scale is None and args.params is not None:
        raise ConfigError(args.model, f"{model.name} was fit on the mixture alone: it has no scale to set "
                                      "(--params, --tokens); fit a scale-aware regressor on runs of several sizes")

    def run(at: FittedModel) -> Simulation:
        return simulate(at, natural, objective, args.num_candidates, args.top_k, settings, args.screen, args.refine,
                        args.seed, args.threads, not args.quiet, uncertainty=args.uncertainty)

    from regmix.regression.optimum import large_run_scale, large_run_tokens

    large_run = large_run_settings(args.large_model, args.tokens or 0)
    if args.tokens and abs(large_run_tokens(large_run) - args.tokens) > 0.01 * args.tokens:
        print(f"note: optimal_mixture.yaml trains {large_run.max_step} steps of {large_run.global_batch_size} x "
              f"{large_run.block_size} = {large_run_tokens(large_run):,} tokens, --tokens in whole steps of the "
              "large_1b recipe's batch; the optimum is for --tokens")
    extra = {}
    if model.scale is not None:  # the optimum for the large run, and the one for the largest proxies beside it
        proxy_scale = model.scale
        large = (args.params, args.tokens) if args.params is not None else large_run_scale(large_run)
        proxies = run(model)
        model = model.at_scale(*large)
        print(f"scale-aware {model.name}: the optimum for {large[0]:,.0f} params and {large[1]:,.0f} tokens; for the "
              f"largest proxies ({proxy_scale[0]:,.0f} params, {proxy_scale[1]:,.0f} tokens) it would be "
              + ", ".join(f"{d} {w:.3f}" for d, w in sorted(proxies.mixture.to_dict().items(), key=lambda kv: -kv[1])
                          if w >= 0.01))
        extra = {"predicted_at": scale_record(large, proxy_scale, proxies.mixture)}
    result = run(model)
    config = optimal_config(result, model, objective, large_run, settings, **extra)
    # written as regmix.settings.run_config.save_run_config writes a config, but together with its plot
    write_files({args.output: run_config_text(config).encode("utf-8"), plot: mixture_plot(natural, result.mixture)})
    spread = "" if result.spread is None else f" +- {result.spread:.4f}"
    print(f"{result.candidates} candidates ({result.scored} scored by the model) in {result.seconds:.1f}s; "
          f"predicted loss {result.predicted_loss:.4f}{spread}")
    for domain, weight in sorted(result.mixture.to_dict().items(), key=lambda kv: -kv[1]):
        print(f"  {domain:40s} {weight:.4f}")
    print(f"wrote {args.output} and {plot}")
    return result


if __name__ == "__main__":
    raise SystemExit(run_command(main))
