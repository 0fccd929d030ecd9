"""`doge`: DoGE (Fan et al., 2024), domain weights from how well each domain's gradient aligns with a
held-out loss's.

Every `update_steps` steps: the gradient of the loss on `probe_sequences` fresh sequences of each
training domain, g_j, and of the mean loss on windows of the probe part of the run's valid domains
(never the held-out part it is scored on), g_val; each gradient rescaled to norm at most `grad_norm`
(`clip_grad_norm_`, as both references do before the dot product: 1.0 in Aioli's port, which is the
comparison we reproduce, 5.0 in DoGE's own repository); score
s_j = lr * <g_j, g_val> / (mean_j |g_j| + 1e-6) on the clipped gradients, clipped to [0, clip * lr];
log w += s / mu, w = softmax (cumulative, no smoothing, as both). The gradients are taken one at a
time and only g_val is kept (two gradient buffers for any number of domains), not the m + 1 full
gradients of the released code. The answer is the weights averaged over the steps, trained in a run
of its own (`retrain`), as both references.

Deviations, stated: the proxy samples its batches by w (resampling) instead of sampling stratified
and stepping on sum_j w_j g_j, so every engine and schedule of the loop serves it; the probe
sequences are drawn apart from the training batch (not the step's own batch), so the probe costs
m + 1 extra forward-backward passes of `probe_sequences` sequences at an update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from regmix.core.mixture import Mixture
from regmix.online.policy import OnlinePolicy, Probe
from regmix.settings.training import setting_field


@dataclass(frozen=True)
class DoGESettings:
    mu: float = setting_field(0.0, "temperature of the update; 0: the published one by size (0.01 for <= 3 "
                                   "domains, 0.1 beyond)")
    clip: float = setting_field(5.0, "scores clipped to [0, clip x learning rate] (published: 5)")
    grad_norm: float = setting_field(1.0, "each domain's and the validation gradient rescaled to norm <= this before "
                                          "their dot product (Aioli's port: 1; DoGE's repository: 5)")
    update_steps: int = setting_field(1, "steps between weight updates (published: every step)")
    probe_sequences: int = setting_field(4, "sequences per domain (and per valid domain for g_val) at an update")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise ValueError(f"mu must be >= 0 (0: by the number of domains), got {self.mu}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be > 0, got {self.clip}")
        if not (math.isfinite(self.grad_norm) and self.grad_norm > 0):
            raise ValueError(f"grad_norm must be > 0, got {self.grad_norm}")
        if self.update_steps < 1 or self.probe_sequences < 1:
            raise ValueError("update_steps and probe_sequences must be >= 1")


def doge_scores(dots: np.ndarray, norms: np.ndarray, target_norm: float, lr: float, clip: float,
                grad_norm: float) -> np.ndarray:
    """lr * <g_j, g_val> / (mean_j |g_j| + 1e-6) with every gradient first rescaled to norm <= grad_norm, clipped
    to [0, clip * lr]."""
    def shrink(norm: np.ndarray | float) -> np.ndarray:
        return np.minimum(1.0, grad_norm / np.maximum(norm, 1e-300))

    dots = dots * shrink(norms) * shrink(target_norm)
    return np.clip(lr * dots / ((norms * shrink(norms)).mean() + 1e-6), 0.0, clip * lr)


class DoGE(OnlinePolicy):
    Settings = DoGESettings
    needs_model = True
    retrain = True

    def __init__(self, initial: Mixture, settings: DoGESettings | None = None):
        super().__init__(initial, settings)
        self.interval = self.settings.update_steps
        self.domains = initial.domains
        self.mu = self.settings.mu or (0.01 if len(self.domains) <= 3 else 0.1)
        self.log_weights = np.log(np.maximum(initial.weights, 1e-6))

    @property
    def weights(self) -> np.ndarray:
        z = np.exp(self.log_weights - self.log_weights.max())
        return z / z.sum()

    def on_interval(self, step: int, counts: Mapping[str, int], probe: Probe) -> Mixture | None:
        n = self.settings.probe_sequences
        batches = {d: probe.sequences(d, n, (2, step, i)) for i, d in enumerate(self.domains)}
        import torch  # only here: the policy's module loads with `regmix online --help`

        target = torch.cat([probe.valid_sequences(d, n, (3, step, i)) for i, d in enumerate(probe.valid_domains)])
        aligned, target_norm = probe.alignment(batches, target)
        dots = np.array([aligned[d][0] for d in self.domains])
        norms = np.array([aligned[d][1] for d in self.domains])
        if np.isfinite(dots).all() and np.isfinite(norms).all() and math.isfinite(target_norm):
            s = self.settings
            scores = doge_scores(dots, norms, target_norm, probe.learning_rate, s.clip, s.grad_norm)
            self.log_weights = self.log_weights + scores / self.mu
        return Mixture(self.domains, self.weights)

    def state_dict(self) -> dict[str, Any]:
        return {"log_weights": self.log_weights.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.log_weights = np.array(state["log_weights"], dtype=np.float64)
