"""The online-policy interface: a policy picks the next mixture from what one training run measures.

The training loop consults it through an online schedule (regmix.train.schedule): `on_interval` every
`interval` steps with the sequences drawn per domain so far, `on_evaluation` after each validation
with the per-domain losses. Either returns the mixture for the steps that follow, or None to keep
the current one. Its state goes into the run's checkpoint, so a resumed run is the run not stopped.
"""

from __future__ import annotations

from typing import Any, Mapping

from regmix.mixture import Mixture


class OnlinePolicy:
    """Base class: override the hooks the method needs; `state_dict` must hold all that changes."""

    interval: int = 0  # steps between on_interval calls; 0: never

    def __init__(self, initial: Mixture):
        self.initial = initial

    def on_interval(self, step: int, counts: Mapping[str, int]) -> Mixture | None:
        return None

    def on_evaluation(self, step: int, valid_losses: Mapping[str, float], counts: Mapping[str, int]
                      ) -> Mixture | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
