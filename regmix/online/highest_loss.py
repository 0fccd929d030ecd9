"""`highest_loss`: after each evaluation, move a share of the weight to the domain that is worst.

A deliberately simple policy that shows the online hooks at work (it is no published method): the
training domain whose validation loss is highest gets `rate` of the mixture, taken proportionally
from all domains. Its only state is the mixture it last chose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from regmix.core.mixture import Mixture
from regmix.online.policy import OnlinePolicy
from regmix.settings.training import setting_field


@dataclass(frozen=True)
class HighestLossSettings:
    rate: float = setting_field(0.2, "share of the mixture moved to the worst domain after each evaluation")

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1:
            raise ValueError(f"rate must be in (0, 1], got {self.rate}")


class HighestLoss(OnlinePolicy):
    Settings = HighestLossSettings

    def __init__(self, initial: Mixture, settings: HighestLossSettings | None = None):
        super().__init__(initial, settings)
        self.current = initial

    def on_evaluation(self, step: int, valid_losses: Mapping[str, float], counts: Mapping[str, int]
                      ) -> Mixture | None:
        trainable = {d: v for d, v in valid_losses.items() if d in self.current.domains}
        if not trainable:
            return None
        worst = max(trainable, key=trainable.__getitem__)
        target = np.array([d == worst for d in self.current.domains], dtype=float)
        rate = self.settings.rate
        self.current = Mixture(self.current.domains, (1 - rate) * self.current.weights + rate * target)
        return self.current

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current.to_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.current = Mixture.from_dict(state["current"])
