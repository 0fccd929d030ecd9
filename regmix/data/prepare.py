"""Corpus preparation: RegMix-layout JSONL in, memory-mappable token shards and a manifest out.

Input: `<source>/train/<domain>_<k>.jsonl[.gz]` and `<source>/valid/<domain>.jsonl[.gz]`, one JSON
object per line with a `text` field. Output: one shard per source file, `<output>/<split>/<stem>.bin`
(token ids, each document followed by end-of-text; uint16 when the vocabulary fits, else uint32),
and `<output>/manifest.json`. Incremental: a shard whose source file and tokenizer are unchanged is
kept; the manifest is saved after every shard, so an interrupted run loses nothing it finished.
Tokenization runs on all cores (the tokenizers library's thread pool, sized by --workers).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm import tqdm

from regmix.data.corpus import SPLITS, CorpusManifest, Shard, load_manifest
from regmix.files import ConfigError, write_atomic

TRAIN_FILE = re.compile(r"^(?P<domain>.+)_(?P<k>\d+)\.jsonl(?:\.gz)?$")
VALID_FILE = re.compile(r"^(?P<domain>.+?)\.jsonl(?:\.gz)?$")
BATCH_DOCUMENTS = 1024
DEFAULT_VOCAB_SIZE = 8192
BPE_SAMPLE_BYTES = 16_000_000


def find_sources(source: Path) -> dict[str, dict[str, list[Path]]]:
    """Source files per split and domain, in RegMix's layout; layout mistakes name the file."""
    if not (source / "train").is_dir():
        raise ConfigError(source, "no train/ folder: expected train/<domain>_<k>.jsonl and valid/<domain>.jsonl")
    found: dict[str, dict[str, list[Path]]] = {split: {} for split in SPLITS}
    for split, pattern in (("train", TRAIN_FILE), ("valid", VALID_FILE)):
        folder = source / split
        files = sorted(folder.iterdir()) if folder.is_dir() else []
        for path in files:
            if path.name.startswith(".") or not re.search(r"\.jsonl(\.gz)?$", path.name):
                continue
            match = pattern.match(path.name)
            if not match:
                raise ConfigError(path, f"name must be {'<domain>_<k>' if split == 'train' else '<domain>'}.jsonl[.gz]")
            found[split].setdefault(match["domain"], []).append(path)
    if not found["train"]:
        raise ConfigError(source / "train", "no <domain>_<k>.jsonl files")
    return found


def iter_texts(path: Path) -> Iterator[str]:
    """The `text` of each JSON line; a malformed line is an error naming the file and line."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError:
                    raise ConfigError(path, f"line {number} is not valid JSON") from None
                if not isinstance(record, dict) or "text" not in record:
                    raise ConfigError(path, f"line {number} has no 'text' field")
                if not isinstance(record["text"], str):
                    raise ConfigError(path, f"line {number}: 'text' is {type(record['text']).__name__}, not a string")
                if record["text"]:
                    yield record["text"]
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read: {exc}") from None


def token_dtype(vocab_size: int) -> str:
    """The smallest unsigned type that holds every token id."""
    return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "uint32"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tokenize_file(tokenizer, eos_id: int, source: Path, target: Path, dtype: str) -> tuple[int, int]:
    """Stream one source file into a shard; returns (tokens, documents)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".bin.tmp")
    tokens = documents = 0
    texts = iter_texts(source)
    with tmp.open("wb") as fh:
        while batch := [t for _, t in zip(range(BATCH_DOCUMENTS), texts)]:
            ids = [np.append(np.asarray(e.ids, dtype=dtype), np.array(eos_id, dtype=dtype))
                   for e in tokenizer.encode_batch(batch, add_special_tokens=False)]
            block = np.concatenate(ids)
            block.tofile(fh)
            tokens += len(block)
            documents += len(batch)
    tmp.replace(target)
    return tokens, documents


def _train_tokenizer(sources: dict[str, dict[str, list[Path]]], vocab_size: int, output: Path):
    """Train a BPE on an even share of every training domain's text."""
    from regmix.data.tokenizer import train_bpe

    per_domain = BPE_SAMPLE_BYTES // len(sources["train"])

    def sample() -> Iterator[str]:
        for paths in sources["train"].values():
            taken = 0
            for text in (t for p in paths for t in iter_texts(p)):
                if taken >= per_domain:
                    break
                taken += len(text)
                yield text

    return train_bpe(sample(), vocab_size, output)


def prepare(source: str | os.PathLike, output: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
            vocab_size: int = DEFAULT_VOCAB_SIZE, workers: int | None = None,
            progress: bool = True) -> CorpusManifest:
    """Tokenize a RegMix-layout corpus into packed shards and write its manifest (incrementally)."""
    from regmix.data.tokenizer import TOKENIZER_NAME, load_tokenizer

    os.environ.setdefault("RAYON_NUM_THREADS", str(workers or os.cpu_count() or 1))
    source, output = Path(source), Path(output)
    sources = find_sources(source)
    if tokenizer is None:
        tokenizer = output / "tokenizer" / TOKENIZER_NAME
        trained_for = tokenizer.parent / "vocab_size"
        if not (tokenizer.exists() and trained_for.exists()) or trained_for.read_text().strip() != str(vocab_size):
            _train_tokenizer(sources, vocab_size, tokenizer.parent)
            write_atomic(trained_for, f"{vocab_size}\n")
    tok, info = load_tokenizer(tokenizer)
    dtype = token_dtype(info.vocab_size)

    previous = {}
    try:
        old = load_manifest(output) if (output / "manifest.json").exists() else None
    except ConfigError:  # an older format or a damaged file: prepare everything anew
        old = None
    if old is not None:
        if old.tokenizer.sha256 == info.sha256 and old.dtype == dtype:
            previous = {s.path: s for split in SPLITS for shards in old.shards[split].values() for s in shards}

    manifest = CorpusManifest(output, str(source.resolve()), info, dtype)
    todo = [(split, domain, path) for split in SPLITS for domain, paths in sources[split].items() for path in paths]
    for split, domain in {(s, d) for s, d, _ in todo}:
        manifest.shards[split].setdefault(domain, [])
    manifest.shards = {s: dict(sorted(manifest.shards[s].items())) for s in SPLITS}
    bar = tqdm(todo, desc="prepare", unit="file", disable=not progress)
    done = 0
    for split, domain, path in bar:
        stem = re.sub(r"\.jsonl(\.gz)?$", "", path.name)
        rel = f"{split}/{stem}.bin"
        sha = file_sha256(path)
        old = previous.get(rel)
        target = output / rel
        if (old and old.source_sha256 == sha and target.exists()
                and target.stat().st_size == old.tokens * np.dtype(dtype).itemsize):
            shard = old
        else:
            bar.set_postfix_str(path.name)
            tokens, documents = _tokenize_file(tok, info.eos_id, path, target, dtype)
            shard = Shard(rel, str(path.relative_to(source)), sha, tokens, documents)
            done += 1
        manifest.shards[split][domain].append(shard)
        manifest.save()
    _remove_stale(output, manifest)
    manifest.save()
    if progress:
        print(f"prepared {len(todo)} files ({done} tokenized, {len(todo) - done} up to date) into {output}/")
    return manifest


def _remove_stale(output: Path, manifest: CorpusManifest) -> None:
    """Delete shards whose source file is gone, so the folder matches its manifest."""
    live = {s.path for split in SPLITS for shards in manifest.shards[split].values() for s in shards}
    for split in SPLITS:
        for path in (output / split).glob("*.bin"):
            if f"{split}/{path.name}" not in live:
                path.unlink()


def describe(manifest: CorpusManifest) -> str:
    """A table of tokens per domain and the token distribution."""
    share = manifest.token_distribution()
    rows = [f"{'domain':<24}{'train tokens':>14}{'valid tokens':>14}{'share':>8}"]
    for d in sorted(set(manifest.shards["train"]) | set(manifest.shards["valid"])):
        w = share.to_dict().get(d, 0.0)
        rows.append(f"{d:<24}{manifest.tokens('train', d):>14,}{manifest.tokens('valid', d):>14,}{w:>8.3f}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> CorpusManifest:
    p = argparse.ArgumentParser(prog="python -m regmix.prepare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", type=Path, default=None,
                   help="corpus folder in RegMix's layout (default: build the embedded default corpus "
                        "into OUTPUT/raw first)")
    p.add_argument("--output", type=Path, default=Path("data/default"),
                   help="folder for shards and manifest.json (default: %(default)s)")
    p.add_argument("--tokenizer", type=Path, help="tokenizer.json (or its folder); default: train a BPE")
    p.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE,
                   help="vocabulary of the trained BPE (default: %(default)s)")
    p.add_argument("--workers", type=int, default=os.cpu_count(), help="threads for tokenization")
    args = p.parse_args(argv)
    source = args.source
    try:
        if source is None:
            from regmix.data.default_corpus import build_default_corpus
            source = args.output / "raw"
            if not (source / "train").is_dir():
                build_default_corpus(source)
        manifest = prepare(source, args.output, args.tokenizer, args.vocab_size, args.workers)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(describe(manifest))
    return manifest


if __name__ == "__main__":
    main()
