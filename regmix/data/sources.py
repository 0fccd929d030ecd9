"""A corpus's source files: where they are, where each document goes (`Routing`: its domain and split), and how
many tokens each domain holds before anything is prepared (`count_tokens`, `regmix prepare --count`).

Where they are: RegMix's layout (`train/<domain>_<k>.<format>`, `valid/<domain>.<format>`; with a domain field
any file names in train/ and valid/), where a Hugging Face `datasets` folder (`save_to_disk`: `state.json` beside
its `.arrow` files) may stand for a file. The source may also be one such folder itself: a `Dataset` (its
documents are the training split; the valid split is carved with --valid-fraction) or a `DatasetDict`
(`dataset_dict.json`; its `train` split, and `validation` or `valid` as the valid split). Its file names name no
domain, so a domain field must.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from regmix.core.files import ConfigError, read_yaml
from regmix.core.schema import safe_name
from regmix.data.corpus import SPLITS
from regmix.data.readers import SUFFIXES, document_suffix, iter_documents, stem, unsupported

DATASET_STATE, DATASET_DICT = "state.json", "dataset_dict.json"  # what `datasets`' save_to_disk writes
DATASET_VALID = ("validation", "valid")
TRAIN_FILE = re.compile(r"^(?P<domain>.+)_(?P<k>\d+)$")  # file names without their document suffix
VALID_FILE = re.compile(r"^(?P<domain>.+)$")
LAYOUT = f"expected train/<domain>_<k>.<format> and valid/<domain>.<format>, formats {', '.join(SUFFIXES)}"


def check_source(source: Path) -> Path:
    """The corpus folder, if it is one (its layout is find_sources' to check)."""
    if not source.exists():
        raise ConfigError(source, f"no such folder ({LAYOUT})")
    if not source.is_dir():
        raise ConfigError(source, f"is a file, not a corpus folder ({LAYOUT})")
    return source


def dataset_files(folder: Path) -> list[Path]:
    """The `.arrow` files of a `datasets` save_to_disk folder, in its state.json's order."""
    state = read_yaml(folder / DATASET_STATE)
    try:
        files = [folder / entry["filename"] for entry in state["_data_files"]]
    except (KeyError, TypeError):
        raise ConfigError(folder / DATASET_STATE, "no '_data_files' list of {filename: ...}: not a datasets "
                                                  "save_to_disk folder") from None
    missing = [p.name for p in files if not p.is_file()]
    if missing or not files:
        raise ConfigError(folder, f"the datasets folder lacks its data files {missing}" if missing
                          else "the datasets folder has no data files")
    return files


def shard_stem(path: Path) -> str:
    """The name a source file's shards take: its stem, after its datasets folder's name if it lies in one (whose
    files are all named data-<i>-of-<n>)."""
    inside = (path.parent / DATASET_STATE).exists()
    return f"{path.parent.name}-{stem(path)}" if inside else stem(path)


def _dataset_source(source: Path, routing: Routing) -> dict[str, dict[str, list[Path]]]:
    """The sources of a corpus that is one datasets folder (a Dataset or a DatasetDict)."""
    if routing.domain_field is None:
        raise ConfigError(source, "a datasets folder's file names name no domain: give --domain-field (the column "
                                  "that holds each document's domain)")
    if (source / DATASET_STATE).exists():
        folders = {"train": source}
    else:
        splits = read_yaml(source / DATASET_DICT).get("splits", [])
        if "train" not in splits:
            raise ConfigError(source / DATASET_DICT, f"no 'train' split; it has {splits}")
        folders = {"train": source / "train"}
        valid = next((s for s in DATASET_VALID if s in splits), None)
        if valid is not None:
            folders["valid"] = source / valid
    if "valid" in folders and routing.valid_fraction > 0:
        raise ConfigError(folders["valid"], "a valid split and --valid-fraction: take the valid split from one of "
                                            "them (drop --valid-fraction)")
    if "valid" not in folders and routing.valid_fraction <= 0:
        raise ConfigError(source, f"the datasets folder has no {' or '.join(DATASET_VALID)} split: carve one from "
                                  "train with --valid-fraction")
    return {split: {"": dataset_files(folders[split])} if split in folders else {} for split in SPLITS}


@dataclass(frozen=True)
class Routing:
    """Where each document goes. Its domain: the file's name (RegMix's layout), or the value of `domain_field`
    (any file names), renamed by `rename`. Its split: the file's folder, or with `valid_fraction` > 0 carved from
    train by a seeded hash of its text (no document in both; the same text always on the same side)."""

    domain_field: str | None = None
    text_field: str = "text"
    rename: tuple[tuple[str, str], ...] = ()
    valid_fraction: float = 0.0
    seed: int = 0

    @property
    def routed(self) -> bool:
        """Whether a file may feed several shards (then named `<stem>--<domain>.bin`)."""
        return self.domain_field is not None or self.valid_fraction > 0

    def describe(self) -> str:
        """The routing a shard was made with: kept in its `source`, so another routing prepares it anew."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":"))

    def domain(self, path: Path, named: str | None, value: Any) -> str:
        domain = named if self.domain_field is None else value
        if domain is None or isinstance(domain, (dict, list)):
            raise ConfigError(path, f"a document's domain field {self.domain_field!r} is {domain!r}, not a name")
        return _renamed(self.rename, str(domain), path)

    def split(self, folder: str, text: str) -> str:
        if self.valid_fraction <= 0 or folder != "train":
            return folder
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8,
                                 key=self.seed.to_bytes(8, "little")).digest()
        return "valid" if int.from_bytes(digest, "little") / 2 ** 64 < self.valid_fraction else "train"


def find_sources(source: Path, routing: Routing | None = None) -> dict[str, dict[str, list[Path]]]:
    """Source files per split and domain ("" when a field names the domains), in RegMix's layout or, with a
    domain field, any document files in train/ and valid/; layout mistakes name the file or folder."""
    routing = routing or Routing()
    check_source(source)
    if (source / DATASET_STATE).exists() or (source / DATASET_DICT).exists():
        return _dataset_source(source, routing)
    found: dict[str, dict[str, list[Path]]] = {split: {} for split in SPLITS}
    for split, pattern in (("train", TRAIN_FILE), ("valid", VALID_FILE)):
        folder = source / split
        if split == "valid" and routing.valid_fraction > 0:
            if folder.exists():
                raise ConfigError(folder, "a valid/ folder and --valid-fraction: take the valid split from one of "
                                          "them (move the folder away or drop --valid-fraction)")
            continue
        if not folder.is_dir():
            raise ConfigError(source, f"no {split}/ folder: {LAYOUT}")
        name = "<domain>_<k>" if split == "train" else "<domain>"
        skipped: Counter[str] = Counter()  # what the folder holds instead, by format: said if nothing else is there
        for path in sorted(folder.iterdir()):
            if path.name.startswith("."):
                continue
            if unsupported(path):
                raise ConfigError(path, f"prepare does not read this format; supported: {', '.join(SUFFIXES)}")
            dataset = path.is_dir() and (path / DATASET_STATE).exists()
            if document_suffix(path) is None and not dataset:
                suffix = "".join(path.suffixes[-2:])
                skipped[f"folders without {DATASET_STATE}" if path.is_dir() else f"{suffix or 'suffixless'} files"] += 1
                continue
            files = dataset_files(path) if dataset else [path]
            if routing.domain_field is not None:
                found[split].setdefault("", []).extend(files)
                continue
            match = pattern.match(path.name if dataset else stem(path))
            if not match:
                raise ConfigError(path, f"name must be {name}.<format> ({', '.join(SUFFIXES)}) or a datasets "
                                        f"folder {name}/")
            found[split].setdefault(match["domain"], []).extend(files)
        if not found[split]:
            named = "document" if routing.domain_field else f"{name}.<format>"
            held = ", ".join(f"{kind} ({count})" for kind, count in skipped.most_common())
            raise ConfigError(folder, f"no {named} files: it holds {held}, which prepare does not read; supported: "
                                      f"{', '.join(SUFFIXES)} and datasets folders" if held else
                                      f"no {named} files (supported: {', '.join(SUFFIXES)} and datasets folders)")
        for domain, paths in found[split].items():
            stems = [shard_stem(p) for p in paths]
            if len(set(stems)) < len(stems):
                raise ConfigError(folder, f"{domain}: two files of one name in two formats {sorted(map(str, paths))}; "
                                          "keep one")
    return found


@functools.lru_cache(maxsize=4096)
def _renamed(rename: tuple[tuple[str, str], ...], domain: str, path: Path) -> str:
    """A domain's name after the renames, checked once per file and name (not once per document)."""
    return safe_name(dict(rename).get(domain, domain), "domain", path)


def count_tokens(source: str | os.PathLike, tokenizer: str | os.PathLike | None = None, routing: Routing | None = None,
                 sample: int = 2000) -> dict[str, dict[str, float]]:
    """The training split's size per domain without writing shards: every document's characters counted, the
    first `sample` documents of each domain tokenized for its tokens per character (characters stand for tokens
    without a tokenizer). {domain: {documents, characters, tokens}} (tokens estimated)."""
    source, routing = Path(source), routing or Routing()
    sources = find_sources(source, routing)
    tok = None
    if tokenizer is not None:
        from regmix.data.tokenizer import load_tokenizer

        tok = load_tokenizer(tokenizer)[0]
    counts: dict[str, dict[str, float]] = {}
    sampled: dict[str, list[str]] = {}
    files = [(domain, path) for domain, paths in sources["train"].items() for path in paths]
    for domain, path in tqdm(files, desc="count", unit="file", disable=None):
        for text, value in iter_documents(path, routing.text_field, routing.domain_field):
            if routing.split("train", text) != "train":
                continue
            name = routing.domain(path, domain or None, value)
            entry = counts.setdefault(name, {"documents": 0, "characters": 0})
            entry["documents"] += 1
            entry["characters"] += len(text)
            if len(sampled.setdefault(name, [])) < sample:
                sampled[name].append(text)
    for name, entry in counts.items():
        ratio = 1.0
        if tok is not None:
            encoded = tok.encode_batch(sampled[name], add_special_tokens=False)
            ratio = sum(len(e.ids) + 1 for e in encoded) / max(sum(len(t) for t in sampled[name]), 1)
        entry["tokens"] = round(entry["characters"] * ratio)
    return dict(sorted(counts.items()))
