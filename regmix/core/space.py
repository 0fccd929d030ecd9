"""Where a search may put a mixture, and what it minimises.

`SearchSpace`: the simplex over named domains, cut by per-domain bounds (the sweep's usage caps:
a domain may be repeated at most `maximum_usage` epochs, plus any bounds the user sets), around a
prior (the natural token distribution). `Objective`: the pipeline's target, weighted validation
losses of named valid domains. Every vector is keyed by domain name at the boundary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture

TOLERANCE = 1e-6


def usage_bounds(natural: np.ndarray, maximum_usage: float) -> np.ndarray:
    """Upper weight per domain: a domain may be repeated at most `maximum_usage` epochs.

    As published, the bound comes from the natural distribution, before the temperature.
    """
    return np.minimum(natural * maximum_usage, 1.0)


@dataclass(frozen=True, eq=False)
class SearchSpace:
    """Mixtures over `domains` with lower <= w <= upper and sum w = 1; `prior` is the natural distribution."""

    domains: tuple[str, ...]
    prior: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    caps: np.ndarray | None = None  # the large run's repetition caps: a recommendation keeps to them

    def __post_init__(self) -> None:
        for field in ("prior", "lower", "upper", "caps"):
            if getattr(self, field) is None:
                continue
            values = np.array(getattr(self, field), dtype=np.float64).reshape(-1)
            if len(values) != len(self.domains):
                raise ValueError(f"{field} has {len(values)} values for {len(self.domains)} domains")
            values.setflags(write=False)
            object.__setattr__(self, field, values)
        object.__setattr__(self, "domains", tuple(self.domains))

    @classmethod
    def around(cls, natural: Mixture, maximum_usage: float = 15.0,
               bounds: Mapping[str, Any] | None = None, source: str | os.PathLike = "<search space>",
               caps: np.ndarray | None = None) -> SearchSpace:
        """The space of a sweep: usage caps from the natural distribution, tightened by `bounds`.

        `bounds`: {domain: [lower, upper]} (either may be null). `caps`: the large run's repetition caps
        (natural's domain order), which the recommendation keeps to, not the proxies. Infeasible bounds
        name `source`.
        """
        prior = natural.weights / natural.weights.sum()
        lower, upper = np.zeros(len(prior)), usage_bounds(prior, maximum_usage)
        for domain, pair in (bounds or {}).items():
            if domain not in natural.domains:
                raise ConfigError(source, f"bounds name domain {domain!r}, not one of {list(natural.domains)}")
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ConfigError(source, f"bounds of {domain!r} must be [lower, upper], got {pair!r}")
            j = natural.domains.index(domain)
            try:
                lo, hi = (None if v is None else float(v) for v in pair)
            except (TypeError, ValueError):
                raise ConfigError(source, f"bounds of {domain!r} must be numbers, got {pair!r}") from None
            if any(v is not None and not 0 <= v <= 1 for v in (lo, hi)):
                raise ConfigError(source, f"bounds of {domain!r} must lie in [0, 1], got {pair!r}")
            lower[j] = lower[j] if lo is None else max(lower[j], lo)
            upper[j] = upper[j] if hi is None else min(upper[j], hi)
        space = cls(natural.domains, prior, lower, upper, caps)
        for problem in (space.problem(), space.recommendable().problem()):
            if problem:
                raise ConfigError(source, problem)
        return space

    def recommendable(self) -> SearchSpace:
        """Where a recommendation may lie: this space within the repetition caps."""
        if self.caps is None:
            return self
        return SearchSpace(self.domains, self.prior, self.lower, np.minimum(self.upper, self.caps))

    def problem(self) -> str | None:
        """Why no mixture fits these bounds, or None."""
        bad = [f"{d} [{lo:.4g}, {hi:.4g}]" for d, lo, hi in zip(self.domains, self.lower, self.upper)
               if not 0 <= lo <= hi]
        if bad:
            return (f"bounds {', '.join(bad)} are empty: a lower bound above the upper one, or above the usage cap "
                    "(natural share x maximum_usage)")
        if self.lower.sum() > 1 + TOLERANCE:
            return f"lower bounds sum to {self.lower.sum():.4g} > 1"
        if self.upper.sum() < 1 - TOLERANCE:
            return (f"upper bounds (usage and repetition caps included) sum to {self.upper.sum():.4g} < 1: no "
                    "mixture fits; raise maximum_usage, the repetitions or the upper bounds")
        return None

    @property
    def dim(self) -> int:
        return len(self.domains)

    def contains(self, weights: np.ndarray, atol: float = TOLERANCE) -> np.ndarray:
        """Per row: on the simplex and within the bounds."""
        weights = np.atleast_2d(weights)
        return ((weights >= self.lower - atol).all(axis=1) & (weights <= self.upper + atol).all(axis=1)
                & (np.abs(weights.sum(axis=1) - 1) <= atol))

    def project(self, weights: np.ndarray) -> np.ndarray:
        """Rows moved into the space: clipped to the bounds, then the sum fixed on the domains with room.

        For the small violations of numerical optimizers; a row far outside is moved, not rejected.
        """
        out = np.clip(np.atleast_2d(np.asarray(weights, dtype=np.float64)), self.lower, self.upper)
        for row in out:
            for _ in range(2 * self.dim):
                gap = 1.0 - row.sum()
                if abs(gap) <= 1e-12:
                    break
                room = (self.upper - row) if gap > 0 else (row - self.lower)
                if room.sum() <= 0:
                    break
                row += np.sign(gap) * room * min(1.0, abs(gap) / room.sum())
        return out

    def mixture(self, weights: np.ndarray) -> Mixture:
        return Mixture(self.domains, np.asarray(weights, dtype=np.float64))

    def vectors(self, mixtures: Sequence[Mixture]) -> np.ndarray:
        """Mixtures as rows in this space's domain order (an unknown weighted domain is an error)."""
        return np.stack([m.vector(self.domains) for m in mixtures]) if mixtures else np.empty((0, self.dim))
