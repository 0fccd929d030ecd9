"""`doremi`: DoReMi (Xie et al., NeurIPS 2023), domain weights from the excess loss over a reference model.

A reference model is trained first on the reference mixture (a run of its own, kept checkpoint);
then in this proxy run, every `update_steps` steps, each training domain's excess loss is measured
on `probe_sequences` fresh sequences of it, and the weights take the published step
w <- w * exp(eta * lambda), normalized, then w <- (1 - c) w + c / m. The method's answer is the
weights averaged over the steps, trained in a run of its own (`retrain`).

Two published forms, both here (`excess`, `eta`): DoReMi's own (Xie et al.; sangmichaelxie/doremi):
lambda_i = mean over the domain's tokens of max(proxy loss - reference loss, 0), eta 1 (the defaults);
and the port in Aioli's repository (HazyResearch/aioli, the comparison of Aioli's Table 2 that
bench/online_methods.py reproduces): lambda_i = max(mean proxy loss - mean reference loss, 0) over the
domain's tokens (`excess: domain`), eta 0.01 in every script. The port's gradient accumulation drops
every other micro-batch and halves both losses (an effective eta of 0.005 over half the updates): a
bug, not copied.

Deviations, stated: the proxy samples its batches by w (resampling) instead of sampling the reference
mixture and weighting the loss by w, so every engine and schedule of the loop serves it; the excess
is measured on held-aside probe sequences (not trained on), not on the step's own batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from regmix.core.mixture import Mixture
from regmix.online.policy import OnlinePolicy, Probe
from regmix.settings.training import setting_field


@dataclass(frozen=True)
class DoReMiSettings:
    reference: str = setting_field("", "checkpoint.pt of the reference run (`python -m regmix.online --method "
                                       "doremi` trains it on the stratified mixture)")
    eta: float = setting_field(1.0, "step size of the weights (published: 1.0; Aioli's port: 0.01)")
    excess: str = setting_field("token", "token: per-token excess clipped at 0, then averaged (published); domain: "
                                         "the difference of domain means, clipped (Aioli's port)")
    smoothing: float = setting_field(1e-3, "c, the share of uniform mixed into the weights (published: 1e-3)")
    update_steps: int = setting_field(1, "steps between weight updates (published: every step)")
    probe_sequences: int = setting_field(4, "sequences per domain the excess loss is measured on at an update")

    def __post_init__(self) -> None:
        if not self.reference:
            raise ValueError("needs `reference`, the checkpoint of a run on the reference mixture")
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise ValueError(f"eta must be > 0, got {self.eta}")
        if self.excess not in ("token", "domain"):
            raise ValueError(f"excess must be token or domain, got {self.excess!r}")
        if not 0 <= self.smoothing < 1:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.update_steps < 1 or self.probe_sequences < 1:
            raise ValueError("update_steps and probe_sequences must be >= 1")


def doremi_step(weights: np.ndarray, excess: np.ndarray, eta: float, smoothing: float) -> np.ndarray:
    """w * exp(eta * excess), normalized (in log space), then mixed with uniform by `smoothing`."""
    logits = np.log(np.maximum(weights, 1e-300)) + eta * excess
    tilted = np.exp(logits - logits.max())
    return (1 - smoothing) * tilted / tilted.sum() + smoothing / len(weights)


class DoReMi(OnlinePolicy):
    Settings = DoReMiSettings
    needs_model = True
    retrain = True

    def __init__(self, initial: Mixture, settings: DoReMiSettings | None = None):
        super().__init__(initial, settings)
        if not Path(self.settings.reference).is_file():
            raise ValueError(f"reference checkpoint {self.settings.reference} does not exist")
        self.interval = self.settings.update_steps
        self.domains = initial.domains
        m = len(self.domains)
        self.weights = (1 - self.settings.smoothing) * initial.weights + self.settings.smoothing / m
        self.excess: dict[str, float] = {}

    def on_interval(self, step: int, counts: Mapping[str, int], probe: Probe) -> Mixture | None:
        s, reference = self.settings, Path(self.settings.reference)
        excess = np.zeros(len(self.domains))
        for i, domain in enumerate(self.domains):
            tokens = probe.sequences(domain, s.probe_sequences, (1, step, i))
            gap = probe.token_losses(tokens) - probe.token_losses(tokens, reference)
            excess[i] = float(gap.clamp(min=0).mean()) if s.excess == "token" else max(float(gap.mean()), 0.0)
        if np.isfinite(excess).all():  # a NaN loss leaves the weights as they are (the loop fails the run)
            self.weights = doremi_step(self.weights, excess, s.eta, s.smoothing)
            self.excess = dict(zip(self.domains, excess.tolist()))
        return Mixture(self.domains, self.weights)

    def state_dict(self) -> dict[str, Any]:
        return {"weights": self.weights.tolist(), "excess": self.excess}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.weights = np.array(state["weights"], dtype=np.float64)
        self.excess = dict(state["excess"])
