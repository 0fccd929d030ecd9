"""The large run's limits on a mixture, and the exact optimum of a fitted model within them.

Repetition caps: the large run trains `target_tokens` (its steps x batch x block); a domain of
`tokens_j` may take at most w_j <= tokens_j * R / target_tokens, so no domain is repeated more than R
epochs. R defaults to 4: Muennighoff et al. (2023, "Scaling Data-Constrained Language Models") find
up to about 4 epochs nearly as good as fresh data, with returns falling fast beyond.

The exact optimum minimizes sum_i v_i L_i(w) + kl * KL(w || prior) subject to w >= 0, sum w = 1 and
the upper bounds (usage bounds and caps), and optionally a guard: no target predicted worse than at the
natural mixture by more than a margin. Solvers, and why:
- the log-linear mixing law: convex with analytic gradients, so SLSQP (regmix.regression.mixing_law.minimize_law)
  is exact and takes milliseconds at m <= 100; cvxpy would add a dependency for the same answer;
- any other regressor (boosted trees are piecewise constant: their gradient is 0 almost everywhere): a
  derivative-free search on the feasible set, seeded by the simulation's best candidates: rounds of
  Dirichlet perturbations around the incumbent, projected onto the bounded simplex, keeping the best,
  with the perturbation widening when a round finds something better and shrinking when not, until the
  finest scale finds nothing (a (1 + lambda) evolution strategy). Widening again on success, rather than
  only ever shrinking for 200 fixed rounds, found as good optima with 4-9x fewer predictions (LightGBM on
  RegMix's published data, 4 objectives x 4 seeds; seed-to-seed spread exceeded the difference).
The guard keeps the law's program convex (each L_i is); the search takes it as a filter. Without a guard the
search predicts only the objective's targets (RegMix's Pile-CC objective with LightGBM: 0.3 s instead of 2 s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from regmix.core.mixture import project_onto_simplex
from regmix.regression.fit import FittedModel
from regmix.regression.mixing_law import GUARD_TOLERANCE, LogLinearMixingLaw, minimize_law
from regmix.settings.training import TrainingSettings

REPETITIONS = 4.0
_WIDEST, _FINEST = 1e2, 1e6  # Dirichlet strengths of the search's perturbations around the incumbent


def large_run_tokens(settings: TrainingSettings) -> int:
    """Tokens the large run trains: steps x global batch x block size."""
    return settings.max_step * settings.global_batch_size * settings.block_size


def large_run_scale(large: TrainingSettings) -> tuple[float, float]:
    """(non-embedding parameters, tokens) of the large run: where a scale-aware model's optimum is chosen. The
    vocabulary does not enter the non-embedding count, so any one serves."""
    from regmix.train.models import model_size

    return float(model_size(large.model_name, 50304, large.block_size)), float(large_run_tokens(large))


@dataclass(frozen=True)
class RepetitionCaps:
    """Upper bounds per domain (`caps`, in `domains` order) so no domain is repeated more than `limit` epochs."""

    domains: tuple[str, ...]
    caps: np.ndarray
    target_tokens: int
    repetitions: float  # R asked for
    limit: float  # epochs allowed: R, or R x the corpus's average epochs when R epochs cannot fill the run

    def binding(self, weights: np.ndarray, tolerance: float = 0.01) -> list[str]:
        """Domains at their cap (within `tolerance` of it, relative: a top-k mean of capped points lands just
        below the cap it presses on)."""
        return [d for d, w, c in zip(self.domains, weights, self.caps) if c < 1.0 and w >= c * (1 - tolerance)]


def repetition_caps(tokens: Mapping[str, int], domains: Sequence[str], target_tokens: int,
                    repetitions: float = REPETITIONS) -> RepetitionCaps:
    """w_j <= tokens_j * R / target_tokens (at most 1). A corpus too small for R epochs of it to fill the run
    (the embedded demo corpus and a 1B run, say) gets R times the epochs the run needs of it on average as
    the limit instead (the report says so)."""
    if repetitions <= 0 or target_tokens <= 0:
        raise ValueError(f"repetitions and target tokens must be > 0, got {repetitions} and {target_tokens}")
    counts = np.array([tokens.get(d, 0) for d in domains], dtype=np.float64)
    average = target_tokens / counts.sum()  # epochs of the whole corpus the run needs
    limit = repetitions if average <= repetitions else repetitions * average
    return RepetitionCaps(tuple(domains), np.minimum(counts * limit / target_tokens, 1.0), target_tokens,
                          repetitions, limit)


def epochs(weights: Mapping[str, float], tokens: Mapping[str, int], target_tokens: int) -> dict[str, float]:
    """How many times the large run sees each domain at these weights."""
    return {d: w * target_tokens / tokens[d] if tokens.get(d) else float("inf") if w > 0 else 0.0
            for d, w in weights.items()}


def exact_optimum(model: FittedModel, target: np.ndarray, upper: np.ndarray, prior: np.ndarray, kl: float = 0.0,
                  starts: np.ndarray | None = None, rounds: int = 200, population: int = 256, seed: int = 0,
                  guard_margin: float | None = None) -> np.ndarray:
    """The weights (model.domains order) minimizing target . predicted losses + kl * KL(w || prior) within
    0 <= w <= upper, sum w = 1. The black-box search is seeded by `starts` (e.g. the simulation's top
    candidates) and runs at most `rounds` rounds of `population` predictions.

    `guard_margin`: no target of the model may be predicted worse than at the prior (the natural mixture) by
    more than this. Every target, not only the objective's: those are what an optimum for one target is free
    to sacrifice. The law takes it as convex constraints; the black-box search ranks any mixture that breaks
    it below every one that keeps it, and the prior keeps it when within the bounds and margin >= 0.
    ValueError when no mixture within the bounds is found to keep it.
    """
    m = len(model.domains)
    lower, upper = np.zeros(m), np.asarray(upper, dtype=np.float64)
    if upper.sum() < 1.0 - 1e-12:
        raise ValueError(f"the upper bounds sum to {upper.sum():.6g} < 1: no mixture fits them")
    if guard_margin is not None and not np.isfinite(guard_margin):
        raise ValueError(f"guard_margin must be finite, got {guard_margin}")
    prior = np.asarray(prior, dtype=np.float64) / np.sum(prior)
    limits = None if guard_margin is None else model.predict(prior[None])[0] + guard_margin
    if isinstance(model.regressor, LogLinearMixingLaw):
        return minimize_law(model.regressor, target, lower, upper, prior if kl > 0 else None, kl, guard=limits)
    if limits is None:  # only the objective's targets matter: predict only those
        used = [t for t, v in zip(model.targets, target) if v != 0]
        model, target = model.select(used), np.asarray(target)[[model.targets.index(t) for t in used]]

    def score(W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's objective, and how far its worst target is above the guard's limit (0: the guard holds)."""
        losses = model.predict(W)
        out = losses @ target
        if kl > 0:
            Q = np.maximum(W, 1e-300)
            out = out + kl * np.where(W > 0, W * (np.log(Q) - np.log(np.maximum(prior, 1e-300))), 0.0).sum(axis=1)
        if limits is None:
            return out, np.zeros(len(W))
        return out, np.maximum((losses - limits).max(axis=1) - GUARD_TOLERANCE, 0.0)

    def best_of(W: np.ndarray) -> tuple[np.ndarray, float, float]:
        """The row keeping the guard (else the nearest to keeping it) with the lowest objective."""
        values, excess = score(W)
        i = np.lexsort((values, excess))[0]
        return W[i], float(excess[i]), float(values[i])

    rng = np.random.default_rng(seed)
    seeds = [np.full((1, m), 1.0 / m), prior[None]] + ([np.asarray(starts, dtype=np.float64)] if starts is not None
                                                       else [])
    best, best_excess, best_value = best_of(project_onto_simplex(np.vstack(seeds), lower, upper))
    strength = _WIDEST
    for _ in range(rounds):
        trial, trial_excess, trial_value = best_of(
            project_onto_simplex(rng.dirichlet(strength * best + 0.05, population), lower, upper))
        if (trial_excess, trial_value) < (best_excess, best_value - 1e-12):
            best, best_excess, best_value = trial, trial_excess, trial_value
            strength = max(strength / 2.0, _WIDEST)  # moving pays: look wider again
        elif strength >= _FINEST:
            break  # nothing better even at the finest scale: converged
        else:
            strength = min(strength * 2.0, _FINEST)  # nothing better nearby at this scale: look closer
    if best_excess > 0:
        losses = model.predict(best[None])[0] - limits
        raise ValueError(f"the bounds (caps) and the guard cannot both hold: the best mixture found within the "
                         f"bounds still predicts {model.targets[np.argmax(losses)]} {losses.max():.4g} above its "
                         "limit")
    return best
