"""The prepared corpus: packed token shards per domain and the manifest that describes them.

`regmix.prepare` writes it; the trainer memory-maps the shards; synthesis and simulation take the
token distribution from it. Shard layout: `<root>/<split>/<domain>_<k>.bin`, a flat array of token
ids (documents each followed by the tokenizer's end-of-text id) in the manifest's dtype.

A corpus is checked where it is opened: `load_manifest` refuses a malformed manifest, a shard path
outside the folder and any shard whose size is not its token count (a stat each), and scans token ids
against the vocabulary while the corpus is small (`LOAD_SCAN_TOKENS`); `verify_corpus` reads every
shard whole (token ids and the sha256 prepare recorded), once per sweep or by `prepare --verify`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from regmix.core.files import ConfigError, read_json_in, write_bytes_atomic
from regmix.core.mixture import Mixture

MANIFEST_NAME = "manifest.json"
SPLITS = ("train", "valid")
FORMAT_VERSION = 1
SHARD_DTYPES = ("uint16", "uint32")
LOAD_SCAN_TOKENS = 1 << 25  # token ids checked at load up to this size (~10 ms warm); beyond it verify_corpus
READ_BLOCK = 1 << 22  # bytes per read when hashing: constant memory, a multiple of every dtype's size
PREPARE_AGAIN = "prepare the corpus again (python -m regmix.prepare)"


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
    """One packed shard, made from one source file; `sha256` is the shard file's ("" in older manifests)."""

    path: str
    source: str
    source_sha256: str
    tokens: int
    documents: int
    sha256: str = ""


@dataclass(frozen=True)
class Verified:
    """What `verify_corpus` read: every shard whole, and how many of them had a checksum to compare."""

    shards: int
    tokens: int
    checksums: int

    def summary(self) -> str:
        checked = f"verified {self.shards} shards ({self.tokens:,} tokens): sizes and token ids"
        if self.checksums == self.shards:
            return f"{checked} and sha256 checksums"
        return (f"{checked}; cannot verify the checksums of {self.shards - self.checksums} shards: the manifest "
                "was written before shard checksums were recorded (prepare the corpus again to record them)")


@dataclass
class CorpusManifest:
    """Domains, token counts per split, tokenizer identity and checksums of a prepared corpus."""

    root: Path
    source: str
    tokenizer: TokenizerInfo
    dtype: str
    shards: dict[str, dict[str, list[Shard]]] = field(default_factory=lambda: {s: {} for s in SPLITS})

    @property
    def name(self) -> str:
        """The corpus's name, its folder's (`data/pile` -> `pile`): each run records it, and it names the loss CSV."""
        return Path(self.root).resolve().name

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

    def unvalidated_domains(self) -> tuple[str, ...]:
        """Training domains without validation tokens: no run measures them, so no objective can name them."""
        return tuple(d for d in self.train_domains if d not in self.valid_domains)

    def all_shards(self) -> list[Shard]:
        return [s for split in SPLITS for shards in self.shards[split].values() for s in shards]

    def token_distribution(self) -> Mixture:
        """Share of training tokens per domain: the natural mixture and the synthesis prior."""
        counts = {d: self.tokens("train", d) for d in self.train_domains}
        return Mixture.from_dict(counts, self.root / MANIFEST_NAME, normalize=True)

    def uniform(self, domains: Sequence[str] | None = None) -> Mixture:
        """Equal weight on every training domain with tokens (a domain without any cannot be sampled), of
        `domains` if given, over those domains."""
        domains = self.train_domains if domains is None else tuple(domains)
        return Mixture.uniform([d for d in domains if self.tokens("train", d) > 0]).on_domains(domains)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies the prepared corpus for a study: its tokenizer and tokens per split and domain."""
        return {"tokenizer": self.tokenizer.sha256,
                "tokens": {s: {d: self.tokens(s, d) for d in self.shards[s]} for s in SPLITS}}

    def open_tokens(self, split: str, domain: str) -> list[np.ndarray]:
        """Read-only memory maps of a domain's shards (empty shards left out), each of the manifest's size."""
        return [self.open_shard(s) for s in self.shards[split][domain] if s.tokens > 0]

    def open_shard(self, shard: Shard) -> np.memmap:
        """A shard's tokens, memory-mapped after its size is checked (it may have changed since loading)."""
        return np.memmap(self.check_size(shard), dtype=self.dtype, mode="r", shape=(shard.tokens,))

    def check_size(self, shard: Shard) -> Path:
        """The shard's file, if it holds exactly the manifest's token count; else a ConfigError naming it."""
        path = self.root / shard.path
        itemsize = np.dtype(self.dtype).itemsize
        expected = shard.tokens * itemsize
        try:
            status = path.stat()
        except FileNotFoundError:
            raise ConfigError(path, f"missing, the manifest lists it with {shard.tokens} tokens: deleted or moved "
                                    f"after prepare; {PREPARE_AGAIN}") from None
        except OSError as exc:
            raise ConfigError(path, f"cannot read: {exc.strerror}") from None
        if not stat.S_ISREG(status.st_mode):
            raise ConfigError(path, f"not a file; {PREPARE_AGAIN}")
        size = status.st_size
        if size % itemsize:
            raise ConfigError(path, f"{size} bytes is not a whole number of {self.dtype} tokens ({itemsize} bytes "
                                    f"each): damaged after prepare; {PREPARE_AGAIN}")
        if size != expected:
            change = "truncated" if size < expected else "grown"
            raise ConfigError(path, f"{size} bytes, the manifest says {shard.tokens} tokens ({expected} bytes): "
                                    f"{change} or replaced after prepare; {PREPARE_AGAIN}")
        return path

    def check_token_ids(self, path: Path, largest: int) -> None:
        """A ConfigError naming the shard if its largest token id is not in the tokenizer's vocabulary."""
        if largest >= self.tokenizer.vocab_size:
            raise ConfigError(path, f"token id {largest} is beyond the vocabulary of {self.tokenizer.vocab_size} "
                                    f"ids of tokenizer '{self.tokenizer.name}': made by another tokenizer or "
                                    f"damaged; {PREPARE_AGAIN}")

    def check_shards(self) -> None:
        """Every shard's size; its token ids too while the corpus is small enough to scan in milliseconds."""
        shards = self.all_shards()
        for shard in shards:
            self.check_size(shard)
        if sum(s.tokens for s in shards) <= LOAD_SCAN_TOKENS:
            for shard in shards:
                if shard.tokens:
                    self.check_token_ids(self.root / shard.path, int(self.open_shard(shard).max()))

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
        """Write manifest.json whole (temporary file, fsync, rename): a crash or a full disk leaves the old one."""
        path = self.root / MANIFEST_NAME
        write_bytes_atomic(path, self.to_json().encode("utf-8"))
        return path


def _scan_shard(path: Path, dtype: str) -> tuple[str, int]:
    """The sha256 and the largest token id of a shard file, read once in blocks (constant memory)."""
    digest, largest = hashlib.sha256(), -1
    with path.open("rb") as fh:
        while block := fh.read(READ_BLOCK):
            digest.update(block)
            largest = max(largest, int(np.frombuffer(block, dtype=dtype).max()))
    return digest.hexdigest(), largest


def verify_shard(manifest: CorpusManifest, shard: Shard) -> str:
    """Read one shard whole: a ConfigError naming it unless its size, token ids and sha256 (if recorded) hold;
    its sha256."""
    path = manifest.check_size(shard)
    sha256, largest = _scan_shard(path, manifest.dtype)
    manifest.check_token_ids(path, largest)
    if shard.sha256 and sha256 != shard.sha256:
        raise ConfigError(path, f"sha256 {sha256[:16]}... is not the manifest's {shard.sha256[:16]}... (same "
                                f"size): changed after prepare; {PREPARE_AGAIN}")
    return sha256


def verify_corpus(manifest: CorpusManifest, threads: int = 8) -> Verified:
    """Check every shard whole against the manifest; a ConfigError names the first bad shard.

    Reads the whole corpus once (sha256 runs at 1-2 GB/s a core; shards are read `threads` at a time),
    so a sweep calls it once before training, not every run. Manifests written before shard checksums
    were recorded get sizes and token ids only: `Verified.checksums` says how many were compared.
    """
    shards = manifest.all_shards()
    for shard in shards:  # a missing or truncated shard is reported at once, not after hashing the rest
        manifest.check_size(shard)
    pool = ThreadPoolExecutor(max(1, min(threads, len(shards))))
    try:
        list(pool.map(lambda s: verify_shard(manifest, s), shards))
    finally:
        pool.shutdown(cancel_futures=True)
    return Verified(len(shards), sum(s.tokens for s in shards), sum(bool(s.sha256) for s in shards))


def _parse_shard(split: str, data: Any) -> Shard:
    shard = Shard(**data)
    if not isinstance(shard.path, str) or not re.fullmatch(rf"{split}/[^/\\\0]+\.bin", shard.path):
        raise ValueError(f"shard path {shard.path!r} is not {split}/<name>.bin inside the corpus folder")
    for name in ("tokens", "documents"):
        value = getattr(shard, name)
        if type(value) is not int or value < 0:
            raise ValueError(f"{shard.path}: {name} {value!r} is not a count")
    if not isinstance(shard.sha256, str):
        raise ValueError(f"{shard.path}: sha256 {shard.sha256!r} is not a string")
    return shard


def _parse_manifest(root: Path, data: Any) -> CorpusManifest:
    """The manifest of a parsed manifest.json; KeyError/TypeError/ValueError on a malformed one."""
    tokenizer = TokenizerInfo(**data["tokenizer"])
    if type(tokenizer.vocab_size) is not int or tokenizer.vocab_size < 1:
        raise ValueError(f"vocab_size {tokenizer.vocab_size!r} is not a positive integer")
    if type(tokenizer.eos_id) is not int or not 0 <= tokenizer.eos_id < tokenizer.vocab_size:
        raise ValueError(f"eos_id {tokenizer.eos_id!r} is not in the vocabulary")
    dtype = data["dtype"]
    if dtype not in SHARD_DTYPES:
        raise ValueError(f"dtype {dtype!r} is not one of {SHARD_DTYPES}")
    if tokenizer.vocab_size > np.iinfo(dtype).max + 1:
        raise ValueError(f"dtype {dtype} cannot hold the token ids of a vocabulary of {tokenizer.vocab_size}")
    shards = {split: {d: [_parse_shard(split, s) for s in v] for d, v in data["shards"][split].items()}
              for split in SPLITS}
    return CorpusManifest(root, data["source"], tokenizer, dtype, shards)


def read_manifest(path: str | os.PathLike) -> CorpusManifest:
    """The manifest in a file or prepared corpus folder, its shards unchecked (prepare checks each one it keeps)."""
    path, data = read_json_in(path, MANIFEST_NAME, "no prepared corpus here (run `python -m regmix.prepare` first)")
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        version = data.get("format_version") if isinstance(data, dict) else None
        raise ConfigError(path, f"manifest format {version} is not {FORMAT_VERSION}; {PREPARE_AGAIN}")
    try:
        manifest = _parse_manifest(path.parent, data)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise ConfigError(path, f"malformed manifest ({exc}); {PREPARE_AGAIN}") from None
    if not manifest.train_domains:
        raise ConfigError(path, "the corpus has no training domains")
    return manifest


def load_manifest(path: str | os.PathLike) -> CorpusManifest:
    """Load a manifest from its file or from the prepared corpus folder holding it, and check its shards."""
    manifest = read_manifest(path)
    manifest.check_shards()
    return manifest


def unvalidated_warning(domains: Sequence[str]) -> str | None:
    """The warning prepare and synthesize print for training domains without validation data."""
    if not domains:
        return None
    them = "it" if len(domains) == 1 else "them"
    return (f"warning: no validation data for {', '.join(domains)}: the proxies' configs leave {them} out of "
            f"'valid:', so no run measures {them} and no objective can name {them}; give a valid file per domain "
            "(valid/<domain>_<k>.jsonl) or prepare with --valid-fraction")
