"""`skillit`: Skill-it (Chen et al., NeurIPS 2023), mixing by a skills graph learned from single-domain runs.

The graph comes from m runs, each on one training domain: S[i, j] = (L_j(0) - L_j(end)) / L_j(0)
for the run on domain i, L_j the validation loss on domain j (`skills`: a JSON file of those runs'
final losses; L(0) is this run's own validation at step 0, the same initial model as theirs when the
seeds agree). The run starts at p proportional to exp(eta * S 1); every `update_steps` steps,
p_i proportional to exp(eta * sum_j S_ij Lambda_j), Lambda the sum of the last `window` validation-loss
vectors recorded at the run's evaluations (`eval_step_interval`), as both Skill-it's repository and
Aioli's port record them: at every evaluation, not at every update, so updates between two
evaluations repeat the weights (the authors' 2- and 3-domain scripts evaluate every 250 steps and
update every 500). Every loss is on the probe part of the valid domains, never the held-out part.
`python -m regmix.online --method skillit` trains the m runs and writes the file.

Deviation, stated: the references replace an off-diagonal graph entry of exactly 1 (a loss driven to 0)
by 0.5; a loss of 0 cannot occur on text, so that guard is left out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from regmix.core.mixture import Mixture
from regmix.online.policy import OnlinePolicy, Probe
from regmix.settings.training import setting_field


@dataclass(frozen=True)
class SkillItSettings:
    skills: str = setting_field("", "JSON file {trained domain: {valid domain: final loss}} of the single-domain "
                                    "runs")
    eta: float = setting_field(0.2, "step size (published: 0.2)")
    update_steps: int = setting_field(50, "steps between updates")
    window: int = setting_field(3, "validation-loss vectors summed for an update (published: the last 3)")

    def __post_init__(self) -> None:
        if not self.skills:
            raise ValueError("needs `skills`, the JSON file of the single-domain runs' final losses")
        if not (math.isfinite(self.eta) and self.eta > 0):
            raise ValueError(f"eta must be > 0, got {self.eta}")
        if self.update_steps < 1 or self.window < 1:
            raise ValueError("update_steps and window must be >= 1")


def read_skills(path: Path, domains: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The single-domain runs' final losses, one row per training domain, checked."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the skills file {path}: {exc}") from None
    missing = [d for d in domains if not isinstance(raw, dict) or not isinstance(raw.get(d), dict)]
    if missing:
        raise ValueError(f"{path}: no single-domain run's losses for {missing}")
    try:
        return {d: {v: float(x) for v, x in raw[d].items()} for d in domains}
    except (TypeError, ValueError):
        raise ValueError(f"{path}: losses must be numbers") from None


def skills_graph(initial: Mapping[str, float], final: Mapping[str, Mapping[str, float]],
                 domains: tuple[str, ...], valid: list[str]) -> np.ndarray:
    """S[i, j] = (L_j(0) - L_j(end of the run on domain i)) / L_j(0)."""
    return np.array([[(initial[v] - final[d][v]) / initial[v] for v in valid] for d in domains])


def tilt(scores: np.ndarray, eta: float) -> np.ndarray:
    z = eta * scores
    z = np.exp(z - z.max())
    return z / z.sum()


class SkillIt(OnlinePolicy):
    Settings = SkillItSettings

    def __init__(self, initial: Mixture, settings: SkillItSettings | None = None):
        super().__init__(initial, settings)
        self.interval = self.settings.update_steps
        self.domains = initial.domains
        self.final = read_skills(Path(self.settings.skills), self.domains)
        self.valid: list[str] = []  # the valid domains of the graph's columns
        self.graph: np.ndarray | None = None
        self.history: list[list[float]] = []

    def on_interval(self, step: int, counts: Mapping[str, int], probe: Probe) -> Mixture | None:
        if self.graph is None:  # the run's start: the graph from the initial losses, the first history entry
            losses = dict(probe.validation())
            self.valid = sorted(v for v in losses if all(v in row for row in self.final.values()))
            if not self.valid:
                raise ValueError(f"{self.settings.skills}: no valid domain in common with this run's {sorted(losses)}")
            self.graph = skills_graph(losses, self.final, self.domains, self.valid)
            self.history = [[losses[v] for v in self.valid]]
            return Mixture(self.domains, tilt(self.graph.sum(axis=1), self.settings.eta))
        return Mixture(self.domains, tilt(self.graph @ np.sum(self.history, axis=0), self.settings.eta))

    def on_evaluation(self, step: int, valid_losses: Mapping[str, float], counts: Mapping[str, int]
                      ) -> Mixture | None:
        vector = [valid_losses.get(v, math.nan) for v in self.valid]
        if self.graph is not None and np.isfinite(vector).all():
            self.history = (self.history + [vector])[-self.settings.window:]
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"valid": self.valid, "graph": None if self.graph is None else self.graph.tolist(),
                "history": self.history}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.valid = list(state["valid"])
        self.graph = None if state["graph"] is None else np.array(state["graph"], dtype=np.float64)
        self.history = [list(map(float, v)) for v in state["history"]]
