"""`doge`: DoGE (Fan et al., 2024), domain weights from how well each domain's gradient aligns with a
held-out loss's.

Every `update_steps` steps: the gradient of the loss on `probe_sequences` fresh sequences of each
training domain, g_j, and of the mean loss on sequences of the run's valid domains' held-out split,
g_val; score s_j = lr * <g_j, g_val> / mean_j |g_j|, clipped to [0, clip * lr]; log w += s / mu,
w = softmax. The gradients are taken one at a time and only g_val is kept (two gradient buffers
for any number of domains), not the m + 1 full gradients of the released code. The answer is the
weights averaged over the steps, trained in a run of its own (`retrain`).

Deviation, stated: the proxy samples its batches by w (resampling) instead of stepping on
sum_j w_j g_j, so every engine and schedule of the loop serves it.
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
    update_steps: int = setting_field(1, "steps between weight updates (published: every step)")
    probe_sequences: int = setting_field(4, "sequences per domain (and per valid domain for g_val) at an update")

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mu) and self.mu >= 0):
            raise ValueError(f"mu must be >= 0 (0: by the number of domains), got {self.mu}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be > 0, got {self.clip}")
        if self.update_steps < 1 or self.probe_sequences < 1:
            raise ValueError("update_steps and probe_sequences must be >= 1")


def doge_scores(dots: np.ndarray, norms: np.ndarray, lr: float, clip: float) -> np.ndarray:
    """lr * <g_j, g_val> / mean_j |g_j|, clipped to [0, clip * lr] (0 where every gradient is 0)."""
    scale = norms.mean()
    raw = lr * dots / scale if scale > 0 else np.zeros_like(dots)
    return np.clip(raw, 0.0, clip * lr)


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

        target = torch.cat([probe.sequences(d, n, (3, step, i), split="valid")
                            for i, d in enumerate(probe.valid_domains)])
        aligned = probe.alignment(batches, target)
        dots = np.array([aligned[d][0] for d in self.domains])
        norms = np.array([aligned[d][1] for d in self.domains])
        if np.isfinite(dots).all() and np.isfinite(norms).all():
            self.log_weights = self.log_weights + doge_scores(dots, norms, probe.learning_rate,
                                                              self.settings.clip) / self.mu
        return Mixture(self.domains, self.weights)

    def state_dict(self) -> dict[str, Any]:
        return {"log_weights": self.log_weights.tolist()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.log_weights = np.array(state["log_weights"], dtype=np.float64)
