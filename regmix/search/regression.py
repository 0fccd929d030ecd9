"""`regmix`: RegMix as a proposer. Random batches from the synthesis prior (by default the whole budget
at once, RegMix's one sweep), then the fitted regressor (`regmix.regression.fit`) and the simulation
(`regmix.regression.simulate`: RegMix's top-k mean, or the exact optimum) turn all observations into
one mixture, kept to the space's repetition caps.

The same code the stage commands run (`regmix fit`, `regmix simulate`); the runner only feeds it its
observations. With `output` (given by the study runner) the fitted regressor is saved there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.observations import Observations
from regmix.core.results import RunResult, run_scale
from regmix.core.space import SearchSpace
from regmix.regression.cv_plot import plot_out_of_fold
from regmix.regression.fit import cv_plot_path, fit, smallest_training_set
from regmix.regression.fitted import FittedModel
from regmix.regression.model_file import save_model
from regmix.regression.optimal_mixture import scale_record
from regmix.regression.regressors import BEST, REGRESSORS, SCALE_AWARE, minimum_runs
from regmix.regression.simulate import Simulation, exact_simulation, simulate
from regmix.search.proposer import Recommendation
from regmix.search.random import RandomProposer
from regmix.search.synthesize import SynthesisSettings

REGRESSOR_FILE = "regressor.npz"


class RegMixProposer(RandomProposer):
    name = "regmix"
    batch_all = True

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0,
                 synthesis: SynthesisSettings = SynthesisSettings(), regressor: str | Sequence[str] = BEST,
                 folds: int = 1, select: str = "spearman", candidates: int = 1_000_000, top_k: int = 128,
                 refine: int = 0,
                 optimum: str = "topk", kl: float = 0.0, guard_margin: float | None = None, uncertainty: float = 0.0,
                 threads: int = 2, output: str | None = None, target_scale: Sequence[float] | None = None):
        super().__init__(space, objective, seed, synthesis)
        self.regressors = [regressor] if isinstance(regressor, str) else list(regressor)
        unknown = [r for r in self.regressors if r not in REGRESSORS]
        if unknown or not self.regressors:
            raise ValueError(f"unknown regressors {unknown}; choose from {REGRESSORS}")
        if not (isinstance(folds, int) and folds >= 1 and isinstance(candidates, int) and isinstance(top_k, int)
                and candidates >= top_k >= 1):
            raise ValueError("need integers folds >= 1 and candidates >= top_k >= 1")
        if optimum not in ("topk", "exact"):
            raise ValueError(f"optimum must be topk or exact, got {optimum!r}")
        self.folds, self.candidates, self.top_k, self.refine, self.threads = folds, candidates, top_k, refine, threads
        self.select = select
        self.optimum, self.kl, self.guard_margin, self.uncertainty = optimum, kl, guard_margin, uncertainty
        self.output = None if output is None else Path(output)
        self.target_scale = None if target_scale is None else tuple(map(float, target_scale))
        self.scales: list[Sequence[float] | None] = []  # each observation's (params, tokens), where its run recorded it

    def tell(self, mixtures: Sequence[Mixture], losses: Sequence[Mapping[str, float]]) -> None:
        super().tell(mixtures, losses)
        self.scales += [None] * (len(self) - len(self.scales))

    def tell_results(self, names: Sequence[str], results: Sequence[RunResult]) -> None:
        """As every proposer, plus each run's scale (non-embedding parameters, tokens trained) for the scale-aware
        regressors: a study with `larger:` scales has runs of several sizes."""
        super().tell_results(names, results)
        self.scales[len(self) - len(results):] = [run_scale(r) for r in results]

    def observations(self) -> Observations:
        targets = tuple(self.objective.weights)
        losses = np.array([[record[t] for t in targets] for record in self.losses]).reshape(len(self), len(targets))
        scale = np.array(self.scales, dtype=np.float64) if all(s is not None for s in self.scales) else None
        return Observations(self.space.domains, targets, tuple(range(len(self))), self.mixtures, losses, scale)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "scales": self.scales}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.scales = list(state.get("scales") or [None] * len(self))

    def recommend(self) -> Recommendation:
        m = len(self.space.domains)
        observations = self.observations()
        usable = [r for r in self.regressors if minimum_runs(r, m) <= len(self)
                  and (r not in SCALE_AWARE or observations.scale is not None)]
        if not usable:  # too few to fit (early rounds of a search): what random search would hand over
            return self.best_observed()
        # CV picks among several regressors once each of its fits has the runs they need
        need = max(minimum_runs(r, m) for r in usable)
        folds = self.folds if smallest_training_set(len(self), self.folds) >= need else 1
        model = fit(observations, usable, folds=folds, num_threads=self.threads, select=self.select)
        natural = self.space.mixture(self.space.prior)
        caps = self.space.recommendable().upper

        def optimum(at: FittedModel) -> Simulation:
            return simulate(at, natural, self.objective, self.candidates, min(self.top_k, self.candidates),
                            self.synthesis, refine=self.refine, seed=self.seed, threads=self.threads, progress=False,
                            caps=caps, uncertainty=self.uncertainty)

        proxy_scale, proxies, single = model.scale, None, None
        if proxy_scale is not None and self.target_scale is not None:  # the optimum for the large run's size,
            proxies = optimum(model)  # and the one for the largest proxies' beside it
            model = model.at_scale(*self.target_scale)
            others = [r for r in usable if r not in SCALE_AWARE]
            if others:  # and the single-scale regressors' best: RegMix's answer, to verify against it
                chosen = fit(observations, others, folds=folds, num_threads=self.threads, select=self.select)
                single = (chosen.name, optimum(chosen).mixture)
        if self.output is not None:
            save_model(model, self.output / REGRESSOR_FILE)
            plot_out_of_fold(model, cv_plot_path(self.output / REGRESSOR_FILE))
        result = optimum(model)
        if self.optimum == "exact":
            result = exact_simulation(result, model, self.objective, natural, self.synthesis, caps, self.kl,
                                      self.guard_margin)
        weights = self.space.recommendable().project(result.mixture.vector(self.space.domains))[0]
        predicted = float(model.predict(weights[None, :])[0] @ np.array(
            [self.objective.weights[t] for t in model.targets]))
        pessimistic = self.uncertainty > 0 and result.spread is not None and self.optimum == "topk"
        basis = (f"{model.name} regressor, " + ("the exact optimum" if self.optimum == "exact" else
                 f"mean of the top {len(result.top_scores)} of {result.candidates} simulated mixtures")
                 + (f" by prediction + {self.uncertainty:g} x its uncertainty" if pessimistic else ""))
        details = {"regressor": model.name, "cv": model.cv, "extrapolation": model.extrapolation,
                   "candidates": result.candidates, "optimum": self.optimum, "kl": self.kl,
                   "guard_margin": self.guard_margin, "uncertainty": self.uncertainty}
        if proxies is not None:
            details["predicted_at"] = scale_record(model.scale, proxy_scale, proxies.mixture, single)
        return Recommendation(self.space.mixture(weights), predicted, result.spread, basis, details)
