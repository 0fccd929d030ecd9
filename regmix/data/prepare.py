"""Corpus preparation: RegMix-layout JSONL in, memory-mappable token shards and a manifest out.

Input: `<source>/train/<domain>_<k>.<format>` and `<source>/valid/<domain>.<format>`, each document's
`text`; formats: `.jsonl`, `.jsonl.gz`, `.jsonl.zst`, `.json.gz`, `.json.zst`, `.parquet` and a `datasets`
folder's `.arrow` (regmix.data.readers). Output: one shard per source file, `<output>/<split>/<stem>.bin`
(token ids, each document followed by end-of-text; uint16 when the vocabulary fits, else uint32),
and `<output>/manifest.json` with the sha256 of every source and shard. Incremental: a shard whose
source file and tokenizer are unchanged, and whose own size, token ids and sha256 still hold, is kept;
the manifest is saved after every shard tokenized, so an interrupted run loses nothing it finished.
Shards and manifest are written whole (temporary file, fsync, rename): a crash or a full disk leaves
the previous files. Tokenization runs on all cores (the tokenizers library's thread pool, --workers).

`--verify` prepares nothing: it reads the prepared corpus at --output whole and checks every shard's
size, token ids and sha256 against the manifest (manifests written before shard checksums were
recorded: sizes and token ids only, and it says so).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from regmix.cli import ArgumentParser, integer_at_least, run_command
from regmix.core.files import ConfigError, replace_atomic, write_atomic
from regmix.data.corpus import (
    MANIFEST_NAME,
    SPLITS,
    CorpusManifest,
    Shard,
    load_manifest,
    read_manifest,
    verify_corpus,
    verify_shard,
)
from regmix.data.readers import SUFFIXES, document_suffix, iter_texts, stem, unsupported

TRAIN_FILE = re.compile(r"^(?P<domain>.+)_(?P<k>\d+)$")  # file names without their document suffix
VALID_FILE = re.compile(r"^(?P<domain>.+)$")
BATCH_DOCUMENTS = 1024
DEFAULT_VOCAB_SIZE = 8192
MIN_VOCAB_SIZE = 257  # a byte-level BPE's 256 byte symbols and <|endoftext|>
BPE_SAMPLE_BYTES = 16_000_000
LAYOUT = f"expected train/<domain>_<k>.<format> and valid/<domain>.<format>, formats {', '.join(SUFFIXES)}"


def check_source(source: Path) -> Path:
    """The corpus folder, if it is one (its layout is find_sources' to check)."""
    if not source.exists():
        raise ConfigError(source, f"no such folder ({LAYOUT})")
    if not source.is_dir():
        raise ConfigError(source, f"is a file, not a corpus folder ({LAYOUT})")
    return source


def check_output(output: Path) -> Path:
    """The folder for shards and manifest.json: new or existing, not a file."""
    if output.exists() and not output.is_dir():
        raise ConfigError(output, "is a file, not a folder for the shards and manifest.json; choose another --output")
    return output


def check_vocab_size(vocab_size: int) -> int:
    """The vocabulary of a BPE trained here, if it holds the bytes and end-of-text (the trainer silently grows it)."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(f"vocab_size {vocab_size} is too small: a byte-level BPE needs at least {MIN_VOCAB_SIZE} "
                         "tokens (256 bytes and end-of-text)")
    return vocab_size


def find_sources(source: Path) -> dict[str, dict[str, list[Path]]]:
    """Source files per split and domain, in RegMix's layout; layout mistakes name the file or folder."""
    check_source(source)
    found: dict[str, dict[str, list[Path]]] = {split: {} for split in SPLITS}
    for split, pattern in (("train", TRAIN_FILE), ("valid", VALID_FILE)):
        folder = source / split
        if not folder.is_dir():
            raise ConfigError(source, f"no {split}/ folder: {LAYOUT}")
        name = "<domain>_<k>" if split == "train" else "<domain>"
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if unsupported(path):
                raise ConfigError(path, f"prepare does not read this format; supported: {', '.join(SUFFIXES)}")
            if document_suffix(path) is None:
                continue
            match = pattern.match(stem(path))
            if not match:
                raise ConfigError(path, f"name must be {name}.<format> ({', '.join(SUFFIXES)})")
            found[split].setdefault(match["domain"], []).append(path)
        if not found[split]:
            raise ConfigError(folder, f"no {name}.<format> files ({', '.join(SUFFIXES)})")
        for domain, paths in found[split].items():
            stems = [stem(p) for p in paths]
            if len(set(stems)) < len(stems):
                raise ConfigError(folder, f"{domain}: two files of one name in two formats {sorted(map(str, paths))}; "
                                          "keep one")
    return found


def token_dtype(vocab_size: int) -> str:
    """The smallest unsigned type that holds every token id."""
    return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "uint32"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _tokenize_file(tokenizer: Any, manifest: CorpusManifest, source: Path, target: Path) -> tuple[int, int, str]:
    """Stream one source file into a shard written whole or not at all; (tokens, documents, shard sha256)."""
    eos = np.array([manifest.tokenizer.eos_id], dtype=np.int64)
    digest = hashlib.sha256()
    tokens = documents = 0

    def write(tmp: Path) -> None:
        nonlocal tokens, documents
        texts = iter_texts(source)
        with tmp.open("wb") as fh:
            while batch := [t for _, t in zip(range(BATCH_DOCUMENTS), texts)]:
                block = np.concatenate([part for e in tokenizer.encode_batch(batch, add_special_tokens=False)
                                        for part in (np.asarray(e.ids, dtype=np.int64), eos)])
                manifest.check_token_ids(target, int(block.max()))  # before the cast, which would wrap it
                block = block.astype(manifest.dtype)
                fh.write(block.tobytes())
                digest.update(block)
                tokens += len(block)
                documents += len(batch)
            if not documents:
                raise ConfigError(source, "no documents (every line is blank or has an empty 'text'), so no tokens "
                                          "for its domain; add text or remove the file")
            fh.flush()
            os.fsync(fh.fileno())

    replace_atomic(target, write)
    return tokens, documents, digest.hexdigest()


def _still_good(manifest: CorpusManifest, old: Shard | None, source_sha256: str) -> Shard | None:
    """The previous shard of an unchanged source if its size, token ids and sha256 still hold (with its sha256)."""
    if old is None or old.source_sha256 != source_sha256 or not old.documents:
        return None
    try:
        return dataclasses.replace(old, sha256=verify_shard(manifest, old))
    except ConfigError:
        return None


def _train_tokenizer(sources: dict[str, dict[str, list[Path]]], vocab_size: int, output: Path) -> Path:
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


def _previous_shards(output: Path, tokenizer_sha256: str, dtype: str) -> dict[str, Shard]:
    """Shards of the manifest already in `output`, by path, if made by this tokenizer (else none: prepare anew)."""
    try:
        old = read_manifest(output) if (output / MANIFEST_NAME).exists() else None
    except ConfigError:  # an older format or a damaged file: prepare everything anew
        return {}
    if old is None or old.tokenizer.sha256 != tokenizer_sha256 or old.dtype != dtype:
        return {}
    return {s.path: s for s in old.all_shards()}


def prepare(source: str | os.PathLike, output: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
            vocab_size: int = DEFAULT_VOCAB_SIZE, workers: int | None = None,
            progress: bool = True) -> CorpusManifest:
    """Tokenize a RegMix-layout corpus into packed shards and write its manifest (incrementally)."""
    from regmix.data.tokenizer import TOKENIZER_NAME, load_tokenizer

    os.environ.setdefault("RAYON_NUM_THREADS", str(workers or os.cpu_count() or 1))
    source, output = Path(source), check_output(Path(output))
    sources = find_sources(source)
    if tokenizer is None:
        check_vocab_size(vocab_size)
        tokenizer = output / "tokenizer" / TOKENIZER_NAME
        trained_for = tokenizer.parent / "vocab_size"
        if not (tokenizer.exists() and trained_for.exists()) or trained_for.read_text().strip() != str(vocab_size):
            _train_tokenizer(sources, vocab_size, tokenizer.parent)
            write_atomic(trained_for, f"{vocab_size}\n")
    tok, info = load_tokenizer(tokenizer)
    dtype = token_dtype(info.vocab_size)
    previous = _previous_shards(output, info.sha256, dtype)

    manifest = CorpusManifest(output, str(source.resolve()), info, dtype)
    todo = [(split, domain, path) for split in SPLITS for domain, paths in sources[split].items() for path in paths]
    manifest.shards = {split: {domain: [] for domain in sorted(sources[split])} for split in SPLITS}
    bar = tqdm(todo, desc="prepare", unit="file", disable=None if progress else True)  # None: a terminal only
    done = 0
    for split, domain, path in bar:
        rel = f"{split}/{stem(path)}.bin"
        sha = file_sha256(path)
        shard = _still_good(manifest, previous.get(rel), sha)
        if shard is None:
            bar.set_postfix_str(path.name)
            tokens, documents, shard_sha = _tokenize_file(tok, manifest, path, output / rel)
            shard = Shard(rel, str(path.relative_to(source)), sha, tokens, documents, shard_sha)
            done += 1
            manifest.shards[split][domain].append(shard)
            manifest.save()
        else:
            manifest.shards[split][domain].append(shard)
    manifest.save()
    _remove_stale(output, manifest)  # after the save: the manifest on disk never lists a deleted shard
    if progress:
        print(f"prepared {len(todo)} files ({done} tokenized, {len(todo) - done} up to date) into {output}/")
    return manifest


def _remove_stale(output: Path, manifest: CorpusManifest) -> None:
    """Delete shards whose source file is gone, so the folder matches its manifest."""
    live = {s.path for s in manifest.all_shards()}
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


def _path_argument(check: Callable[[Path], Path]) -> Callable[[str], Path]:
    """An argparse type from a path check: its ConfigError becomes argparse's one-line error naming the flag."""
    def parse(text: str) -> Path:
        try:
            return check(Path(text))
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def main(argv: Sequence[str] | None = None) -> CorpusManifest:
    p = ArgumentParser(prog="python -m regmix.prepare", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", nargs="?", type=_path_argument(check_source), default=None,
                   help="corpus folder in RegMix's layout (default: build the embedded default corpus "
                        "into OUTPUT/raw first)")
    p.add_argument("--output", type=_path_argument(check_output), default="data/default",
                   help="folder for shards and manifest.json (default: %(default)s)")
    p.add_argument("--tokenizer", type=Path, help="tokenizer.json (or its folder); default: train a BPE")
    p.add_argument("--vocab-size", type=integer_at_least(MIN_VOCAB_SIZE), default=DEFAULT_VOCAB_SIZE,
                   help=f"vocabulary of the trained BPE, at least {MIN_VOCAB_SIZE} (256 bytes and end-of-text) "
                        "(default: %(default)s)")
    p.add_argument("--workers", type=integer_at_least(0), default=0,
                   help="threads for tokenization; 0 = one per core (default)")
    p.add_argument("--verify", action="store_true",
                   help="prepare nothing: read the prepared corpus at --output whole and check every shard's "
                        "size, token ids and sha256 against its manifest (exit 2 naming the first bad shard)")
    args = p.parse_args(argv)
    if args.verify:
        if args.source is not None:
            p.error("--verify checks the prepared corpus at --output and takes no SOURCE")
        manifest = load_manifest(args.output)
        print(verify_corpus(manifest).summary())
        return manifest
    source = args.source
    if source is None:
        from regmix.data.default_corpus import build_default_corpus
        source = args.output / "raw"
        if not (source / "train").is_dir():
            build_default_corpus(source)
    manifest = prepare(source, args.output, args.tokenizer, args.vocab_size, args.workers)
    print(describe(manifest))
    return manifest


if __name__ == "__main__":
    raise SystemExit(run_command(main))
