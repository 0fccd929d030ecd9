"""Read wandb's offline run files (`offline-run-*/run-<id>.wandb`) without a wandb server.

wandb 0.31 writes offline runs only as this binary file and no longer ships a reader. Layout: a 7-byte
header (b":W&B", uint16 0xBEE1 little-endian, a version byte), then LevelDB-log framing in 32 KiB
blocks: each record fragment has a 7-byte header (checksum uint32 LE, length uint16 LE, type byte
FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4) and a block tail under 7 bytes is zero padding. The checksum is
zlib's CRC-32 of the type byte and the payload (checked here). Each assembled record is a
`wandb_internal_pb2.Record`.
"""

from __future__ import annotations

import json
import os
import struct
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from google.protobuf.message import DecodeError
from wandb.proto import wandb_internal_pb2

from regmix.core.files import ConfigError

FILE_HEADER = struct.Struct("<4sHB")
MAGIC, IDENT = b":W&B", 0xBEE1
RECORD_HEADER = struct.Struct("<IHB")
BLOCK_SIZE = 32 * 1024
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class OfflineRun:
    """What an offline run file holds: name and id, config, and one dict per `wandb.log` call."""

    name: str
    run_id: str
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    damage: str | None = None  # what stopped the reading of a damaged file (read with `partial`)


def _payloads(data: bytes, path: Path) -> Iterator[bytes]:
    """The assembled records of a LevelDB-log framed byte string (after the file header)."""
    position, pending = FILE_HEADER.size, None
    while position < len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < RECORD_HEADER.size:
            position += left_in_block
            continue
        if position + RECORD_HEADER.size > len(data):
            raise ConfigError(path, f"truncated record header at byte {position}")
        checksum, length, kind = RECORD_HEADER.unpack_from(data, position)
        start = position + RECORD_HEADER.size
        payload = data[start:start + length]
        if kind == 0 and length == 0 and checksum == 0:
            position += left_in_block  # zero padding up to the next block
            continue
        if len(payload) < length:
            raise ConfigError(path, f"truncated record at byte {position}")
        if zlib.crc32(payload, zlib.crc32(bytes([kind]))) != checksum:
            raise ConfigError(path, f"checksum mismatch in record at byte {position}")
        position = start + length
        if kind == FULL and pending is None:
            yield payload
        elif kind == FIRST and pending is None:
            pending = bytearray(payload)
        elif kind in (MIDDLE, LAST) and pending is not None:
            pending += payload
            if kind == LAST:
                yield bytes(pending)
                pending = None
        else:
            raise ConfigError(path, f"record of type {kind} out of order at byte {position}")
    if pending is not None:
        raise ConfigError(path, "file ends inside a record")


def _json_items(items: Any) -> dict[str, Any]:
    """wandb config/history items (key or nested_key, value_json) as a nested dict."""
    out: dict[str, Any] = {}
    for item in items:
        keys = list(item.nested_key) or [item.key]
        target = out
        for key in keys[:-1]:
            target = target.setdefault(key, {})
        target[keys[-1]] = json.loads(item.value_json)
    return out


def _unwrap_config(config: dict[str, Any]) -> dict[str, Any]:
    """wandb stores each config entry as {"value": x} (and adds its own `_wandb` entry): keep the values."""
    return {k: v["value"] if isinstance(v, dict) and "value" in v else v
            for k, v in config.items() if k != "_wandb"}


def read_offline_run(path: str | os.PathLike, partial: bool = False) -> OfflineRun:
    """Name, id, config and history of one offline run (its .wandb file or its offline-run-* folder).

    A file damaged after its header (a run killed mid-write, a copy cut short) is a ConfigError, or with
    `partial` what was read before the damage, the damage in `damage`: its run can then be named and reported.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("run-*.wandb"))
        if len(files) != 1:
            raise ConfigError(path, f"expected one run-*.wandb file in the folder, found {len(files)}")
        path = files[0]
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc}") from None
    if len(data) < FILE_HEADER.size:
        raise ConfigError(path, "too short for a wandb run file")
    magic, ident, _version = FILE_HEADER.unpack_from(data)
    if magic != MAGIC or ident != IDENT:
        raise ConfigError(path, "not a wandb run file (bad header)")
    run = OfflineRun(name="", run_id="")
    config: dict[str, Any] = {}
    try:
        for payload in _payloads(data, path):
            _add_record(run, config, payload, path)
    except ConfigError as exc:
        if not partial:
            raise
        run.damage = exc.problem
    run.config = _unwrap_config(config)
    return run


def _add_record(run: OfflineRun, config: dict[str, Any], payload: bytes, path: Path) -> None:
    """What one record says about the run: its name and id, config entries or a history row."""
    record = wandb_internal_pb2.Record()
    try:
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id or run.run_id
            run.name = record.run.display_name or run.name
            config.update(_json_items(record.run.config.update))
        elif kind == "config":
            config.update(_json_items(record.config.update))
        elif kind == "history":
            run.history.append(_json_items(record.history.item))
    except (DecodeError, ValueError) as exc:  # ValueError: a value that is not JSON
        raise ConfigError(path, f"undecodable record: {exc}") from None


def is_complete(path: str | os.PathLike) -> bool:
    """Whether a run file is whole: it parses and ends the run (an exit record)."""
    try:
        data = Path(path).read_bytes()
        for payload in _payloads(data, Path(path)):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(payload)
            if record.WhichOneof("record_type") == "exit":
                return True
    except (OSError, ConfigError, DecodeError):
        pass
    return False


def wait_until_complete(path: str | os.PathLike, timeout: float = 30.0) -> bool:
    """Wait for wandb to finish writing a run file: `wandb.finish()` returns before its last block is on disk."""
    deadline = time.monotonic() + timeout
    while not is_complete(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def find_offline_runs(root: str | os.PathLike) -> list[Path]:
    """Every offline run file (run-*.wandb) below `root`, in path order."""
    return sorted(Path(root).rglob("run-*.wandb"))
