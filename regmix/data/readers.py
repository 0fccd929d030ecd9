"""The document files `prepare` reads, by suffix: one `text` per document, streamed in constant memory.

- `.jsonl`, `.jsonl.gz`, `.jsonl.zst`, and `.json.gz` / `.json.zst` (Dolma's name for JSON lines): one JSON
  object per line (The Pile and SlimPajama ship `.jsonl.zst`);
- `.parquet` (FineWeb, DCLM): read a row group at a time, the text column only;
- `.arrow`: a Hugging Face `datasets` folder's data files (`save_to_disk`), read in record batches.

A document's domain may come from a field (`domain_field`, dotted for nested records:
`meta.pile_set_name`, `meta.redpajama_set_name`). A malformed line or a missing text column or field is one
error naming the file (and the line); an unsupported compression is one error naming the suffixes read.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import IO, Any, Iterator

from regmix.core.files import ConfigError

JSON_LINES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst")
COLUMNAR = (".parquet", ".arrow")
SUFFIXES = JSON_LINES + COLUMNAR
UNREAD = (".bz2", ".xz", ".lz4", ".zip", ".tar", ".7z")  # compressions named in errors, not read


def document_suffix(path: Path) -> str | None:
    """The supported suffix a file ends with (the longest), None for any other file."""
    name = path.name.lower()
    found = [s for s in SUFFIXES if name.endswith(s)]
    return max(found, key=len) if found else None


def unsupported(path: Path) -> bool:
    """A file that looks like documents in a format `prepare` does not read (said, not skipped silently)."""
    name = path.name.lower()
    return document_suffix(path) is None and any(name.endswith(s) or f"{s}." in name for s in UNREAD + SUFFIXES)


def stem(path: Path) -> str:
    """The file name without its document suffix: `arxiv_0.jsonl.zst` -> `arxiv_0`."""
    suffix = document_suffix(path)
    return path.name[:-len(suffix)] if suffix else path.stem


def _open_text(path: Path, suffix: str) -> IO[str]:
    if suffix.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if suffix.endswith(".zst"):
        import zstandard

        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True),
                                encoding="utf-8")
    return path.open("rt", encoding="utf-8")


def field_value(record: Any, field: str) -> Any:
    """`record[a][b]` for the dotted field `a.b`; KeyError where the path ends early."""
    for key in field.split("."):
        if not isinstance(record, dict) or key not in record:
            raise KeyError(field)
        record = record[key]
    return record


def _json_lines(path: Path, suffix: str, field: str, domain_field: str | None) -> Iterator[tuple[str, Any]]:
    with _open_text(path, suffix) as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                raise ConfigError(path, f"line {number} is not valid JSON") from None
            if not isinstance(record, dict) or field not in record:
                raise ConfigError(path, f"line {number} has no {field!r} field")
            text = record[field]
            if not isinstance(text, str):
                raise ConfigError(path, f"line {number}: {field!r} is {type(text).__name__}, not a string")
            try:
                domain = None if domain_field is None else field_value(record, domain_field)
            except KeyError:
                raise ConfigError(path, f"line {number} has no domain field {domain_field!r}") from None
            yield text, domain


def _columns(path: Path, names: list[str], fields: list[str]) -> list[str]:
    """The top-level columns that hold `fields` (a dotted field lives in its first part's struct column)."""
    wanted = list(dict.fromkeys(f.split(".")[0] for f in fields))
    missing = [f for f, c in zip(fields, (f.split(".")[0] for f in fields)) if c not in names]
    if missing:
        raise ConfigError(path, f"no {missing[0]!r} column; it has {names}")
    return wanted


def _batches(path: Path, suffix: str, fields: list[str]) -> Iterator[list[dict]]:
    """Rows (as records of the columns the fields need), a batch at a time."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if suffix == ".parquet":
        reader = pq.ParquetFile(path)
        columns = _columns(path, reader.schema_arrow.names, fields)
        for batch in reader.iter_batches(columns=columns, batch_size=1024):
            yield batch.to_pylist()
        return
    with path.open("rb") as fh:
        try:
            reader = pa.ipc.open_stream(fh)  # `datasets` writes Arrow streams
        except pa.ArrowInvalid:
            fh.seek(0)
            reader = pa.ipc.open_file(fh)
        columns = _columns(path, reader.schema.names, fields)
        count = getattr(reader, "num_record_batches", None)
        for batch in reader if count is None else (reader.get_batch(i) for i in range(count)):
            yield batch.select(columns).to_pylist()


def iter_documents(path: Path, field: str = "text", domain_field: str | None = None) -> Iterator[tuple[str, Any]]:
    """(text, domain) of every document of a file with a non-empty `field`, in order; the domain is the value of
    `domain_field` (None without one)."""
    suffix = document_suffix(path)
    if suffix is None:
        raise ConfigError(path, f"not a document file prepare reads; supported: {', '.join(SUFFIXES)}")
    try:
        if suffix in JSON_LINES:
            yield from ((t, d) for t, d in _json_lines(path, suffix, field, domain_field) if t)
            return
        for rows in _batches(path, suffix, [field] + ([domain_field] if domain_field else [])):
            for row in rows:
                text = row[field]
                if text is not None and not isinstance(text, str):
                    raise ConfigError(path, f"column {field!r} holds {type(text).__name__}, not strings")
                if not text:
                    continue
                try:
                    yield text, None if domain_field is None else field_value(row, domain_field)
                except KeyError:
                    raise ConfigError(path, f"a row has no domain field {domain_field!r}") from None
    except ConfigError:
        raise
    except Exception as exc:  # a damaged file: gzip's, zstandard's and Arrow's errors, whatever their classes
        readable = isinstance(exc, (OSError, EOFError, UnicodeDecodeError, ValueError))
        if not readable and type(exc).__module__.split(".")[0] not in ("zstandard", "pyarrow"):
            raise
        raise ConfigError(path, f"cannot read: {type(exc).__name__}: {exc}") from None


def iter_texts(path: Path, field: str = "text") -> Iterator[str]:
    """The non-empty `field` of every document of a file, in order."""
    return (text for text, _ in iter_documents(path, field))
