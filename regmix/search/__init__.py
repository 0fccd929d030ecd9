"""Mixture search methods behind one proposer interface (`regmix.search.proposer`), by name.

A new method is one module with a `Proposer` subclass and one line in PROPOSERS.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Mapping

from regmix.files import ConfigError
from regmix.search.bo import BOProposer
from regmix.search.proposer import Proposer
from regmix.search.random import RandomProposer
from regmix.search.regression import RegMixProposer
from regmix.search.space import Objective, SearchSpace
from regmix.search.turbo import TurboProposer

PROPOSERS: dict[str, type[Proposer]] = {
    "random": RandomProposer,
    "regmix": RegMixProposer,
    "bo": BOProposer,
    "turbo": TurboProposer,
}


def proposer_settings(name: str) -> set[str]:
    """The keyword settings a method takes (besides space, objective, seed)."""
    if name not in PROPOSERS:
        raise ValueError(f"unknown search method {name!r}; known: {sorted(PROPOSERS)}")
    accepted: set[str] = set()
    for cls in PROPOSERS[name].__mro__:
        if "__init__" in vars(cls):
            accepted |= {p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")}
    return accepted - {"space", "objective", "seed", "synthesis"}  # synthesis: the experiment's own section


def make_proposer(name: str, space: SearchSpace, objective: Objective, seed: int = 0,
                  settings: Mapping[str, Any] | None = None, source: str | os.PathLike = "<search>") -> Proposer:
    """The proposer `name` with its `settings`; unknown names and settings are one error naming `source`."""
    try:
        accepted = proposer_settings(name)
    except ValueError as exc:
        raise ConfigError(source, str(exc)) from None
    unknown = sorted(set(settings or {}) - accepted - {"synthesis"})
    if unknown:
        raise ConfigError(source, f"method {name!r} has no settings {unknown}; it takes {sorted(accepted)}")
    try:
        return PROPOSERS[name](space, objective, seed, **(settings or {}))
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, f"method {name!r}: {exc}") from None
