"""Mixture schedules: which mixture the loop samples before every step.

- static: the config's mixture throughout (RegMix);
- piecewise: the config's stages, each until its step;
- online: an `OnlinePolicy` (regmix.online) asked every `interval` steps and after each evaluation.
A schedule's state is saved in the run's checkpoint, so a resumed run samples what the uninterrupted
run would have.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from regmix.core.mixture import Mixture
from regmix.online import make_policy
from regmix.online.policy import OnlinePolicy, Probe
from regmix.settings.run_config import RunConfig, Stage


class MixtureSchedule:
    """Static: the same mixture for every step. Subclasses change it during the run."""

    changes = False

    def __init__(self, mixture: Mixture):
        self.current = mixture

    def mixture(self, step: int, counts: Mapping[str, int], probe: Probe | None = None) -> Mixture:
        """The mixture for the step about to be trained (`step` steps are done); `probe` measures the model now."""
        return self.current

    def plan_steps(self, step: int) -> int:
        """Steps from `step` on whose sequences must have exactly the mixture's counts (0: sample by weight)."""
        return 0

    def observe(self, step: int, valid_losses: Mapping[str, float], counts: Mapping[str, int]) -> None:
        """After the evaluation at `step`: what an online schedule learns from."""

    def state_dict(self) -> dict[str, Any]:
        return {"current": self.current.to_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.current = Mixture.from_dict(state["current"])


class PiecewiseSchedule(MixtureSchedule):
    changes = True

    def __init__(self, stages: tuple[Stage, ...]):
        super().__init__(stages[0].mixture)
        self.stages = stages

    def mixture(self, step: int, counts: Mapping[str, int], probe: Probe | None = None) -> Mixture:
        self.current = next((s.mixture for s in self.stages if step < s.until_step), self.stages[-1].mixture)
        return self.current


class OnlineSchedule(MixtureSchedule):
    """A policy's mixtures, each checked against the corpus before it is sampled."""

    changes = True

    def __init__(self, policy: OnlinePolicy, manifest: Any, source: str | os.PathLike):
        super().__init__(policy.initial)
        self.policy, self.manifest, self.source = policy, manifest, source

    def _checked(self, mixture: Mixture | None, step: int) -> Mixture:
        if mixture is None:
            return self.current
        where = f"{self.source} (policy {self.policy.__class__.__name__} at step {step})"
        checked = Mixture.from_dict(mixture.to_dict(), where)
        checked.check_domains(self.manifest.train_domains, where, self.manifest.empty_domains("train"))
        return checked

    def _due(self, step: int) -> bool:
        return bool(self.policy.interval) and step % self.policy.interval == 0

    def mixture(self, step: int, counts: Mapping[str, int], probe: Probe | None = None) -> Mixture:
        if self._due(step):
            if probe is None:
                raise RuntimeError("an online schedule needs the loop's probe")
            self.current = self._checked(self.policy.on_interval(step, counts, probe), step)
        return self.current

    def plan_steps(self, step: int) -> int:
        return self.policy.interval if self.policy.exact_counts and self._due(step) else 0

    def observe(self, step: int, valid_losses: Mapping[str, float], counts: Mapping[str, int]) -> None:
        self.current = self._checked(self.policy.on_evaluation(step, valid_losses, counts), step)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "policy": self.policy.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.policy.load_state_dict(state["policy"])


def make_schedule(config: RunConfig, source: str | os.PathLike, manifest: Any) -> MixtureSchedule:
    if config.stages:
        return PiecewiseSchedule(config.stages)
    if config.policy is not None:
        return OnlineSchedule(make_policy(config.policy, config.train, source), manifest, source)
    return MixtureSchedule(config.train)
