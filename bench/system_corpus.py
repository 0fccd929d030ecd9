"""A second corpus of real public text, for checking that answers hold beyond the demo corpus: five domains of
this machine's Debian installation, gathered by the default corpus's own builder (regmix.data.default_corpus).

- man_pages: roff sources of the manual pages (/usr/share/man, gzip)
- debian_changelogs: packages' Debian changelogs (/usr/share/doc/*/changelog.Debian.gz)
- copyrights: packages' machine-readable copyright files (/usr/share/doc/*/copyright)
- perl_modules: Perl's own modules (/usr/share/perl)
- python_packages: Debian's Python packages (/usr/lib/python3/dist-packages)

    python bench/system_corpus.py data/system_raw     # writes train/ and valid/ (10% of documents)
    regmix pipeline --config bench/system_corpus.yaml  # the demo's settings on it, verified with seeds
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path
from typing import Iterator

from regmix.data.default_corpus import MB, Domain, build_default_corpus


def _gzip_texts(paths: list[Path]) -> Iterator[tuple[str, str]]:
    for path in paths:
        try:
            yield str(path), gzip.decompress(path.read_bytes()).decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError):
            continue


def _texts(paths: list[Path]) -> Iterator[tuple[str, str]]:
    for path in paths:
        try:
            yield str(path), path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue


def _sorted(root: str, pattern: str) -> list[Path]:
    return sorted(p for p in Path(root).glob(pattern) if p.is_file())


DOMAINS = (
    Domain("man_pages", lambda: _gzip_texts(_sorted("/usr/share/man", "man*/*.gz")), 2 * MB),
    Domain("debian_changelogs", lambda: _gzip_texts(_sorted("/usr/share/doc", "*/changelog.Debian.gz")), 2 * MB),
    Domain("copyrights", lambda: _texts(_sorted("/usr/share/doc", "*/copyright")), 1 * MB),
    Domain("perl_modules", lambda: _texts(_sorted("/usr/share/perl", "**/*.pm")), 2 * MB),
    Domain("python_packages", lambda: _texts(_sorted("/usr/lib/python3/dist-packages", "**/*.py")), 2 * MB),
)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("output", type=Path, nargs="?", default=Path("data/system_raw"))
    args = p.parse_args()
    build_default_corpus(args.output, seed=7, valid_fraction=0.1, domains=DOMAINS)
    for split in ("train", "valid"):
        sizes = {f.name: f.stat().st_size for f in sorted((args.output / split).iterdir())}
        print(f"{split}: " + ", ".join(f"{n} {s / MB:.2f} MB" for n, s in sizes.items()))


if __name__ == "__main__":
    main()
