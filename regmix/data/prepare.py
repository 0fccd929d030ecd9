"""Corpus preparation: RegMix-layout JSONL in, memory-mappable token shards and a manifest out.

Input: `<source>/train/<domain>_<k>.<format>` and `<source>/valid/<domain>.<format>`, each document's
`text`; formats: `.jsonl`, `.jsonl.gz`, `.jsonl.zst`, `.json.gz`, `.json.zst`, `.parquet`, `.arrow`
(regmix.data.readers), and Hugging Face `datasets` folders (save_to_disk), in place of a file or as the whole
corpus (regmix.data.sources). Output: one shard per source file, `<output>/<split>/<stem>.bin`
(token ids, each document followed by end-of-text; uint16 when the vocabulary fits, else uint32),
and `<output>/manifest.json` with the sha256 of every source and shard. Incremental: a shard whose
source file and tokenizer are unchanged, and whose own size, token ids and sha256 still hold, is kept;
the manifest is saved after every shard tokenized, so an interrupted run loses nothing it finished.
Shards and manifest are written whole (temporary file, fsync, rename): a crash or a full disk leaves
the previous files. Tokenization runs on all cores (the tokenizers library's thread pool, --workers).

The domain may come from a field instead of the file name (`--domain-field meta.pile_set_name`, as The Pile
and SlimPajama store it; `--rename` renames, `--min-tokens` merges the tiny domains into `other`), and the
valid split may be carved from train (`--valid-fraction`, by a seeded hash of each document: no document in
both). A file then feeds one shard per domain and split, `<stem>--<domain>.bin`.

`--verify` prepares nothing: it reads the prepared corpus at --output whole and checks every shard's
size, token ids and sha256 against the manifest (manifests written before shard checksums were
recorded: sizes and token ids only, and it says so).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from tqdm import tqdm

from regmix.cli import ArgumentParser, integer_at_least, run_command, share
from regmix.core.files import ConfigError, temporary_file, write_atomic
from regmix.data.corpus import (
    MANIFEST_NAME,
    SPLITS,
    CorpusManifest,
    Shard,
    load_manifest,
    read_manifest,
    unvalidated_warning,
    verify_corpus,
    verify_shard,
)
from regmix.data.readers import iter_documents, iter_texts
from regmix.data.sources import Routing, check_source, count_tokens, find_sources, shard_stem

BATCH_DOCUMENTS = 1024
DEFAULT_VOCAB_SIZE = 8192
MIN_VOCAB_SIZE = 257  # a byte-level BPE's 256 byte symbols and <|endoftext|>
BPE_SAMPLE_BYTES = 16_000_000


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


def token_dtype(vocab_size: int) -> str:
    """The smallest unsigned type that holds every token id."""
    return "uint16" if vocab_size <= np.iinfo(np.uint16).max + 1 else "uint32"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class _Part:
    """One shard being written from a source file: a temporary file, its counts and checksum."""

    tmp: Path
    handle: Any
    digest: Any = field(default_factory=hashlib.sha256)
    tokens: int = 0
    documents: int = 0


def _tokenize_file(tokenizer: Any, manifest: CorpusManifest, source: Path, folder: str, named: str | None,
                   routing: Routing) -> dict[tuple[str, str], tuple[Path, int, int, str]]:
    """Stream one source file into its shards, written whole or not at all (a domain's shard per split it feeds):
    {(split, domain): (shard path, tokens, documents, shard sha256)}."""
    eos = np.array([manifest.tokenizer.eos_id], dtype=np.int64)
    parts: dict[tuple[str, str], _Part] = {}
    output = Path(manifest.root)

    def target(split: str, domain: str) -> Path:
        name = f"{shard_stem(source)}--{domain}" if routing.routed else shard_stem(source)
        return output / split / f"{name}.bin"

    def part(split: str, domain: str) -> _Part:
        if (split, domain) not in parts:
            tmp = temporary_file(target(split, domain))  # a killed run's temporaries of this shard go first
            parts[split, domain] = _Part(tmp, tmp.open("wb"))
        return parts[split, domain]

    documents = iter_documents(source, routing.text_field, routing.domain_field)
    writing = output  # the shard being written: a failed write (a full disk) names it
    try:
        while batch := [d for _, d in zip(range(BATCH_DOCUMENTS), documents)]:
            encoded = tokenizer.encode_batch([t for t, _ in batch], add_special_tokens=False)
            pieces: dict[tuple[str, str], list[np.ndarray]] = {}
            for (text, value), e in zip(batch, encoded):
                where = (routing.split(folder, text), routing.domain(source, named, value))
                pieces.setdefault(where, []).extend((np.asarray(e.ids, dtype=np.int64), eos))
            for where, arrays in pieces.items():
                block = np.concatenate(arrays)
                writing = target(*where)
                manifest.check_token_ids(writing, int(block.max()))  # before the cast, which would wrap it
                block = block.astype(manifest.dtype)
                written = part(*where)
                written.handle.write(block.tobytes())
                written.digest.update(block)
                written.tokens += len(block)
                written.documents += len(arrays) // 2
        if not parts:
            raise ConfigError(source, f"no documents (every line is blank or has an empty {routing.text_field!r}), "
                                      "so no tokens for its domain; add text or remove the file")
        for where, written in parts.items():
            writing = target(*where)
            written.handle.flush()
            os.fsync(written.handle.fileno())
            written.handle.close()
        for where, written in parts.items():
            os.replace(written.tmp, target(*where))
    except OSError as exc:
        if exc.filename is not None and not str(exc.filename).endswith(".tmp"):  # about a source, say
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(writing)) from exc
    finally:
        for written in parts.values():
            written.handle.close()
            written.tmp.unlink(missing_ok=True)
    return {where: (target(*where), p.tokens, p.documents, p.digest.hexdigest()) for where, p in parts.items()}


def _still_good(manifest: CorpusManifest, old: list[tuple[str, str, Shard]], source_sha256: str
                ) -> list[tuple[str, str, Shard]] | None:
    """The previous (split, domain, shard)s of an unchanged source (same routing) if each shard's size, token ids
    and sha256 still hold (with its sha256)."""
    if not old or any(s.source_sha256 != source_sha256 or not s.documents for _, _, s in old):
        return None
    try:
        return [(split, domain, dataclasses.replace(s, sha256=verify_shard(manifest, s))) for split, domain, s in old]
    except ConfigError:
        return None


def _train_tokenizer(sources: dict[str, dict[str, list[Path]]], vocab_size: int, output: Path,
                     text_field: str = "text") -> Path:
    """Train a BPE on an even share of every training domain's text (of every file, where a field names domains)."""
    from regmix.data.tokenizer import train_bpe

    per_domain = BPE_SAMPLE_BYTES // len(sources["train"])

    def sample() -> Iterator[str]:
        for paths in sources["train"].values():
            taken = 0
            for text in (t for p in paths for t in iter_texts(p, text_field)):
                if taken >= per_domain:
                    break
                taken += len(text)
                yield text

    return train_bpe(sample(), vocab_size, output)


def _previous_shards(output: Path, tokenizer_sha256: str, dtype: str) -> dict[str, list[tuple[str, str, Shard]]]:
    """Shards of the manifest already in `output` by source (file and routing) as (split, domain, shard), if made
    by this tokenizer (else none: prepare anew)."""
    try:
        old = read_manifest(output) if (output / MANIFEST_NAME).exists() else None
    except ConfigError:  # an older format or a damaged file: prepare everything anew
        return {}
    if old is None or old.tokenizer.sha256 != tokenizer_sha256 or old.dtype != dtype:
        return {}
    found: dict[str, list[tuple[str, str, Shard]]] = {}
    for split in SPLITS:
        for domain, shards in old.shards[split].items():
            for shard in shards:
                found.setdefault(shard.source, []).append((split, domain, shard))
    return found


def prepare(source: str | os.PathLike, output: str | os.PathLike, tokenizer: str | os.PathLike | None = None,
            vocab_size: int = DEFAULT_VOCAB_SIZE, workers: int | None = None,
            progress: bool = True, routing: Routing | None = None, min_tokens: int = 0) -> CorpusManifest:
    """Tokenize a corpus into packed shards per domain and write its manifest (incrementally); `routing`: where
    each document goes (Routing); `min_tokens`: training domains with fewer tokens are merged into `other`."""
    from regmix.data.tokenizer import TOKENIZER_NAME, load_tokenizer

    os.environ.setdefault("RAYON_NUM_THREADS", str(workers or os.cpu_count() or 1))
    source, output, routing = Path(source), check_output(Path(output)), routing or Routing()
    sources = find_sources(source, routing)
    if tokenizer is None:
        check_vocab_size(vocab_size)
        tokenizer = output / "tokenizer" / TOKENIZER_NAME
        trained_for = tokenizer.parent / "vocab_size"
        if not (tokenizer.exists() and trained_for.exists()) or trained_for.read_text().strip() != str(vocab_size):
            _train_tokenizer(sources, vocab_size, tokenizer.parent, routing.text_field)
            write_atomic(trained_for, f"{vocab_size}\n")
    tok, info = load_tokenizer(tokenizer)
    dtype = token_dtype(info.vocab_size)
    previous = _previous_shards(output, info.sha256, dtype)

    manifest = CorpusManifest(output, str(source.resolve()), info, dtype)
    todo = [(split, domain, path) for split in SPLITS for domain, paths in sources[split].items() for path in paths]
    manifest.shards = {split: {domain: [] for domain in sorted(sources[split]) if domain} for split in SPLITS}
    bar = tqdm(todo, desc="prepare", unit="file", disable=None if progress else True)  # None: a terminal only
    done = 0
    for split, domain, path in bar:
        relative = str(path.relative_to(source))
        described = f"{relative}?{routing.describe()}" if routing.routed else relative
        sha = file_sha256(path)
        kept = _still_good(manifest, previous.get(described, []), sha)
        fresh = kept is None
        if kept is None:
            bar.set_postfix_str(path.name)
            made = _tokenize_file(tok, manifest, path, split, domain or None, routing)
            kept = [(where[0], where[1], Shard(target.relative_to(output).as_posix(), described, sha, tokens,
                                               documents, shard_sha))
                    for where, (target, tokens, documents, shard_sha) in sorted(made.items())]
            done += 1
        for part_split, part_domain, shard in kept:
            manifest.shards[part_split].setdefault(part_domain, []).append(shard)
        if fresh:
            manifest.save()
    manifest.shards = {split: dict(sorted(manifest.shards[split].items())) for split in SPLITS}
    merge_small_domains(manifest, min_tokens)
    manifest.save()
    _remove_stale(output, manifest)  # after the save: the manifest on disk never lists a deleted shard
    if progress:
        print(f"prepared {len(todo)} files ({done} tokenized, {len(todo) - done} up to date) into {output}/")
    return manifest


def merge_small_domains(manifest: CorpusManifest, min_tokens: int, into: str = "other") -> list[str]:
    """Training domains below `min_tokens` (and their valid shards) merged into one domain `into`; their names."""
    small = [d for d in manifest.shards["train"] if d != into and manifest.tokens("train", d) < min_tokens]
    for split in SPLITS:
        for domain in small:
            shards = manifest.shards[split].pop(domain, [])
            if shards:
                manifest.shards[split].setdefault(into, []).extend(shards)
    return small


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


def main(argv: Sequence[str] | None = None) -> CorpusManifest | None:
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
    p.add_argument("--domain-field", metavar="FIELD",
                   help="take each document's domain from this field (dotted for nested: meta.pile_set_name) "
                        "instead of the file name; then any file names in train/ and valid/")
    p.add_argument("--text-field", default="text", help="the field (or column) of the text (default: %(default)s)")
    p.add_argument("--rename", nargs="+", default=[], metavar="OLD=NEW",
                   help="rename domains, e.g. 'Pile-CC=pile_cc' 'Github=github'")
    p.add_argument("--valid-fraction", type=share(), default=0.0,
                   help="carve the valid split from train: this share of the documents, by a seeded hash of each "
                        "document (no document in both; needs no valid/ folder)")
    p.add_argument("--seed", type=integer_at_least(0), default=0, help="seed of --valid-fraction (default: 0)")
    p.add_argument("--min-tokens", type=integer_at_least(0), default=0,
                   help="training domains with fewer tokens are merged into one domain, `other` (default: 0)")
    p.add_argument("--count", type=Path, metavar="PRIOR.yaml",
                   help="write nothing but this token distribution of the training split (the prior for "
                        "synthesize --prior): every document's characters, tokens per character from a sample "
                        "tokenized by --tokenizer (without one, characters stand for tokens)")
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
    renames = [pair.split("=", 1) for pair in args.rename]
    if any(len(pair) != 2 or not all(pair) for pair in renames):
        p.error(f"--rename takes OLD=NEW pairs, got {args.rename}")
    routing = Routing(args.domain_field, args.text_field, tuple(map(tuple, renames)), args.valid_fraction, args.seed)
    if args.count is not None:
        counts = count_tokens(source, args.tokenizer, routing)
        total = sum(c["tokens"] for c in counts.values()) or 1
        unit = "tokens (estimated)" if args.tokenizer else "characters (no --tokenizer: standing for tokens)"
        lines = [f"# The training split of {source} in {unit}: regmix prepare --count", "train:"]
        lines += [f"  train_{d}: {c['tokens']}" for d, c in counts.items()]
        write_atomic(args.count, "\n".join(lines) + "\n")
        print(f"the training split of {source} in {unit}:")
        for domain, c in counts.items():
            print(f"{domain:<32}{c['documents']:>10,} documents{c['tokens']:>16,} {unit.split()[0]}"
                  f"{c['tokens'] / total:>8.3f}")
        print(f"wrote {args.count}")
        return None
    manifest = prepare(source, args.output, args.tokenizer, args.vocab_size, args.workers, routing=routing,
                       min_tokens=args.min_tokens)
    print(describe(manifest))
    warning = unvalidated_warning(manifest.unvalidated_domains())
    if warning:
        print(warning, file=sys.stderr)
    return manifest


if __name__ == "__main__":
    raise SystemExit(run_command(main))
