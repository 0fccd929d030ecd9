"""Mixture reuse (Olmix): the domains of an earlier optimum searched as one domain when the domain set changes.

When domains are added to a corpus (or removed, or one is split into new ones) after a study found its
optimum, the earlier optimum's domains that remain are kept at their relative weights and searched as one
virtual domain, `existing`, beside the new ones: a small swarm over those few coordinates finds the new
optimum (Olmix reports matching a full recomputation with 74% less compute over 5 updates). Olmix leaves
turning `existing` back into its domains to the user; here every run is trained, and the answer written,
over the corpus's own domains (`expand`), while methods see the reduced ones (`reduce`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture


@dataclass(frozen=True)
class FrozenMixture:
    """`members`: the earlier optimum over its domains still in the corpus (normalized), searched as `name`."""

    name: str
    members: Mixture
    removed: tuple[str, ...] = ()  # the earlier optimum's domains the corpus no longer has

    def reduced_domains(self, domains: Sequence[str]) -> tuple[str, ...]:
        """The domains a method searches: `name`, then the corpus's domains that are not members."""
        return (self.name, *(d for d in domains if d not in self.members.domains))

    def expand(self, mixture: Mixture) -> Mixture:
        """A mixture over the reduced domains as one over the corpus's: `name`'s weight spread over the members."""
        weights = mixture.to_dict()
        share = weights.pop(self.name, 0.0)
        full = {d: share * w for d, w in self.members.to_dict().items()}
        for domain, weight in weights.items():
            full[domain] = full.get(domain, 0.0) + weight
        return Mixture.from_dict(full, normalize=True)

    def reduce(self, mixture: Mixture) -> Mixture:
        """A mixture over the corpus's domains as one over the reduced domains: the members' weights summed."""
        weights = mixture.to_dict()
        share = sum(weights.pop(d, 0.0) for d in self.members.domains)
        return Mixture.from_dict({self.name: share, **weights}, normalize=True)

    def caps(self, caps: np.ndarray, domains: Sequence[str]) -> np.ndarray:
        """Caps over `domains` (the corpus's) as caps over the reduced domains: `name` may take as much as its
        most constrained member allows at its relative weight."""
        lookup = dict(zip(domains, caps))
        frozen = min(lookup[d] / w for d, w in self.members.to_dict().items() if w > 0)
        return np.array([min(frozen, 1.0)] + [lookup[d] for d in self.reduced_domains(domains)[1:]])


def frozen_mixture(previous: Mixture, domains: Sequence[str], name: str, source: str | os.PathLike
                   ) -> FrozenMixture:
    """The earlier optimum `previous` frozen against the corpus's training `domains`."""
    if name in domains:
        raise ConfigError(source, f"the frozen domain's name {name!r} is a domain of the corpus: choose another")
    surviving = [d for d in previous.active() if d in domains]
    if not surviving:
        raise ConfigError(source, f"none of the earlier optimum's domains {list(previous.active())} is in the corpus "
                                  f"({list(domains)}): nothing to reuse, run a full study")
    if len(surviving) == len(domains):
        raise ConfigError(source, "every domain of the corpus is in the earlier optimum: there is no new domain to "
                                  "search (run a full study to revise the optimum itself)")
    removed = tuple(d for d in previous.active() if d not in domains)
    return FrozenMixture(name, Mixture.from_dict({d: previous[d] for d in surviving}, normalize=True), removed)
