"""The online-policy interface: a policy picks the next mixture from what one training run measures.

The training loop consults it through an online schedule (regmix.train.schedule): `on_interval` every
`interval` steps with the sequences drawn per domain so far and `measure`, a function that validates
the model now and returns the per-domain losses (for methods that probe, such as Aioli); and
`on_evaluation` after each validation of the run with the per-domain losses. Either returns the
mixture for the steps that follow, or None to keep the current one. A policy with `exact_counts`
has each interval's sequences drawn with exactly its mixture's counts. A policy's settings are a
dataclass (`Settings`, the help text of each field names the published default); its state goes
into the run's checkpoint, so a resumed run is the run not stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

from regmix.mixture import Mixture

Measure = Callable[[], Mapping[str, float]]


@dataclass(frozen=True)
class NoSettings:
    """A policy without settings."""


class OnlinePolicy:
    """Base class: override the hooks the method needs; `state_dict` must hold all that changes."""

    Settings: ClassVar[type] = NoSettings
    exact_counts: ClassVar[bool] = False
    interval: int = 0  # steps between on_interval calls; 0: never

    def __init__(self, initial: Mixture, settings: Any = None):
        self.initial = initial
        self.settings = settings if settings is not None else self.Settings()

    def on_interval(self, step: int, counts: Mapping[str, int], measure: Measure) -> Mixture | None:
        return None

    def on_evaluation(self, step: int, valid_losses: Mapping[str, float], counts: Mapping[str, int]
                      ) -> Mixture | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""
