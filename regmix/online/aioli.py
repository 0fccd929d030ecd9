"""`aioli`: Aioli (Chen et al., ICLR 2025), online mixing from short probes inside the run.

Per round of `update_steps` steps: LearnParams probes, `sweeps` times over the training domains in
a random order, train `lp_steps` steps on the smoothed one-hot mixture of one domain (`one_hot_factor`
on it, the rest spread evenly) and measure every validation domain's loss before and after:
G[i, j] += loss_i before - loss_i after. Then A solves G[i, :] = W A[i, :] row by row (W: the matrix
of the smoothed one-hot mixtures), is shifted to be >= 0 and normalized, and the mixture takes an
exponentiated-gradient step on A's column sums: cumulative (p <- p * exp(eta * colsum A)) or, as
the released code, on a moving average E of A (p = softmax(eta * colsum E)). The rest of the round
trains on p. Probe steps are ordinary training steps (they count in the token budget); every probe
interval draws exactly its mixture's sequence counts; vectors are keyed by domain name.
Restricted Aioli: `prior_steps` on the config's mixture first, then Aioli from uniform (the released
code drops the prior after its steps too); the study runner's `aioli` method sets that mixture from
another method's answer (`prior`, regmix.search.online).

Checked against the released code (HazyResearch/aioli, trainer/aioli_trainer.py and scripts/). Deviations,
stated: (1) a probe interval draws exactly its mixture's counts over the whole interval, not the
per-batch counts max(1, int(w * batch)) of the released code, which go negative for 7 domains (its probes
then train about half their steps, on another mixture than the solve assumes); (2) the probes measure the
probe part of each valid domain (regmix.data.validation) up to `eval_tokens` per domain, where the released
code evaluates its whole validation half (the half it never reports on, as our held-out part); (3) every
vector is keyed by domain name (the released code mixes alphabetical and configured orders).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from regmix.core.mixture import Mixture
from regmix.online.policy import OnlinePolicy, Probe
from regmix.settings.training import setting_field


@dataclass(frozen=True)
class AioliSettings:
    """Defaults: the released setting for 7 domains (SlimPajama); 2 and 3 domains in each help text."""

    update_steps: int = setting_field(200, "steps per round (released: 250 for 2 and 3 domains, 200 for 7)")
    sweeps: int = setting_field(2, "k, LearnParams sweeps over the domains per round (4, 4, 2)")
    lp_steps: int = setting_field(10, "steps per LearnParams probe (4, 6, 10)")
    one_hot_factor: float = setting_field(0.75, "weight on the probed domain (0.625, 0.5, 0.75)")
    eta: float = setting_field(1.0, "exponentiated-gradient step size (0.2, 0.1, 1.0)")
    ema: float = setting_field(0.1, "moving average weight of the previous A (0.1, 0.5, 0.1); -1: cumulative EGD")
    prior_steps: int = setting_field(0, "restricted Aioli: steps on the config's mixture first, then from uniform")
    seed: int = setting_field(0, "seed of the probe orders")

    def __post_init__(self) -> None:
        checks = [(self.update_steps > 0 and self.lp_steps > 0 and self.sweeps > 0,
                   "update_steps, lp_steps and sweeps must be > 0"),
                  (self.update_steps % self.lp_steps == 0, "update_steps must be a multiple of lp_steps"),
                  (self.prior_steps >= 0 and self.prior_steps % self.lp_steps == 0,
                   "prior_steps must be a multiple of lp_steps (>= 0)"),
                  (0 < self.one_hot_factor <= 1, "one_hot_factor must be in (0, 1]"),
                  (math.isfinite(self.eta) and self.eta > 0, "eta must be > 0"),
                  (self.ema == -1 or 0 <= self.ema < 1, "ema must be in [0, 1), or -1 for cumulative updates")]
        for ok, problem in checks:
            if not ok:
                raise ValueError(problem)


def smoothed_one_hot(m: int, j: int, factor: float) -> np.ndarray:
    """`factor` on domain j, the rest spread evenly over the other m - 1 (all on j when m = 1)."""
    weights = np.full(m, (1.0 - factor) / (m - 1) if m > 1 else 0.0)
    weights[j] = factor if m > 1 else 1.0
    return weights


def interaction_matrix(gains: np.ndarray, factor: float) -> np.ndarray:
    """A from G[i, :] = W A[i, :] (W[j] = smoothed one-hot of j), shifted >= 0 and normalized to sum 1.

    An all-equal A (e.g. constant losses) has no information: it comes back as zeros.
    """
    m = gains.shape[1]
    W = np.stack([smoothed_one_hot(m, j, factor) for j in range(m)])
    A = np.linalg.solve(W, gains.T).T
    if A.min() < 0:
        A = A - A.min()
    total = A.sum()
    return A / total if total > 0 and np.isfinite(total) else np.zeros_like(A)


def egd_step(weights: np.ndarray, A: np.ndarray, eta: float) -> np.ndarray:
    """p * exp(eta * colsum A), normalized (computed in log space: never overflows to NaN)."""
    logits = np.log(np.maximum(weights, 1e-300)) + eta * A.sum(axis=0)
    return softmax(logits)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max())
    return z / z.sum()


class Aioli(OnlinePolicy):
    Settings = AioliSettings
    exact_counts = True

    def __init__(self, initial: Mixture, settings: AioliSettings | None = None):
        super().__init__(initial, settings)
        s, m = self.settings, len(initial.domains)
        if s.sweeps * m * s.lp_steps >= s.update_steps:
            raise ValueError(f"the probes take sweeps x domains x lp_steps = {s.sweeps * m * s.lp_steps} steps, "
                             f"not less than update_steps = {s.update_steps}: raise update_steps")
        self.interval = s.lp_steps
        self.domains = initial.domains
        self.weights = initial.weights.copy()  # p, over self.domains
        self.average: np.ndarray | None = None  # E of the released moving-average update
        self.gains: np.ndarray | None = None  # G of the current round, rows: self.rows
        self.rows: list[str] = []  # validation domains, in the order of the first measurement
        self.order: list[int] = []
        self.before: dict[str, float] = {}

    def _probe(self, j: int) -> Mixture:
        return Mixture(self.domains, smoothed_one_hot(len(self.domains), j, self.settings.one_hot_factor))

    def _vector(self, losses: Mapping[str, float]) -> np.ndarray:
        if not self.rows:
            self.rows = sorted(losses)
        return np.array([losses[d] for d in self.rows], dtype=np.float64)

    def on_interval(self, step: int, counts: Mapping[str, int], probe: Probe) -> Mixture | None:
        s, m = self.settings, len(self.domains)
        if step < s.prior_steps:
            return self.initial
        if step == s.prior_steps and s.prior_steps:
            self.weights = np.full(m, 1.0 / m)
        round_index, position = divmod(step - s.prior_steps, s.update_steps)
        index, probes = position // s.lp_steps, s.sweeps * m
        if index == 0:
            rng = np.random.default_rng([s.seed, round_index])
            self.order = [int(j) for _ in range(s.sweeps) for j in rng.permutation(m)]
            self.before = dict(probe.validation())
            self.gains = np.zeros((len(self._vector(self.before)), m))
            return self._probe(self.order[0])
        if index > probes:
            return None
        after = dict(probe.validation())
        assert self.gains is not None, "a round's probes without its start (state not restored?)"
        self.gains[:, self.order[index - 1]] += self._vector(self.before) - self._vector(after)
        self.before = after
        if index < probes:
            return self._probe(self.order[index])
        self._update(self.gains / s.sweeps)
        return Mixture(self.domains, self.weights)

    def _update(self, gains: np.ndarray) -> None:
        """The mixture step of a round; a round with a NaN/inf loss keeps the mixture as it is."""
        if not np.isfinite(gains).all():
            return
        A = interaction_matrix(gains, self.settings.one_hot_factor)
        if self.settings.ema < 0:
            self.weights = egd_step(self.weights, A, self.settings.eta)
        else:
            ema = self.settings.ema
            self.average = A if self.average is None else (1 - ema) * A + ema * self.average
            self.weights = softmax(self.settings.eta * self.average.sum(axis=0))

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(), "average": None if self.average is None else self.average.tolist(),
                "gains": None if self.gains is None else self.gains.tolist(), "rows": self.rows,
                "order": self.order, "before": self.before}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = np.array(state["weights"], dtype=np.float64)
        self.average = None if state["average"] is None else np.array(state["average"], dtype=np.float64)
        self.gains = None if state["gains"] is None else np.array(state["gains"], dtype=np.float64)
        self.rows, self.order = list(state["rows"]), [int(j) for j in state["order"]]
        self.before = {d: float(v) for d, v in state["before"].items()}
