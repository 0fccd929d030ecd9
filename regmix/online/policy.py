"""The online-policy interface: a policy picks the next mixture from what one training run measures.

The training loop consults it through an online schedule (regmix.train.schedule): `on_interval` every
`interval` steps with the sequences drawn per domain so far and a `Probe` of the model as it is now
(validation losses for Aioli and Skill-it, per-token losses against a reference model for DoReMi,
per-domain gradient alignment for DoGE); and `on_evaluation` after each validation of the run with
the per-domain losses. Every validation loss a policy sees is on the probe part of the valid domains
(regmix.data.validation); the run is scored on the held-out part. Either returns the
mixture for the steps that follow, or None to keep the current one. A policy with `exact_counts`
has each interval's sequences drawn with exactly its mixture's counts. A policy's settings are a
dataclass (`Settings`, the help text of each field names the published default); its state goes
into the run's checkpoint, so a resumed run is the run not stopped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Protocol, Sequence

if TYPE_CHECKING:
    import torch

from regmix.core.mixture import Mixture


class Probe(Protocol):
    """What a policy may measure of the run's model at an interval; nothing here trains or is logged."""

    learning_rate: float  # of the step about to be taken
    valid_domains: Sequence[str]  # the run's valid domains that have validation tokens

    def validation(self) -> Mapping[str, float]:
        """Mean loss per valid domain on the probe part of its validation windows (never the held-out part)."""

    def sequences(self, domain: str, count: int, key: Sequence[int]) -> torch.Tensor:
        """`count` random training windows of a domain, drawn by their own generator (seeded by the run seed and
        `key`): the same on a resumed run, and neither trained on nor counted."""

    def valid_sequences(self, domain: str, count: int, key: Sequence[int]) -> torch.Tensor:
        """`count` windows of a valid domain's probe part, drawn as `sequences` (DoGE's validation gradient)."""

    def token_losses(self, tokens: torch.Tensor, checkpoint: Path | None = None) -> torch.Tensor:
        """Per-token next-token losses (batch, block_size) of the model, or of the model saved in
        another run's `checkpoint` (same architecture: DoReMi's reference model)."""

    def alignment(self, batches: Mapping[str, torch.Tensor], target: torch.Tensor
                  ) -> tuple[dict[str, tuple[float, float]], float]:
        """Per domain: <gradient of its batch's loss, gradient of the target batch's loss> and the norm of
        the former; and the target gradient's norm. Two gradient buffers in memory whatever the number of domains."""


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

    needs_model: ClassVar[bool] = False  # probes one model's losses or gradients: never stacked with others
    retrain: ClassVar[bool] = False  # the answer is the run's step-averaged mixture, trained in a run of its own

    def on_interval(self, step: int, counts: Mapping[str, int], probe: Probe) -> Mixture | None:
        return None

    def on_evaluation(self, step: int, valid_losses: Mapping[str, float], counts: Mapping[str, int]
                      ) -> Mixture | None:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what `state_dict` returned."""

