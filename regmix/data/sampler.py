"""Training sequences drawn by mixture weight from the prepared corpus (validation windows: regmix.data.validation).

Each domain is the concatenation of its memory-mapped shards: one long token stream (documents end
with the end-of-text id, so crossing a shard border is like crossing a document border). A training
sequence picks its domain by the mixture weights, then a uniformly random window of block_size + 1
tokens in that stream, as RegMix mixes its packed per-domain datasets.

Micro-batch k is drawn with a generator seeded by (seed, sequences drawn so far), so the sampler's whole
state is two integers, the current weights, the counts drawn per domain and any exact plan: resuming
from them repeats and skips nothing, also when the weights change during the run (`set_weights`).
An exact plan (`set_weights(mixture, exact=n)`) draws the next n sequences with exactly the
largest-remainder counts of the mixture, in random order (online methods that probe one domain for
a few steps need exact counts, not a multinomial draw).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from regmix.core.mixture import Mixture
from regmix.data.corpus import CorpusManifest


class TokenStream:
    """A domain's shards as one read-only token sequence; windows shorter than it wrap around."""

    def __init__(self, shards: Sequence[np.ndarray]):
        self.shards = [s for s in shards if len(s)]
        if not self.shards:
            raise ValueError("a token stream needs at least one non-empty shard")
        self.starts = np.cumsum([0] + [len(s) for s in self.shards])
        self.total = int(self.starts[-1])

    def window(self, start: int, length: int) -> np.ndarray:
        """`length` tokens from position `start` on, continuing into the next shards (and from the top)."""
        out = np.empty(length, dtype=np.int64)
        filled, position = 0, start % self.total
        while filled < length:
            index = int(np.searchsorted(self.starts, position, side="right")) - 1
            shard, offset = self.shards[index], position - int(self.starts[index])
            piece = shard[offset:offset + length - filled]
            out[filled:filled + len(piece)] = piece
            filled += len(piece)
            position = (position + len(piece)) % self.total
        return out

    def random_starts(self, rng: np.random.Generator, count: int, length: int) -> np.ndarray:
        """Window starts, uniform over all windows that fit (position 0 if the stream is too short)."""
        return rng.integers(0, max(self.total - length, 0) + 1, size=count)


class MixtureSampler:
    """Random (micro_batch, block_size + 1) token batches from the training domains of a mixture.

    A domain's shards are opened on its first draw, so a domain with weight 0 is never read.
    `set_weights` changes the mixture from the next batch on (for online mixing methods).
    """

    def __init__(self, manifest: CorpusManifest, mixture: Mixture, block_size: int, seed: int):
        self.manifest = manifest
        self.block_size = block_size
        self.seed = seed
        self.drawn = 0
        self.streams: dict[str, TokenStream] = {}
        self.counts: dict[str, int] = {}
        self.plan: dict[str, int] = {}  # sequences still to draw per domain under an exact plan
        self.set_weights(mixture)

    def set_weights(self, mixture: Mixture, exact: int = 0) -> None:
        """Sample `mixture` from the next batch on; `exact` > 0: the next `exact` sequences have exactly
        its largest-remainder counts (then sampling by weight resumes)."""
        self.mixture = mixture
        self.domains = mixture.active()
        weights = np.array([mixture[d] for d in self.domains])
        self.cumulative = np.cumsum(weights / weights.sum())
        self.plan = exact_counts(mixture, exact) if exact > 0 else {}

    def _picks(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Domain index (into self.domains) of each of the next `count` sequences."""
        planned = np.repeat([self.domains.index(d) for d in self.plan], list(self.plan.values()))
        planned = rng.permutation(planned)[:count]
        for index, taken in zip(*np.unique(planned, return_counts=True)):
            domain = self.domains[index]
            self.plan[domain] -= int(taken)
            if not self.plan[domain]:
                del self.plan[domain]
        rest = np.minimum(np.searchsorted(self.cumulative, rng.random(count - len(planned)), side="right"),
                          len(self.domains) - 1)
        return np.concatenate([planned, rest]).astype(np.int64)

    def _stream(self, domain: str) -> TokenStream:
        if domain not in self.streams:
            self.streams[domain] = TokenStream(self.manifest.open_tokens("train", domain))
        return self.streams[domain]

    def sequences(self, domain: str, count: int, key: Sequence[int]) -> torch.Tensor:
        """`count` random training windows of a domain, drawn by a generator of (seed, *key): probes of
        online methods, which change neither the batches, the counts nor the sampler's state."""
        rng = np.random.default_rng([self.seed, *key])
        stream, length = self._stream(domain), self.block_size + 1
        starts = stream.random_starts(rng, count, length)
        return torch.from_numpy(np.stack([stream.window(int(s), length) for s in starts]))

    def next_batch(self, size: int, part: tuple[int, int] = (0, 1)) -> torch.Tensor:
        """The next `size` sequences of block_size + 1 tokens (inputs and shifted targets).

        `part = (rank, world)`: the sampler draws `size * world` sequences and returns rank's share,
        so data-parallel processes see one data stream (and counts) whatever their number.
        """
        rank, world = part
        rng = np.random.default_rng([self.seed, self.drawn])
        picks = self._picks(rng, size * world)
        length = self.block_size + 1
        batch = np.empty((size, length), dtype=np.int64)
        for index in np.unique(picks):
            domain = self.domains[index]
            rows = np.flatnonzero(picks == index)
            stream = self._stream(domain)
            starts = stream.random_starts(rng, len(rows), length)
            mine = rows // size == rank
            for row, start in zip(rows[mine] - rank * size, starts[mine]):
                batch[row] = stream.window(int(start), length)
            self.counts[domain] = self.counts.get(domain, 0) + len(rows)
        self.drawn += size * world
        return torch.from_numpy(batch)

    def state_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "drawn": self.drawn, "weights": self.mixture.to_dict(),
                "counts": dict(self.counts), "plan": dict(self.plan)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seed, self.drawn = int(state["seed"]), int(state["drawn"])
        self.counts = dict(state["counts"])
        self.set_weights(Mixture.from_dict(state["weights"]))
        self.plan = {d: int(n) for d, n in state.get("plan", {}).items()}


def exact_counts(mixture: Mixture, total: int) -> dict[str, int]:
    """Sequences per active domain summing to `total`, proportional to the weights (largest remainder)."""
    domains = mixture.active()
    shares = np.array([mixture[d] for d in domains]) / sum(mixture[d] for d in domains) * total
    counts = np.floor(shares).astype(np.int64)
    counts[np.argsort(-(shares - counts), kind="stable")[:total - int(counts.sum())]] += 1
    return {d: int(n) for d, n in zip(domains, counts) if n}
