"""The embedded default corpus: real text already on any machine where regmix is installed.

Five domains, each a different kind of text, gathered from the Python installation and the packages
regmix depends on, so the demo needs no download:

- python_code: the standard library's Python source
- python_reference: the language reference bundled with pydoc (pydoc_data.topics)
- licenses: license and notice files shipped by installed packages
- package_docs: installed packages' README prose (METADATA descriptions, .md/.rst files)
- c_headers: C/C++ headers shipped by numpy and torch

Written in RegMix's layout (train/<domain>_<k>.jsonl, valid/<domain>.jsonl, a `text` field),
deterministic for a seed given the same installation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from regmix.cli import ArgumentParser, RunFailed, integer_at_least, run_command
from regmix.core.files import ConfigError, write_atomic

MB = 1_000_000
MIN_VALID_BYTES = 64_000


@dataclass(frozen=True)
class Domain:
    """A kind of text: where its documents come from and how many bytes of it to keep."""

    name: str
    documents: Callable[[], Iterator[tuple[str, str]]]
    max_bytes: int


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return ""


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _files(roots: Sequence[Path], pattern: str, skip: Callable[[Path], bool] = lambda p: False
           ) -> Iterator[tuple[str, str]]:
    for root in roots:
        for path in sorted(root.rglob(pattern)):
            if path.is_file() and not skip(path):
                yield f"{root.name}/{path.relative_to(root)}", _read(path)


def _python_code() -> Iterator[tuple[str, str]]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return _files([stdlib], "*.py", lambda p: "site-packages" in p.parts or "dist-packages" in p.parts)


def _python_reference() -> Iterator[tuple[str, str]]:
    from pydoc_data.topics import topics
    for name in sorted(topics):
        yield f"pydoc/{name}", topics[name]


def _licenses() -> Iterator[tuple[str, str]]:
    site = _site_packages()
    for path in sorted(site.glob("*.dist-info/**/*")):
        if path.is_file() and path.name.upper().startswith(("LICENSE", "LICENCE", "COPYING", "NOTICE")):
            yield str(path.relative_to(site)), _read(path)


def _package_docs() -> Iterator[tuple[str, str]]:
    site = _site_packages()
    for path in sorted(site.glob("*.dist-info/METADATA")):
        text = _read(path)
        head, _, body = text.partition("\n\n")
        yield str(path.relative_to(site)), body
    for path in sorted(site.rglob("*")):
        if path.suffix in (".md", ".rst") and path.is_file() and ".dist-info" not in str(path):
            yield str(path.relative_to(site)), _read(path)


def _c_headers() -> Iterator[tuple[str, str]]:
    import numpy
    import torch
    roots = [Path(numpy.__file__).parent, Path(torch.__file__).parent / "include"]
    return _files(roots, "*.h")


DOMAINS = (
    Domain("python_code", _python_code, 6 * MB),
    Domain("python_reference", _python_reference, 1 * MB),
    Domain("licenses", _licenses, 1 * MB),
    Domain("package_docs", _package_docs, 3 * MB),
    Domain("c_headers", _c_headers, 4 * MB),
)


def _collect(domain: Domain, rng: np.random.Generator) -> list[str]:
    """Distinct non-trivial documents of a domain, in seeded random order, up to its byte budget."""
    seen, docs = set(), []
    for _, text in domain.documents():
        text = text.strip()
        digest = hashlib.sha1(text.encode()).digest()
        if len(text) >= 200 and digest not in seen:
            seen.add(digest)
            docs.append(text)
    kept, size = [], 0
    for i in rng.permutation(len(docs)):
        if size >= domain.max_bytes:
            break
        kept.append(docs[i])
        size += len(docs[i].encode())
    return kept


def _write_jsonl(path: Path, docs: Sequence[str]) -> None:
    write_atomic(path, "".join(json.dumps({"text": doc}) + "\n" for doc in docs))


def build_default_corpus(output: Path, seed: int = 42, valid_fraction: float = 0.05,
                         shard_bytes: int = 2 * MB, domains: Sequence[Domain] = DOMAINS) -> Path:
    """Write the embedded corpus (or another of `domains` gathered on this machine) to `output` in RegMix's
    layout; returns `output`.

    Built in a `.partial` folder renamed at the end, so an interrupted build is never taken for a corpus.
    """
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ConfigError(output, "exists and is not an empty folder; remove it or choose another folder")
    final, output = output, output.with_name(output.name + ".partial")
    shutil.rmtree(output, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for domain in domains:
        docs = _collect(domain, rng)
        if len(docs) < 4:
            raise RunFailed(f"the default corpus domain '{domain.name}' found only {len(docs)} documents of at "
                            "least 200 characters in this installation; give prepare a corpus folder instead")
        sizes = np.cumsum([len(d.encode()) for d in docs])
        valid_bytes = max(valid_fraction * sizes[-1], MIN_VALID_BYTES)
        n_valid = max(2, int(np.searchsorted(sizes, valid_bytes)) + 1)
        _write_jsonl(output / "valid" / f"{domain.name}.jsonl", docs[:n_valid])
        shard, size, k = [], 0, 0
        for doc in docs[n_valid:]:
            shard.append(doc)
            size += len(doc.encode())
            if size >= shard_bytes:
                _write_jsonl(output / "train" / f"{domain.name}_{k}.jsonl", shard)
                shard, size, k = [], 0, k + 1
        if shard:
            _write_jsonl(output / "train" / f"{domain.name}_{k}.jsonl", shard)
    if final.exists():
        final.rmdir()
    return output.rename(final)


def main(argv: Sequence[str] | None = None) -> None:
    p = ArgumentParser(prog="python -m regmix.data.default_corpus", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", type=Path, nargs="?", default=Path("data/default_corpus"),
                   help="folder to write train/ and valid/ into (default: %(default)s)")
    p.add_argument("--seed", type=integer_at_least(0), default=42, help="shuffle and split seed (default: %(default)s)")
    args = p.parse_args(argv)
    build_default_corpus(args.output, args.seed)
    print(f"wrote the default corpus to {args.output}/")


if __name__ == "__main__":
    raise SystemExit(run_command(main))
