"""The large run's limits on a mixture, and the exact optimum of a fitted model within them.

Repetition caps: the large run trains `target_tokens` (its steps x batch x block); a domain of
`tokens_j` may take at most w_j <= tokens_j * R / target_tokens, so no domain is repeated more than R
epochs. R defaults to 4: Muennighoff et al. (2023, "Scaling Data-Constrained Language Models") find
up to about 4 epochs nearly as good as fresh data, with returns falling fast beyond.

The exact optimum minimizes sum_i v_i L_i(w) + kl * KL(w || prior) subject to w >= 0, sum w = 1 and
the upper bounds (usage bounds and caps). Solvers, and why:
- the log-linear mixing law: convex with analytic gradients, so SLSQP (regmix.mixing_law.minimize_law)
  is exact and takes milliseconds at m <= 100; cvxpy would add a dependency for the same answer;
- any other regressor (boosted trees are piecewise constant: their gradient is 0 almost everywhere): a
  derivative-free search on the feasible set, seeded by the simulation's best candidates: rounds of
  Dirichlet perturbations around the incumbent, projected onto the bounded simplex, keeping the best,
  with the perturbation shrinking when a round finds nothing better (a (1 + lambda) evolution strategy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from regmix.config import TrainingSettings
from regmix.fit import FittedModel
from regmix.mixing_law import LogLinearMixingLaw, minimize_law
from regmix.mixture import project_onto_simplex

REPETITIONS = 4.0


def large_run_tokens(settings: TrainingSettings) -> int:
    """Tokens the large run trains: steps x global batch x block size."""
    return settings.max_step * settings.global_batch_size * settings.block_size


@dataclass(frozen=True)
class RepetitionCaps:
    """Upper bounds per domain (`caps`, in `domains` order) so no domain is repeated more than `limit` epochs."""

    domains: tuple[str, ...]
    caps: np.ndarray
    target_tokens: int
    repetitions: float  # R asked for
    limit: float  # epochs allowed: R, or R x the corpus's average epochs when R epochs cannot fill the run

    def binding(self, weights: np.ndarray, tolerance: float = 1e-6) -> list[str]:
        return [d for d, w, c in zip(self.domains, weights, self.caps) if c < 1.0 and w >= c - tolerance]


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
                  starts: np.ndarray | None = None, rounds: int = 200, population: int = 256, seed: int = 0
                  ) -> np.ndarray:
    """The weights (model.domains order) minimizing target . predicted losses + kl * KL(w || prior) within
    0 <= w <= upper, sum w = 1; `starts` (e.g. the simulation's top candidates) seed the black-box search."""
    m = len(model.domains)
    lower, upper = np.zeros(m), np.asarray(upper, dtype=np.float64)
    if upper.sum() < 1.0 - 1e-12:
        raise ValueError(f"the upper bounds sum to {upper.sum():.6g} < 1: no mixture fits them")
    prior = np.asarray(prior, dtype=np.float64) / np.sum(prior)
    if isinstance(model.regressor, LogLinearMixingLaw):
        return minimize_law(model.regressor, target, lower, upper, prior if kl > 0 else None, kl)

    def value(W: np.ndarray) -> np.ndarray:
        out = model.predict(W) @ target
        if kl > 0:
            Q = np.maximum(W, 1e-300)
            out = out + kl * np.where(W > 0, W * (np.log(Q) - np.log(np.maximum(prior, 1e-300))), 0.0).sum(axis=1)
        return out

    rng = np.random.default_rng(seed)
    seeds = [np.full((1, m), 1.0 / m), prior[None]] + ([np.asarray(starts, dtype=np.float64)] if starts is not None
                                                       else [])
    pool = project_onto_simplex(np.vstack(seeds), lower, upper)
    scores = value(pool)
    best, best_value = pool[np.argmin(scores)], float(scores.min())
    strength = 100.0
    for _ in range(rounds):
        trial = project_onto_simplex(rng.dirichlet(strength * best + 0.05, population), lower, upper)
        trial_values = value(trial)
        if trial_values.min() < best_value - 1e-12:
            best, best_value = trial[np.argmin(trial_values)], float(trial_values.min())
        else:
            strength = min(strength * 2.0, 1e6)  # nothing better nearby at this scale: look closer
    return best
