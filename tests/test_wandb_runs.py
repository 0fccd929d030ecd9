"""Reading wandb offline run files without a server."""

from __future__ import annotations

import pytest

from regmix.files import ConfigError
from regmix.wandb_runs import BLOCK_SIZE, find_offline_runs, read_offline_run, wait_until_complete


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
