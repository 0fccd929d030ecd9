"""Reading wandb offline run files without a server."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any, Sequence

import pytest
from wandb.proto import wandb_internal_pb2

from regmix.core.files import ConfigError
from regmix.train.wandb_runs import (
    BLOCK_SIZE,
    FILE_HEADER,
    FIRST,
    FULL,
    IDENT,
    LAST,
    MAGIC,
    MIDDLE,
    RECORD_HEADER,
    find_offline_runs,
    is_complete,
    read_offline_run,
    wait_until_complete,
)


def offline_run_file(path: Path, name: str, run_id: str, history: Sequence[dict[str, Any]],
                     config: dict[str, Any] | None = None) -> Path:
    """A wandb offline run file as wandb writes it (run record, one history record per row, exit), without wandb:
    other tests build runs, whole or cut, in milliseconds."""
    run = wandb_internal_pb2.Record()
    run.run.run_id, run.run.display_name = run_id, name
    for key, value in (config or {}).items():
        run.run.config.update.add(key=key, value_json=json.dumps({"value": value}))
    records = [run]
    for row in history:
        records.append(wandb_internal_pb2.Record())
        for key, value in row.items():
            records[-1].history.item.add(key=key, value_json=json.dumps(value))
    records.append(wandb_internal_pb2.Record())
    records[-1].exit.exit_code = 0
    data = bytearray(FILE_HEADER.pack(MAGIC, IDENT, 0))
    for payload in (record.SerializeToString() for record in records):
        first = True
        while True:
            left = BLOCK_SIZE - len(data) % BLOCK_SIZE
            if left < RECORD_HEADER.size:
                data += bytes(left)
                continue
            fragment, payload = payload[:left - RECORD_HEADER.size], payload[left - RECORD_HEADER.size:]
            kind = (FULL if not payload else FIRST) if first else (LAST if not payload else MIDDLE)
            data += RECORD_HEADER.pack(zlib.crc32(fragment, zlib.crc32(bytes([kind]))), len(fragment), kind)
            data += fragment
            first = False
            if not payload:
                break
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(scope="module")
def offline_run(tmp_path_factory):
    """A real wandb offline run: config, three history rows and one row too big for a 32 KiB block."""
    import os

    import wandb

    root = tmp_path_factory.mktemp("wandb")
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    # mode given: wandb keeps the WANDB_MODE of its first init in this process (another test's "disabled")
    run = wandb.init(project="regmix-test", name="n5", dir=root, mode="offline",
                     config={"train": {"train_a": 0.25}, "seed": 3},
                     settings=wandb.Settings(x_disable_stats=True, console="off"))
    for step in range(3):
        run.log({"trainer/global_step": step, "metric/a_val_loss": 3.0 - step})
    run.log({"note": "x" * (2 * BLOCK_SIZE + 100)})
    run_id, sync_file = run.id, run.settings.sync_file
    run.finish()
    assert wait_until_complete(sync_file)
    return root, run_id


def test_reads_name_config_and_history(offline_run):
    root, run_id = offline_run
    files = find_offline_runs(root)
    assert len(files) == 1 and files[0].name == f"run-{run_id}.wandb"
    for path in (files[0], files[0].parent):
        run = read_offline_run(path)
        assert (run.name, run.run_id) == ("n5", run_id)
        assert run.config == {"train": {"train_a": 0.25}, "seed": 3}
        losses = [row["metric/a_val_loss"] for row in run.history if "metric/a_val_loss" in row]
        assert losses == [3.0, 2.0, 1.0]
        assert run.history[-1]["note"] == "x" * (2 * BLOCK_SIZE + 100)


def test_bad_files_raise_config_error_naming_the_file(offline_run, tmp_path):
    root, _ = offline_run
    data = find_offline_runs(root)[0].read_bytes()
    cases = {"truncated.wandb": data[: BLOCK_SIZE + 50], "header.wandb": b"NOPE" + data[4:],
             "short.wandb": data[:3], "flipped.wandb": data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=name):
            read_offline_run(tmp_path / name)
    with pytest.raises(ConfigError, match="found 0"):
        read_offline_run(tmp_path)


def test_a_damaged_file_read_partially_names_its_run(offline_run, tmp_path):
    root, run_id = offline_run
    cut = tmp_path / "cut.wandb"
    cut.write_bytes(find_offline_runs(root)[0].read_bytes()[: BLOCK_SIZE + 50])
    run = read_offline_run(cut, partial=True)
    assert (run.name, run.run_id) == ("n5", run_id) and "truncated record" in run.damage
    assert [row["metric/a_val_loss"] for row in run.history if "metric/a_val_loss" in row] == [3.0, 2.0, 1.0]
    assert read_offline_run(find_offline_runs(root)[0], partial=True).damage is None


def test_the_test_writer_writes_what_wandb_writes(tmp_path):
    history = [{"trainer/global_step": 1, "metric/a_val_loss": 2.5}, {"note": "x" * (BLOCK_SIZE + 10)}]
    path = offline_run_file(tmp_path / "run-x.wandb", "n1", "x", history, {"seed": 3})
    run = read_offline_run(path)
    assert (run.name, run.run_id, run.config, run.history) == ("n1", "x", {"seed": 3}, history)
    assert is_complete(path)
