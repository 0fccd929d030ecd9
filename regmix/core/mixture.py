"""A mixture: sampling weights over named training domains, in a fixed domain order.

Every conversion to a vector names the order it wants, because mixing up column order between
mixtures, priors and bounds is the classic bug of mixture tools.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from regmix.core.files import ConfigError, read_yaml
from regmix.core.schema import strip_train, strip_valid

SUM_TOLERANCE = 1e-3


def _as_weight(value: Any, domain: str, source: str | os.PathLike) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(source, f"weight of domain '{domain}' is {value!r}, not a number")
    weight = float(value)
    if math.isnan(weight):
        raise ConfigError(source, f"weight of domain '{domain}' is NaN")
    if weight < 0 or math.isinf(weight):
        raise ConfigError(source, f"weight of domain '{domain}' is {weight}, must be finite and >= 0")
    return weight


@dataclass(frozen=True)
class Mixture:
    """Sampling weights over named training domains, in a fixed domain order."""

    domains: tuple[str, ...]
    weights: np.ndarray

    def __post_init__(self) -> None:
        weights = np.array(self.weights, dtype=np.float64).reshape(-1)
        if len(weights) != len(self.domains):
            raise ValueError(f"{len(self.domains)} domains but {len(weights)} weights")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"duplicate domains in {self.domains}")
        weights.setflags(write=False)
        object.__setattr__(self, "domains", tuple(self.domains))
        object.__setattr__(self, "weights", weights)

    @classmethod
    def from_dict(
        cls,
        weights: Mapping[str, Any],
        source: str | os.PathLike = "<mixture>",
        normalize: bool = False,
        tolerance: float = SUM_TOLERANCE,
    ) -> Mixture:
        """Validated mixture from a mapping; `normalize` accepts any non-negative amounts (token counts)."""
        if not isinstance(weights, Mapping) or not weights:
            raise ConfigError(source, "the mixture has no domains")
        values = np.array([_as_weight(v, str(k), source) for k, v in weights.items()])
        total = float(values.sum())
        if total <= 0:
            raise ConfigError(source, "all domain weights are 0")
        if normalize:
            values = values / total
        elif abs(total - 1.0) > tolerance:
            raise ConfigError(source, f"weights sum to {total:.6g}, not 1 (tolerance {tolerance:g})")
        return cls(tuple(str(k) for k in weights), values)

    @classmethod
    def uniform(cls, domains: Sequence[str]) -> Mixture:
        return cls(tuple(domains), np.full(len(domains), 1.0 / len(domains)))

    def to_dict(self) -> dict[str, float]:
        return {d: float(w) for d, w in zip(self.domains, self.weights)}

    def __getitem__(self, domain: str) -> float:
        return float(self.weights[self.domains.index(domain)])

    def vector(self, domains: Sequence[str]) -> np.ndarray:
        """Weights in the order of `domains`; a domain of ours missing there is an error, theirs get 0."""
        unknown = [d for d in self.domains if d not in set(domains) and self[d] > 0]
        if unknown:
            raise ValueError(f"mixture has weight on domains {unknown} that are not in {list(domains)}")
        lookup = self.to_dict()
        return np.array([lookup.get(d, 0.0) for d in domains])

    def close_to(self, other: Mixture, atol: float = 1e-9) -> bool:
        """Same weight on every domain (a domain missing on one side counts as 0)."""
        domains = list(dict.fromkeys(self.domains + other.domains))
        return bool(np.allclose(self.vector(domains), other.vector(domains), rtol=0.0, atol=atol))

    def active(self) -> tuple[str, ...]:
        """Domains with non-zero weight: the only ones a trainer may read."""
        return tuple(d for d, w in zip(self.domains, self.weights) if w > 0)

    def check_domains(
        self, known: Iterable[str], source: str | os.PathLike, empty: Iterable[str] = ()
    ) -> None:
        """Raise if a weighted domain is unknown to the corpus or has no tokens."""
        known, empty = set(known), set(empty)
        unknown = [d for d in self.domains if d not in known]
        if unknown:
            raise ConfigError(source, f"unknown domains {unknown}; the corpus has {sorted(known)}")
        hollow = [d for d in self.active() if d in empty]
        if hollow:
            raise ConfigError(source, f"domains {hollow} have weight but no tokens in the corpus")

    def on_domains(self, domains: Sequence[str]) -> Mixture:
        """The same weights over `domains` (order and all), 0 where this mixture has none."""
        return Mixture(tuple(domains), self.vector(domains))


def project_onto_simplex(X: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Euclidean projection of each row onto {lower <= p <= upper, sum p = 1}: bisection on a shift per row."""
    lo, hi = (X - upper).min(axis=1), (X - lower).max(axis=1)
    for _ in range(100):
        shift = 0.5 * (lo + hi)
        over = np.clip(X - shift[:, None], lower, upper).sum(axis=1) > 1.0
        lo, hi = np.where(over, shift, lo), np.where(over, hi, shift)
    P = np.clip(X - 0.5 * (lo + hi)[:, None], lower, upper)
    gap = 1.0 - P.sum(axis=1)  # rounding: onto the coordinate with the most room, so rows sum to 1 exactly
    j, rows = np.argmax(np.where(gap[:, None] > 0, upper - P, P - lower), axis=1), np.arange(len(P))
    P[rows, j] = np.clip(P[rows, j] + gap, lower[j], upper[j])
    return P


def mixture_of_counts(counts: Mapping[str, float], domains: Sequence[str]) -> Mixture | None:
    """Shares of drawn amounts (sequences, tokens) as a mixture over `domains`; None before any draw."""
    values = np.array([float(counts.get(d, 0)) for d in domains])
    return Mixture(tuple(domains), values / values.sum()) if values.sum() > 0 else None


def load_distribution(path: str | os.PathLike) -> tuple[Mixture, tuple[str, ...]]:
    """A token distribution from YAML/JSON, `{train: {train_<d>: x}, valid: {...}}` or a flat `{<d>: x}`
    (any scale), and the validation domains it names (its own domains when it names none)."""
    data = read_yaml(path)
    valid: Any = None
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data, valid = data["train"], data.get("valid")
    if not isinstance(data, dict):
        raise ConfigError(path, "expected a mapping of domain -> token share")
    if valid is not None and not isinstance(valid, dict):
        raise ConfigError(path, "the 'valid:' section must map valid_<domain> to a weight")
    natural = Mixture.from_dict({strip_train(str(k)): v for k, v in data.items()}, path, normalize=True)
    return natural, tuple(strip_valid(str(k)) for k in valid or {}) or natural.domains
