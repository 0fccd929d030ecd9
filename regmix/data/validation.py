"""The fixed validation windows of every valid domain, split by document into a probe part and a held-out part.

Methods may measure the probe part (online probes, grid and dml choices, the losses regressors are fit and
selected on); every run is scored on the held-out part (the run's `valid_losses`, reports, verification,
bench tables), so no method is scored on windows it chose by. The split is by document (no document in
both parts), seeded by `split_seed` and the domain name, and the same for every run of a corpus and
settings. Documents are taken whole in a seeded order until the probe part holds `probe_share` of the
tokens (at least one document each side); a domain of one document is cut at that share of its tokens.
With `probe_share: 0` there is no split: both parts are the whole valid stream (results before the split).

Only a prefix of a large valid stream is split (enough for `eval_tokens` in each part, four times over),
so a gigabyte valid file costs a few megabytes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from regmix.data.corpus import CorpusManifest
from regmix.data.sampler import TokenStream


@dataclass(frozen=True)
class ValidationSets:
    """Windows (rows of block_size + 1 tokens) per valid domain: `heldout` scores runs, `probe` is what methods
    may measure (the same tensors when there is no split)."""

    heldout: dict[str, torch.Tensor]
    probe: dict[str, torch.Tensor]

    @property
    def split(self) -> bool:
        return self.probe is not self.heldout


def split_documents(tokens: np.ndarray, eos_id: int, share: float, seed: Sequence[int]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(probe, held-out) token arrays: whole documents (each ending with `eos_id`) in a seeded order until the
    probe part holds `share` of the tokens, at least one document on each side."""
    ends = np.flatnonzero(tokens == eos_id) + 1
    if not len(ends) or ends[-1] != len(tokens):
        ends = np.append(ends, len(tokens))  # a last document without its end-of-text id
    starts = np.concatenate([[0], ends[:-1]])
    if len(ends) < 2:  # one document: cut it by tokens
        cut = min(max(int(round(share * len(tokens))), 1), len(tokens) - 1)
        return tokens[:cut], tokens[cut:]
    order = np.random.default_rng(list(seed)).permutation(len(ends))
    sizes = (ends - starts)[order]
    taken = int(np.searchsorted(np.cumsum(sizes), share * len(tokens))) + 1
    taken = min(max(taken, 1), len(ends) - 1)
    parts = [np.sort(order[:taken]), np.sort(order[taken:])]
    return tuple(np.concatenate([tokens[starts[i]:ends[i]] for i in part]) for part in parts)  # type: ignore[return-value]


def windows(stream: TokenStream, block_size: int, eval_tokens: int) -> torch.Tensor:
    """Evenly spaced windows covering up to `eval_tokens` targets of a stream (all of a shorter one)."""
    length = block_size + 1
    count = max(1, min(eval_tokens, stream.total - 1) // block_size)
    starts = np.linspace(0, max(stream.total - length, 0), count).round().astype(np.int64)
    return torch.from_numpy(np.stack([stream.window(int(s), length) for s in starts]))


def domain_seed(domain: str, split_seed: int) -> list[int]:
    return [split_seed, zlib.crc32(domain.encode())]


def validation_sets(manifest: CorpusManifest, domains: Sequence[str], block_size: int, eval_tokens: int,
                    probe_share: float = 0.0, split_seed: int = 0) -> ValidationSets:
    """The validation windows of each valid domain with tokens (empty domains are left out), split by document
    into the probe and held-out parts when `probe_share` > 0."""
    empty = set(manifest.empty_domains("valid"))
    domains = [d for d in domains if d not in empty]
    if probe_share <= 0:
        whole = {d: windows(TokenStream(manifest.open_tokens("valid", d)), block_size, eval_tokens) for d in domains}
        return ValidationSets(whole, whole)
    need = 4 * int(np.ceil((eval_tokens + block_size + 1) / min(probe_share, 1 - probe_share)))
    heldout, probe = {}, {}
    for domain in domains:
        stream = TokenStream(manifest.open_tokens("valid", domain))
        tokens = stream.window(0, min(need, stream.total))
        if len(tokens) < stream.total:  # end the prefix at a document border
            ends = np.flatnonzero(tokens == manifest.tokenizer.eos_id)
            tokens = tokens[:ends[-1] + 1] if len(ends) else tokens
        parts = split_documents(tokens, manifest.tokenizer.eos_id, probe_share, domain_seed(domain, split_seed))
        probe[domain], heldout[domain] = (windows(TokenStream([p]), block_size, eval_tokens) for p in parts)
    return ValidationSets(heldout, probe)
