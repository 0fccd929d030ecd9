"""`turbo`: TuRBO-1 on the simplex. BO inside a trust region that grows on success and shrinks on failure.

The region is a box in the GP's input space (log weights scaled to [0, 1], see `regmix.search.bo`)
around the observed mixture with the best posterior mean (observations are noisy, so not the best
observed one), with half-widths length / 2 scaled by the GP's normalized length scales; mapped back to
weights it is cut by the space's bounds, and candidates are chosen by qLogNEI under the simplex
constraint inside it. A region shrunk below its minimum restarts: a fresh initial design, and a GP of
the runs since the restart only (all runs still count for the recommendation).
Constants as TuRBO-1 (length 0.8 in [0.5^7, 1.6], success tolerance 3, failure tolerance
ceil(max(4/q, m/q))).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from regmix.core.mixture import Mixture
from regmix.search.bo import DTYPE, BOProposer, LogWeights, fit_surrogate


@dataclass
class TrustRegion:
    """All TuRBO state; `update` is the only thing that changes it."""

    length: float = 0.8
    length_min: float = 0.5 ** 7
    length_max: float = 1.6
    successes: int = 0
    failures: int = 0
    success_tolerance: int = 3
    failure_tolerance: int = 0  # set from the batch size at the first region batch
    best: float = math.inf
    epoch_start: int = 0  # index of the first observation since the last restart
    restarts: int = 0

    def update(self, batch_best: float) -> None:
        """After a region batch: count a success (better than the best by 1e-3 relative) or a failure."""
        if batch_best < self.best - 1e-3 * abs(self.best):
            self.successes, self.failures = self.successes + 1, 0
        else:
            self.successes, self.failures = 0, self.failures + 1
        if self.successes >= self.success_tolerance:
            self.length, self.successes = min(2.0 * self.length, self.length_max), 0
        elif self.failures >= self.failure_tolerance:
            self.length, self.failures = self.length / 2.0, 0
        self.best = min(self.best, batch_best)

    @property
    def collapsed(self) -> bool:
        return self.length < self.length_min


class TurboProposer(BOProposer):
    name = "turbo"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.region = TrustRegion()
        self.region_batch = False  # whether the batch asked last came from the region (told next)

    def ask(self, n: int) -> list[Mixture]:
        start = self.region.epoch_start
        self.region_batch = len(self) - start >= self.initial_size(n)
        if not self.region_batch:
            rows = self.design_points(min(n, start + self.initial - len(self)))
        else:
            if not self.region.failure_tolerance:
                self.region.failure_tolerance = math.ceil(max(4 / n, self.space.dim / n))
            lower, upper = self.box(self.mixtures[start:], self.values[start:])
            rows = self.acquire(n, self.mixtures[start:], self.values[start:], lower, upper)
        return [self.space.mixture(row) for row in rows]

    def box(self, mixtures: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The trust region in weights: centre = best posterior mean among the runs since the restart."""
        torch.manual_seed(self.torch_seed())
        model = fit_surrogate(mixtures, values, self.eps)
        X = torch.tensor(mixtures, dtype=DTYPE)
        with torch.no_grad():
            center = X[model.posterior(X).mean.squeeze(-1).argmax()]
        kernel = getattr(model.covar_module, "base_kernel", model.covar_module)
        scale = kernel.lengthscale.detach().reshape(-1).to(DTYPE)
        scale = scale / scale.log().mean().exp()  # geometric mean 1, as TuRBO
        transform = LogWeights(self.eps)
        z = transform.transform(center.unsqueeze(0)).squeeze(0)
        half = scale * self.region.length / 2.0
        lower = transform.untransform((z - half).clamp(0.0, 1.0)).numpy()
        upper = transform.untransform((z + half).clamp(0.0, 1.0)).numpy()
        lower = np.clip(np.minimum(lower, center.numpy()), self.space.lower, self.space.upper)
        upper = np.clip(np.maximum(upper, center.numpy()), self.space.lower, self.space.upper)
        return lower, upper

    def tell(self, mixtures: Sequence[Mixture], losses: Sequence[Mapping[str, float]]) -> None:
        super().tell(mixtures, losses)
        if not len(losses):
            return
        batch_best = float(self.values[-len(losses):].min())
        if self.region_batch:
            self.region.update(batch_best)
            if self.region.collapsed:
                self.region = TrustRegion(epoch_start=len(self), restarts=self.region.restarts + 1)
        else:
            self.region.best = min(self.region.best, batch_best)
        self.region_batch = False

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "region": dataclasses.asdict(self.region), "region_batch": self.region_batch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.region = TrustRegion(**state["region"])
        self.region_batch = bool(state["region_batch"])
