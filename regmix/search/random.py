"""`random`: RegMix's proposal distribution as a search baseline.

Mixtures are drawn as `regmix.search.synthesize` draws its proxies (Dirichlet around the tempered natural
distribution with log-spaced strengths, sparsified), kept inside the space's bounds, never one that
was already observed. The recommendation is the best run observed, as in quasi-random search.
"""

from __future__ import annotations

import numpy as np

from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.space import SearchSpace
from regmix.search.proposer import Proposer, Recommendation
from regmix.search.synthesize import SynthesisSettings, draw_mixtures, sparsify

ATTEMPTS = 20


class RandomProposer(Proposer):
    name = "random"

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0,
                 synthesis: SynthesisSettings = SynthesisSettings()):
        super().__init__(space, objective, seed)
        self.synthesis = synthesis

    def draw(self, n: int) -> np.ndarray:
        """`n` distinct prior draws inside the space, none equal to an observation."""
        rows: list[np.ndarray] = []
        seen = {tuple(np.round(row, 9)) for row in self.mixtures}
        for _ in range(ATTEMPTS):
            candidates = draw_mixtures(self.space.prior, max(64, 4 * n) * self.synthesis.sample_multiplier,
                                       self.synthesis, self.rng)
            candidates = sparsify(candidates, self.synthesis.minimum) if len(candidates) else candidates
            for row in candidates[self.space.contains(candidates)]:
                key = tuple(np.round(row, 9))
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
                    if len(rows) == n:
                        return np.stack(rows)
        raise ValueError(f"the synthesis prior gave only {len(rows)} of {n} distinct mixtures inside the bounds "
                         f"after {ATTEMPTS} rounds: loosen the bounds or raise maximum_usage")

    def ask(self, n: int) -> list[Mixture]:
        return [self.space.mixture(row) for row in self.draw(n)]

    def recommend(self) -> Recommendation:
        return self.best_observed()
