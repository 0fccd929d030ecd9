"""The document files `prepare` reads, by suffix: one `text` per document, streamed in constant memory.

- `.jsonl`, `.jsonl.gz`, `.jsonl.zst`, and `.json.gz` / `.json.zst` (Dolma's name for JSON lines): one JSON
  object per line (The Pile and SlimPajama ship `.jsonl.zst`);
- `.parquet` (FineWeb, DCLM): read a row group at a time, the text column only;
- `.arrow`: a Hugging Face `datasets` folder's data files (`save_to_disk`), read in record batches.

A malformed line or a missing text column is one error naming the file (and the line); an unsupported
compression is one error naming the suffixes that are read.
"""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path
from typing import IO, Iterator

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


def _json_lines(path: Path, suffix: str, field: str) -> Iterator[str]:
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
            yield text


def _batches(path: Path, suffix: str, field: str) -> Iterator[list]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if suffix == ".parquet":
        reader = pq.ParquetFile(path)
        if field not in reader.schema_arrow.names:
            raise ConfigError(path, f"no {field!r} column; it has {reader.schema_arrow.names}")
        for batch in reader.iter_batches(columns=[field], batch_size=1024):
            yield batch.column(0).to_pylist()
        return
    with path.open("rb") as fh:
        try:
            reader = pa.ipc.open_stream(fh)  # `datasets` writes Arrow streams
        except pa.ArrowInvalid:
            fh.seek(0)
            reader = pa.ipc.open_file(fh)
        if field not in reader.schema.names:
            raise ConfigError(path, f"no {field!r} column; it has {reader.schema.names}")
        count = getattr(reader, "num_record_batches", None)
        for batch in reader if count is None else (reader.get_batch(i) for i in range(count)):
            yield batch.column(batch.schema.get_field_index(field)).to_pylist()


def iter_texts(path: Path, field: str = "text") -> Iterator[str]:
    """The non-empty `field` of every document of a file, in order."""
    suffix = document_suffix(path)
    if suffix is None:
        raise ConfigError(path, f"not a document file prepare reads; supported: {', '.join(SUFFIXES)}")
    try:
        if suffix in JSON_LINES:
            yield from (t for t in _json_lines(path, suffix, field) if t)
            return
        for texts in _batches(path, suffix, field):
            for text in texts:
                if text is not None and not isinstance(text, str):
                    raise ConfigError(path, f"column {field!r} holds {type(text).__name__}, not strings")
                if text:
                    yield text
    except ConfigError:
        raise
    except Exception as exc:  # a damaged file: gzip's, zstandard's and Arrow's errors, whatever their classes
        readable = isinstance(exc, (OSError, EOFError, UnicodeDecodeError, ValueError))
        if not readable and type(exc).__module__.split(".")[0] not in ("zstandard", "pyarrow"):
            raise
        raise ConfigError(path, f"cannot read: {type(exc).__name__}: {exc}") from None
