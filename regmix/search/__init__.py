"""Mixture search methods behind one proposer interface (`regmix.search.proposer`), by name.

A new method is one module with a `Proposer` subclass and one line in PROPOSERS.
"""

from __future__ import annotations

import importlib
import inspect
import os
from typing import TYPE_CHECKING, Any, Mapping

from regmix.core.files import ConfigError
from regmix.core.objective import Objective
from regmix.core.space import SearchSpace

if TYPE_CHECKING:
    from regmix.search.proposer import Proposer

# name -> "module:class", imported when used (bo and turbo load BoTorch: seconds of import)
PROPOSERS: dict[str, str] = {
    "random": "regmix.search.random:RandomProposer",
    "regmix": "regmix.search.regression:RegMixProposer",
    "bo": "regmix.search.bo:BOProposer",
    "turbo": "regmix.search.turbo:TurboProposer",
    # online methods and the static baselines they are measured against (regmix.search.online)
    "stratified": "regmix.search.online:StratifiedMethod",
    "natural": "regmix.search.online:NaturalMethod",
    "grid": "regmix.search.online:GridMethod",
    "dml": "regmix.search.online:DmlMethod",
    "aioli": "regmix.search.online:AioliMethod",
    "doge": "regmix.search.online:DogeMethod",
    "doremi": "regmix.search.online:DoremiMethod",
    "highest_loss": "regmix.search.online:HighestLossMethod",
    "skillit": "regmix.search.online:SkillitMethod",
}
OFFLINE, SEQUENTIAL = ("regmix",), ("random", "bo", "turbo")
ONLINE = tuple(name for name in PROPOSERS if name not in OFFLINE + SEQUENTIAL)
# given by the runner, not the user
INJECTED = {"space", "objective", "seed", "synthesis", "run_folder", "output", "max_step"}


def proposer_class(name: str) -> type[Proposer]:
    """The class of method `name` (imports its module)."""
    if name not in PROPOSERS:
        raise ValueError(f"unknown search method {name!r}; known: {sorted(PROPOSERS)}")
    module, cls = PROPOSERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def _parameters(cls: type) -> tuple[set[str], bool]:
    """The keyword parameters of a proposer class's constructors, and whether it takes any (`**settings`)."""
    named: set[str] = set()
    for base in cls.__mro__:
        if "__init__" in vars(base):
            params = inspect.signature(base.__init__).parameters.values()
            named |= {p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.name != "self"}
    return named, any(p.kind == p.VAR_KEYWORD for p in inspect.signature(cls.__init__).parameters.values())


def proposer_settings(name: str) -> set[str]:
    """The keyword settings a method takes (besides what the runner gives: INJECTED)."""
    return _parameters(proposer_class(name))[0] - INJECTED


def make_proposer(name: str, space: SearchSpace, objective: Objective, seed: int = 0,
                  settings: Mapping[str, Any] | None = None, source: str | os.PathLike = "<search>",
                  **injected: Any) -> Proposer:
    """The proposer `name` with its `settings` (and what the runner gives, `injected`, where the method takes
    it: synthesis, run_folder, output, max_step); unknown names and settings are one error naming `source`."""
    try:
        cls = proposer_class(name)
    except ValueError as exc:
        raise ConfigError(source, str(exc)) from None
    named, open_ended = _parameters(cls)
    unknown = sorted(set(settings or {}) - named | set(settings or {}) & INJECTED)
    if unknown and not open_ended:
        raise ConfigError(source, f"method {name!r} has no settings {unknown}; it takes {sorted(named - INJECTED)}")
    given = {k: v for k, v in injected.items() if k in named}
    try:
        return cls(space, objective, seed, **given, **(settings or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, f"method {name!r}: {exc}") from None
