"""`bo`: Bayesian optimization over the simplex with BoTorch, in batches the sweep trains at once.

Pieces (BoTorch's model / acquisition / optimizer):
- Surrogate: `SingleTaskGP` on the achieved mixtures, outcome standardized. Input transform
  `LogWeights`: z = log(w + eps), scaled to [0, 1]. RegMix's losses are close to log-linear in the
  weights (halving a small domain's weight matters as much as halving a large one's), so distances in
  log weight make one length scale per domain fit small and large domains alike; eps (1e-3) keeps a
  weight of 0 finite and sets how much the kernel distinguishes tiny weights.
- Acquisition: `qLogNoisyExpectedImprovement` (the losses are noisy: seed noise is of the size of the
  gaps between mixtures), q = the batch asked for, chosen greedily one point at a time.
- Optimizer: `optimize_acqf` directly on all m weights with the equality sum w = 1 and the space's
  per-domain bounds (usage caps included); no implicit last weight. Domains whose bounds pin them
  (lower = upper, e.g. a domain without tokens) are fixed features.
- Initial design: draws from the synthesis prior (`design: prior`, RegMix's distribution) or a
  space-filling quasi-random simplex design (`design: sobol`) inside the bounds.
- Recommendation: the minimum of the posterior mean on the space (seeded by the observed points),
  never the best noisy observation, with the posterior standard deviation as its uncertainty.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Mapping

import numpy as np
import torch
from botorch.acquisition import PosteriorMean, qLogNoisyExpectedImprovement
from botorch.exceptions import InputDataWarning, OptimizationWarning
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import InputTransform
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from botorch.sampling import SobolQMCNormalSampler
from botorch.utils.sampling import get_polytope_samples, sample_simplex
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.space import SearchSpace
from regmix.search.proposer import Recommendation
from regmix.search.random import RandomProposer
from regmix.search.synthesize import SynthesisSettings, draw_mixtures

DESIGNS = ("prior", "sobol")
DTYPE = torch.float64


class LogWeights(InputTransform, torch.nn.Module):
    """w -> (log(w + eps) - log(eps)) / (log(1 + eps) - log(eps)): log weights in the unit cube."""

    def __init__(self, eps: float = 1e-3):
        super().__init__()
        self.eps = eps
        self.transform_on_train = self.transform_on_eval = self.transform_on_fantasize = True

    def transform(self, X: Tensor) -> Tensor:
        low, high = math.log(self.eps), math.log(1.0 + self.eps)
        return (torch.log(X.clamp_min(0.0) + self.eps) - low) / (high - low)

    def untransform(self, Z: Tensor) -> Tensor:
        low, high = math.log(self.eps), math.log(1.0 + self.eps)
        return torch.exp(low + Z * (high - low)) - self.eps


def fit_surrogate(mixtures: np.ndarray, values: np.ndarray, eps: float) -> SingleTaskGP:
    """GP of -objective (BoTorch maximizes) on log weights, hyperparameters by marginal likelihood."""
    X = torch.tensor(mixtures, dtype=DTYPE)
    Y = -torch.tensor(values, dtype=DTYPE).unsqueeze(-1)
    model = SingleTaskGP(X, Y, input_transform=LogWeights(eps), outcome_transform=Standardize(m=1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", InputDataWarning)
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    return model


class BOProposer(RandomProposer):
    name = "bo"

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0,
                 synthesis: SynthesisSettings = SynthesisSettings(), initial: int = 0, design: str = "prior",
                 eps: float = 1e-3, num_restarts: int = 10, raw_samples: int = 256, mc_samples: int = 128):
        super().__init__(space, objective, seed, synthesis)
        if design not in DESIGNS:
            raise ValueError(f"design must be one of {DESIGNS}, not {design!r}")
        counts = {"initial": initial, "num_restarts": num_restarts, "raw_samples": raw_samples,
                  "mc_samples": mc_samples}
        bad = [k for k, v in counts.items() if isinstance(v, bool) or not isinstance(v, int) or v < (k != "initial")]
        if bad or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"{', '.join(bad) or 'eps'}: initial must be an integer >= 0, num_restarts, raw_samples "
                             "and mc_samples integers >= 1, eps a number > 0")
        self.initial, self.design, self.eps = initial, design, eps
        self.num_restarts, self.raw_samples, self.mc_samples = num_restarts, raw_samples, mc_samples

    def initial_size(self, n: int) -> int:
        """Runs of the initial design: `initial`, or (0) max(m + 1, the first batch); fixed once decided."""
        if not self.initial:
            self.initial = max(self.space.dim + 1, n)
        return self.initial

    def ask(self, n: int) -> list[Mixture]:
        """Design points until the initial design is complete (a batch may stop short at it), then BO."""
        if len(self) < self.initial_size(n):
            rows = self.design_points(min(n, self.initial - len(self)))
        else:
            rows = self.acquire(n, self.mixtures, self.values, self.space.lower, self.space.upper)
        return [self.space.mixture(row) for row in rows]

    def design_points(self, n: int) -> np.ndarray:
        if self.design == "prior":
            return self.draw(n)
        seed = self.torch_seed()
        points = sample_simplex(self.space.dim, 64 * n, qmc=True, seed=seed, dtype=DTYPE).numpy()
        points = points[self.space.contains(points)][:n]
        if len(points) < n:  # tight bounds: uniform points of the polytope instead
            bounds = torch.tensor(np.stack([self.space.lower, self.space.upper]), dtype=DTYPE)
            extra = get_polytope_samples(n - len(points), bounds, equality_constraints=self._equality(), seed=seed)
            points = np.vstack([points, self.space.project(extra.numpy())])
        return points

    def _equality(self) -> list[tuple[Tensor, Tensor, float]]:
        return [(torch.arange(self.space.dim), torch.ones(self.space.dim, dtype=DTYPE), 1.0)]

    @staticmethod
    def local_draws(centers: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
        """`n` Dirichlet draws around the rows of `centers` (strengths 20 to 500: near and far)."""
        picks = centers[rng.integers(0, len(centers), n)]
        strengths = np.exp(rng.uniform(np.log(20.0), np.log(500.0), (n, 1)))
        alpha = strengths * picks + 0.05
        gamma = rng.standard_gamma(alpha)
        return gamma / gamma.sum(axis=1, keepdims=True)

    def raw_points(self, centers: np.ndarray) -> np.ndarray:
        """Starting points for the acquisition optimizer: half from the prior, half around `centers`."""
        half = self.raw_samples // 2
        prior = draw_mixtures(self.space.prior, max(half, 1), self.synthesis, self.rng)
        return np.vstack([prior, self.local_draws(centers, self.raw_samples - len(prior), self.rng)])

    def _optimize(self, acquisition: Any, lower: np.ndarray, upper: np.ndarray, q: int,
                  raw: np.ndarray) -> np.ndarray:
        """Maximize `acquisition` over q points of {lower <= w <= upper, sum w = 1}, greedily one at a time.

        Each point: the `raw` rows (projected into the region) are scored, the best `num_restarts`
        start SLSQP under the constraints; pinned domains (lower = upper) are fixed features.
        Starting points of our own replace BoTorch's polytope sampler, which dominates run time on CPU.
        """
        region = SearchSpace(self.space.domains, self.space.prior, lower, upper)
        starts = torch.tensor(region.project(raw), dtype=DTYPE).unsqueeze(1)
        pinned = {j: float(lower[j]) for j in range(self.space.dim) if upper[j] - lower[j] < 1e-12}
        bounds = torch.tensor(np.stack([lower, upper]), dtype=DTYPE)
        chosen: list[Tensor] = []
        for _ in range(q):
            if chosen:
                acquisition.set_X_pending(torch.cat(chosen))
            with torch.no_grad():
                scores = torch.cat([acquisition(part) for part in starts.split(256)])
            best = starts[torch.topk(scores, min(self.num_restarts, len(scores))).indices]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", (OptimizationWarning, RuntimeWarning))
                candidate, _ = optimize_acqf(
                    acquisition, bounds=bounds, q=1, num_restarts=len(best), batch_initial_conditions=best,
                    equality_constraints=self._equality(), fixed_features=pinned or None,
                    options={"maxiter": 100}, retry_on_optimization_warning=False)
            chosen.append(torch.tensor(region.project(candidate.detach().numpy()), dtype=DTYPE))
        return torch.cat(chosen).numpy()

    def acquire(self, n: int, mixtures: np.ndarray, values: np.ndarray, lower: np.ndarray,
                upper: np.ndarray) -> np.ndarray:
        """A batch of `n` by qLogNEI on a GP of (mixtures, values), inside lower <= w <= upper."""
        torch.manual_seed(self.torch_seed())
        model = fit_surrogate(mixtures, values, self.eps)
        acquisition = qLogNoisyExpectedImprovement(
            model, X_baseline=torch.tensor(mixtures, dtype=DTYPE), prune_baseline=True,
            sampler=SobolQMCNormalSampler(torch.Size([self.mc_samples])))
        best = mixtures[np.argsort(values)[:max(1, min(8, len(values)))]]
        return self._optimize(acquisition, lower, upper, n, self.raw_points(best))

    def recommend(self) -> Recommendation:
        if len(self) < 2:
            return self.best_observed()
        # recommend() must not move the random state the next ask() uses
        state, rng = torch.random.get_rng_state(), np.random.default_rng([self.seed, len(self)])
        torch.manual_seed(self.seed)
        try:
            model = fit_surrogate(self.mixtures, self.values, self.eps)
            observed = torch.tensor(self.mixtures[self.inside()], dtype=DTYPE)
            with torch.no_grad():
                mean = model.posterior(observed).mean.squeeze(-1)
            top = observed[torch.topk(mean, min(8, len(mean))).indices].numpy()
            found = self._optimize(PosteriorMean(model), self.space.lower, self.space.upper, 1,
                                   np.vstack([top, self.local_draws(top, self.raw_samples, rng)]))
            candidates = torch.cat([observed[mean.argmax()].unsqueeze(0), torch.tensor(found, dtype=DTYPE)])
            with torch.no_grad():
                posterior = model.posterior(candidates)
            best = int(posterior.mean.squeeze(-1).argmax())
            predicted = -float(posterior.mean.squeeze(-1)[best])
            spread = float(posterior.variance.squeeze(-1)[best].sqrt())
        finally:
            torch.random.set_rng_state(state)
        return Recommendation(self.space.mixture(candidates[best].numpy()), predicted, spread,
                              "minimum of the GP posterior mean")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "initial": self.initial}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.initial = int(state["initial"])
