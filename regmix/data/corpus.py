"""The prepared corpus: packed token shards per domain and the manifest that describes them.

`regmix.prepare` writes it; the trainer memory-maps the shards; synthesis and simulation take the
token distribution from it. Shard layout: `<root>/<split>/<domain>_<k>.bin`, a flat array of token
ids (documents each followed by the tokenizer's end-of-text id) in the manifest's dtype.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from regmix.files import ConfigError, read_json_in, write_atomic
from regmix.mixture import Mixture

MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "valid")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class TokenizerInfo:
    """Which tokenizer made the shards; its hash decides whether shards are still up to date."""

    name: str
    sha256: str
    vocab_size: int
    eos_id: int
    path: str


@dataclass(frozen=True)
class Shard:
    """One packed shard, made from one source file."""

    path: str
    source: str
    source_sha256: str
    tokens: int
    documents: int


@dataclass
class CorpusManifest:
    """Domains, token counts per split, tokenizer identity and checksums of a prepared corpus."""

    root: Path
    source: str
    tokenizer: TokenizerInfo
    dtype: str
    shards: dict[str, dict[str, list[Shard]]] = field(default_factory=lambda: {s: {} for s in SPLITS})

    @property
    def train_domains(self) -> tuple[str, ...]:
        return tuple(self.shards["train"])

    @property
    def valid_domains(self) -> tuple[str, ...]:
        """Validation domains with tokens (an empty valid file cannot validate anything)."""
        return tuple(d for d in self.shards["valid"] if self.tokens("valid", d) > 0)

    def absolute(self) -> CorpusManifest:
        """The same manifest with an absolute root: for tasks that run in another folder or on another node."""
        return dataclasses.replace(self, root=Path(self.root).resolve())

    def tokens(self, split: str, domain: str) -> int:
        return sum(s.tokens for s in self.shards[split].get(domain, []))

    def empty_domains(self, split: str) -> tuple[str, ...]:
        return tuple(d for d in self.shards[split] if self.tokens(split, d) == 0)

    def token_distribution(self) -> Mixture:
        """Share of training tokens per domain: the natural mixture and the synthesis prior."""
        counts = {d: self.tokens("train", d) for d in self.train_domains}
        return Mixture.from_dict(counts, self.root / MANIFEST_NAME, normalize=True)

    def shard_paths(self, split: str, domain: str) -> list[Path]:
        return [self.root / s.path for s in self.shards[split][domain]]

    def open_tokens(self, split: str, domain: str) -> list[np.ndarray]:
        """Read-only memory maps of a domain's shards (empty shards left out)."""
        return [np.memmap(p, dtype=self.dtype, mode="r") for p, s in
                zip(self.shard_paths(split, domain), self.shards[split][domain]) if s.tokens > 0]

    def to_json(self) -> str:
        data = {
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "tokenizer": asdict(self.tokenizer),
            "dtype": self.dtype,
            "tokens": {split: {d: self.tokens(split, d) for d in self.shards[split]} for split in SPLITS},
            "shards": {split: {d: [asdict(s) for s in v] for d, v in self.shards[split].items()}
                       for split in SPLITS},
        }
        return json.dumps(data, indent=1)

    def save(self) -> Path:
        path = self.root / MANIFEST_NAME
        write_atomic(path, self.to_json())
        return path


def load_manifest(path: str | os.PathLike) -> CorpusManifest:
    """Load a manifest from its file or from the prepared corpus folder holding it."""
    path, data = read_json_in(path, MANIFEST_NAME, "no prepared corpus here (run `python -m regmix.prepare` first)")
    try:
        if data.get("format_version") != FORMAT_VERSION:
            raise ConfigError(path, f"manifest format {data.get('format_version')} is not {FORMAT_VERSION}; "
                                    "prepare the corpus again")
        shards = {split: {d: [Shard(**s) for s in v] for d, v in data["shards"][split].items()}
                  for split in SPLITS}
        manifest = CorpusManifest(path.parent, data["source"], TokenizerInfo(**data["tokenizer"]),
                                  data["dtype"], shards)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(path, f"malformed manifest ({exc})") from None
    if not manifest.train_domains:
        raise ConfigError(path, "the corpus has no training domains")
    return manifest
