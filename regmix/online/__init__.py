"""Online mixing policies, by name: the `policy:` of a config's online `schedule:`.

A new method is one module with an `OnlinePolicy` subclass (and its `Settings` dataclass) and one
line in POLICIES.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.online.aioli import Aioli
from regmix.online.doge import DoGE
from regmix.online.doremi import DoReMi
from regmix.online.highest_loss import HighestLoss
from regmix.online.policy import OnlinePolicy
from regmix.online.skillit import SkillIt

POLICIES: dict[str, type[OnlinePolicy]] = {
    "aioli": Aioli,
    "doge": DoGE,
    "doremi": DoReMi,
    "highest_loss": HighestLoss,
    "skillit": SkillIt,
}


def policy_settings(spec: Mapping[str, Any], source: str | os.PathLike, max_step: int | None = None) -> Any:
    """The `Settings` of the policy a schedule spec names (`{policy: name, interval: N, ...settings}`), checked;
    with `max_step` (the run's), also that the policy updates within the run."""
    settings = {k: v for k, v in spec.items() if k not in ("policy", "interval")}
    name = spec.get("policy")
    if name not in POLICIES:
        raise ConfigError(source, f"unknown online policy {name!r}; known: {sorted(POLICIES)}")
    accepted = {f.name for f in dataclasses.fields(POLICIES[name].Settings)}
    unknown = sorted(set(settings) - accepted)
    if unknown:
        raise ConfigError(source, f"policy {name!r} has no settings {unknown}; it takes {sorted(accepted)}")
    interval = spec.get("interval", 0)
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
        raise ConfigError(source, f"schedule interval must be an integer >= 0, got {interval!r}")
    try:
        checked = POLICIES[name].Settings(**settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, f"policy {name!r}: {exc}") from None
    every = getattr(checked, "update_steps", 0)
    if max_step is not None and every > max_step:  # it would train the whole run on its first mixture, silently
        raise ConfigError(source, f"policy {name!r} updates the mixture every {every} steps (update_steps) but the "
                                  f"run has {max_step}: lower update_steps")
    return checked


def make_policy(spec: Mapping[str, Any], initial: Mixture, source: str | os.PathLike,
                max_step: int | None = None) -> OnlinePolicy:
    """The policy a schedule spec names, settings checked (policy_settings) and its files read."""
    settings = policy_settings(spec, source, max_step)
    name = spec["policy"]
    try:
        policy = POLICIES[name](initial, settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, f"policy {name!r}: {exc}") from None
    if "interval" in spec:
        if policy.interval and spec["interval"] != policy.interval:
            raise ConfigError(source, f"policy {name!r} sets its own interval ({policy.interval} steps); "
                                      "leave `interval:` out")
        policy.interval = spec["interval"]
    return policy
