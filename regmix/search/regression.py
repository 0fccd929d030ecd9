"""`regmix`: RegMix as a proposer. Random batches from the synthesis prior, then the fitted regressor
(`regmix.regression.fit`) and the simulation (`regmix.regression.simulate`) turn all observations into one mixture.

The same code as the pipeline's fit and simulate stages; the search only feeds them its observations.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from regmix.core.objective import Objective
from regmix.core.observations import Observations
from regmix.core.space import SearchSpace
from regmix.regression.fit import fit, smallest_training_set
from regmix.regression.regressors import BEST, REGRESSORS, minimum_runs
from regmix.regression.simulate import simulate
from regmix.search.proposer import Recommendation
from regmix.search.random import RandomProposer
from regmix.search.synthesize import SynthesisSettings


class RegMixProposer(RandomProposer):
    name = "regmix"

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0,
                 synthesis: SynthesisSettings = SynthesisSettings(), regressor: str | Sequence[str] = BEST,
                 folds: int = 1, candidates: int = 1_000_000, top_k: int = 128, threads: int = 2):
        super().__init__(space, objective, seed, synthesis)
        self.regressors = [regressor] if isinstance(regressor, str) else list(regressor)
        unknown = [r for r in self.regressors if r not in REGRESSORS]
        if unknown or not self.regressors:
            raise ValueError(f"unknown regressors {unknown}; choose from {REGRESSORS}")
        if not (isinstance(folds, int) and folds >= 1 and isinstance(candidates, int) and isinstance(top_k, int)
                and candidates >= top_k >= 1):
            raise ValueError("need integers folds >= 1 and candidates >= top_k >= 1")
        self.folds, self.candidates, self.top_k, self.threads = folds, candidates, top_k, threads

    def observations(self) -> Observations:
        targets = tuple(self.objective.weights)
        losses = np.array([[record[t] for t in targets] for record in self.losses]).reshape(len(self), len(targets))
        return Observations(self.space.domains, targets, tuple(range(len(self))), self.mixtures, losses)

    def recommend(self) -> Recommendation:
        m = len(self.space.domains)
        usable = [r for r in self.regressors if minimum_runs(r, m) <= len(self)]
        if not usable:  # too few to fit (early rounds of a search): what random search would hand over
            return self.best_observed()
        # CV picks among several regressors once each of its fits has the runs they need
        need = max(minimum_runs(r, m) for r in usable)
        folds = self.folds if smallest_training_set(len(self), self.folds) >= need else 1
        model = fit(self.observations(), usable, folds=folds, num_threads=self.threads)
        result = simulate(model, self.space.mixture(self.space.prior), dict(self.objective.weights),
                          self.candidates, min(self.top_k, self.candidates), self.synthesis, seed=self.seed,
                          threads=self.threads, progress=False)
        weights = self.space.project(result.mixture.vector(self.space.domains))[0]
        predicted = float(model.predict(weights[None, :])[0] @ np.array(
            [self.objective.weights[t] for t in model.targets]))
        return Recommendation(self.space.mixture(weights), predicted, result.spread,
                              f"{model.name} regressor, mean of the top {len(result.top_scores)} of "
                              f"{result.candidates} simulated mixtures")
