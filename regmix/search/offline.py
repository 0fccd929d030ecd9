"""Searches without training: a proposer replayed against a known objective, for benchmarks and tests.

`replay` drives any proposer (ask -> evaluate -> tell) up to a budget of runs and records its
recommendation at each budget on the way. The objectives: `PowerLawObjective`, a synthetic loss with
a known optimum (per-domain power laws in the mixture, with transfer between domains; convex, so the
optimum found by `minimize_on_space` is the global one), and any fitted regmix model as an oracle
(`ModelObjective`, e.g. a GP fitted on all of RegMix's published runs). Both can add Gaussian noise
to what the proposer sees, as seeds do to real runs; regret is always measured on the noiseless value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy.optimize import minimize

from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.space import SearchSpace
from regmix.regression.fit import FittedModel
from regmix.search.proposer import Proposer, Recommendation


class PowerLawObjective:
    """Loss of valid domain i: e_i + k_i * (sum_j T_ij w_j + s)^(-b_i); T has 1 on its diagonal.

    Random constants from `seed`: each domain learns from itself and a little from others, with its own
    floor, scale and exponent, so the optimum is an interior mixture far from uniform and the prior.
    """

    def __init__(self, dim: int, seed: int = 0, noise: float = 0.0, shift: float = 0.02):
        rng = np.random.default_rng(seed)
        self.domains = tuple(f"d{j}" for j in range(dim))
        self.floor = rng.uniform(1.5, 3.0, dim)
        self.scale = rng.uniform(0.05, 0.6, dim)
        self.exponent = rng.uniform(0.2, 0.8, dim)
        self.transfer = np.eye(dim) + rng.uniform(0.0, 0.15, (dim, dim)) * (rng.random((dim, dim)) < 0.4)
        np.fill_diagonal(self.transfer, 1.0)
        self.shift, self.noise = shift, noise
        self.prior = rng.dirichlet(np.full(dim, 2.0))
        self.rng = np.random.default_rng([seed, 1])

    def losses(self, weights: np.ndarray) -> np.ndarray:
        """Noiseless per-domain losses, rows of `weights` in `self.domains` order."""
        effective = np.atleast_2d(weights) @ self.transfer.T + self.shift
        return self.floor + self.scale * effective ** (-self.exponent)

    def value(self, weights: np.ndarray) -> np.ndarray:
        """The objective (mean loss over domains) without noise."""
        return self.losses(weights).mean(axis=1)

    def __call__(self, weights: np.ndarray) -> list[dict[str, float]]:
        losses = self.losses(weights)
        losses = losses + self.noise * self.rng.standard_normal(losses.shape)
        return [dict(zip(self.domains, row)) for row in losses]

    def space(self) -> SearchSpace:
        return SearchSpace(self.domains, self.prior, np.zeros(len(self.domains)), np.ones(len(self.domains)))

    def objective(self) -> Objective:
        return Objective({d: 1.0 for d in self.domains})


@dataclass
class ModelObjective:
    """A fitted model as the truth: its prediction of the objective, plus Gaussian noise of std `noise`."""

    model: FittedModel
    objective: Objective
    noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng([self.seed, 2])
        self.target = np.array([self.objective.weights.get(t, 0.0) for t in self.model.targets])

    def value(self, weights: np.ndarray) -> np.ndarray:
        return self.model.predict(np.atleast_2d(weights)) @ self.target

    def __call__(self, weights: np.ndarray) -> list[dict[str, float]]:
        losses = self.model.predict(np.atleast_2d(weights))
        losses = losses + self.noise * self.rng.standard_normal(losses.shape)
        return [dict(zip(self.model.targets, row)) for row in losses]


def minimize_on_space(f: Callable[[np.ndarray], np.ndarray], space: SearchSpace, starts: np.ndarray
                      ) -> tuple[np.ndarray, float]:
    """The lowest f found by SLSQP on {bounds, sum w = 1} from each start row (f takes and returns batches)."""
    best, best_value = None, np.inf
    constraint = {"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones_like(w)}
    bounds = list(zip(space.lower, space.upper))
    for start in np.atleast_2d(starts):
        found = minimize(lambda w: float(f(w[None, :])[0]), start, method="SLSQP", bounds=bounds,
                         constraints=[constraint], options={"maxiter": 500, "ftol": 1e-12})
        w = space.project(found.x)[0]
        value = float(f(w[None, :])[0])
        if value < best_value:
            best, best_value = w, value
    assert best is not None, "no start rows"
    return best, best_value


def replay(proposer: Proposer, evaluate: Callable[[np.ndarray], list[dict[str, float]]], budgets: Sequence[int],
           batch: int) -> list[tuple[int, Recommendation]]:
    """Run `proposer` to max(budgets) runs in batches of `batch`; its recommendation at every budget."""
    if batch < 1 or not budgets or min(budgets) < 1:
        raise ValueError("need batch >= 1 and budgets >= 1")
    out: list[tuple[int, Recommendation]] = []
    for budget in sorted(set(budgets)):
        while len(proposer) < budget:
            mixtures = proposer.ask(min(batch, budget - len(proposer)))
            rows = proposer.space.vectors(mixtures)
            proposer.tell(mixtures, evaluate(rows))
        out.append((budget, proposer.recommend()))
    return out


def regret(recommendation: Mixture, truth: Callable[[np.ndarray], np.ndarray], space: SearchSpace,
           optimum: float) -> float:
    """How much worse than the optimum the true (noiseless) objective is at the recommended mixture."""
    return float(truth(recommendation.vector(space.domains)[None, :])[0]) - optimum
