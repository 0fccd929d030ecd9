"""What every method minimises: weighted validation losses of named valid domains.

One definition for every path (the pipeline, the searches, the online methods, simulate, verify,
transfer, compare): the default is the mean over every valid domain with validation tokens; a
target names domains (equal weights) or {domain: weight}; weights are normalized to sum to 1. Files
spell it by loss column (`metric/<domain>_val_loss`), the name the runs log it under.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from regmix.core.files import ConfigError, did_you_mean
from regmix.core.schema import as_valid_domain, loss_column


@dataclass(frozen=True)
class Objective:
    """Sum of weight x validation loss over named valid domains (weights sum to 1)."""

    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        total = sum(self.weights.values())
        if not self.weights or not total > 0 or any(not (w >= 0 and math.isfinite(w)) for w in self.weights.values()):
            raise ValueError(f"objective weights must be finite, >= 0 and not all 0, got {dict(self.weights)}")
        object.__setattr__(self, "weights", {d: float(w) / total for d, w in self.weights.items() if w > 0})

    @classmethod
    def mean(cls, domains: Sequence[str]) -> Objective:
        """The default: every domain weighted equally."""
        return cls({d: 1.0 for d in domains})

    @classmethod
    def parse(cls, target: Any, source: str | os.PathLike = "<objective>") -> Objective | None:
        """A target as written: a domain, a list of domains, {domain: weight}, or `domain=weight` items
        (a loss column is accepted for a domain); None for none given (then the default applies)."""
        if target is None or target == [] or target == ():
            return None
        if isinstance(target, str):
            target = [target]
        weights: dict[str, float] = {}
        if isinstance(target, Mapping):
            items = list(target.items())
        elif isinstance(target, (list, tuple)) and all(isinstance(v, str) for v in target):
            items = [(name, weight or 1.0) for name, _, weight in (v.partition("=") for v in target)]
        else:
            raise ConfigError(source, f"the target must be a valid domain, a list of them or {{domain: weight}}, "
                                      f"got {target!r}")
        for name, weight in items:
            try:
                value = float(weight)
            except (TypeError, ValueError):
                value = math.nan
            if not name or isinstance(weight, bool) or not (math.isfinite(value) and value >= 0):
                raise ConfigError(source, f"target {name!r}: the weight must be a number >= 0, got {weight!r}")
            domain = as_valid_domain(str(name))
            weights[domain] = weights.get(domain, 0.0) + value
        if not any(weights.values()):
            raise ConfigError(source, f"the target's weights are all 0: {target!r}")
        return cls(weights)

    @classmethod
    def for_domains(cls, target: Objective | None, valid: Sequence[str], empty: Sequence[str] = (),
                    source: str | os.PathLike = "<objective>") -> Objective:
        """`target` checked against the valid domains (with tokens), or the default over them."""
        usable = [d for d in valid if d not in set(empty)]
        if target is None:
            if not usable:
                raise ConfigError(source, "no valid domain has validation tokens: nothing to minimise")
            return cls.mean(usable)
        unknown = sorted(set(target.weights) - set(valid))
        if unknown:
            raise ConfigError(source, f"target domains {unknown} are not valid domains "
                                      f"{sorted(valid)}{did_you_mean(unknown[0], valid)}")
        hollow = sorted(set(target.weights) & set(empty))
        if hollow:
            raise ConfigError(source, f"target domains {hollow} have no validation tokens (empty files?)")
        return target

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self.weights)

    def value(self, losses: Mapping[str, float]) -> float:
        missing = [d for d in self.weights if d not in losses]
        if missing:
            raise ValueError(f"no loss for objective domains {missing}; have {sorted(losses)}")
        return float(sum(w * float(losses[d]) for d, w in self.weights.items()))

    def breakdown(self, losses: Mapping[str, float]) -> dict[str, float]:
        """Each domain's share of the value: weight x loss."""
        return {d: w * float(losses[d]) for d, w in self.weights.items()}

    def describe(self) -> str:
        """One line for reports: `mean validation loss of a, b` or `0.7 x a + 0.3 x b`."""
        weights = set(round(w, 9) for w in self.weights.values())
        if len(weights) == 1:
            return f"mean validation loss of {', '.join(self.weights)}"
        return " + ".join(f"{w:.3g} x {d}" for d, w in self.weights.items())

    def to_file(self) -> dict[str, float]:
        """As optimal_mixture.yaml spells it: by loss column."""
        return {loss_column(d): round(w, 12) for d, w in self.weights.items()}

    def to_dict(self) -> dict[str, float]:
        return dict(self.weights)
