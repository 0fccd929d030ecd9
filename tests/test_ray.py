"""The Ray executor on a local Ray instance (2 CPUs): same results as the local executor, a task whose worker
is killed is retried and its run finishes once, and the local executor needs no Ray."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_train_proxy import WEIGHTS, make_config

from regmix import train_proxy
from regmix.cli import run_command
from regmix.core.files import ConfigError
from regmix.core.results import load_result
from regmix.core.schema import CHECKPOINT_NAME, HISTORY_NAME, LOCK_NAME, STEP
from regmix.settings.run_config import run_config_paths, save_run_config
from regmix.study.experiment import load_experiment, with_executor
from regmix.train.executor import LOCAL, Executor, add_executor_arguments
from regmix.train.sweep import train_sweep

MIXTURES = [WEIGHTS, {"beta": 0.2, "gamma": 0.8}, {"alpha": 0.9, "gamma": 0.1}]


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def write_sweep(folder: Path, **settings) -> list[Path]:
    for i, weights in enumerate(MIXTURES, start=1):
        save_run_config(make_config(f"n{i}", weights, **settings), folder / f"n{i}.yaml")
    return run_config_paths(folder)


def sweep(paths, corpus, output, executor=LOCAL, **options):
    return train_sweep(paths, corpus, output, device="cpu", wandb_mode="off", progress=False,
                       report=lambda line: None, executor=executor, **options)


def test_a_ray_sweep_gives_the_local_executors_results(ray, tiny_corpus, tmp_path):
    paths = write_sweep(tmp_path / "configs", max_step=3)
    local = sweep(paths, tiny_corpus, tmp_path / "local", workers=1)
    on_ray = sweep(paths, tiny_corpus, tmp_path / "ray", Executor("ray", retries=1))
    assert sorted((e.name, e.status) for e in on_ray) == sorted((e.name, e.status) for e in local) == [
        ("n1", "finished"), ("n2", "finished"), ("n3", "finished")]
    for name in ("n1", "n2", "n3"):
        assert load_result(tmp_path / "ray" / name).valid_losses == load_result(tmp_path / "local" / name).valid_losses
        assert not (tmp_path / "ray" / name / LOCK_NAME).exists()  # the driver schedules: no locks
    again = sweep(paths, tiny_corpus, tmp_path / "ray", Executor("ray"))
    assert {e.status for e in again} == {"skipped"}  # finished runs are never handed to a task


def _running_task_pids() -> list[int]:
    """Ray worker processes running a sweep's task (their title is ray::<task name>)."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except (OSError, ValueError):
            continue
        if title == "ray::regmix_sweep" and entry.name.isdigit():
            pids.append(int(entry.name))
    return pids


def test_a_task_whose_worker_is_killed_is_retried_and_the_run_finishes_once(ray, tiny_corpus, tmp_path):
    config = make_config("long", max_step=40, save_step_interval=2, eval_step_interval=8)
    save_run_config(config, tmp_path / "configs" / "long.yaml")
    paths = run_config_paths(tmp_path / "configs")
    run_dir = tmp_path / "ray" / "long"
    done: list = []
    driver = threading.Thread(target=lambda: done.append(
        sweep(paths, tiny_corpus, tmp_path / "ray", Executor("ray", retries=2))))
    driver.start()
    deadline = time.monotonic() + 120
    while not (run_dir / CHECKPOINT_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (run_dir / CHECKPOINT_NAME).exists(), "the task never checkpointed"
    killed = _running_task_pids()
    assert killed, "no Ray worker running the task"
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    driver.join(timeout=300)
    assert not driver.is_alive() and [(e.name, e.status) for e in done[0]] == [("long", "finished")]
    result = load_result(run_dir)
    uninterrupted = sweep(paths, tiny_corpus, tmp_path / "local", workers=1)[0]
    assert uninterrupted.status == "finished"
    assert result.valid_losses == load_result(tmp_path / "local" / "long").valid_losses  # resumed exactly
    steps = [json.loads(line)[STEP] for line in (run_dir / HISTORY_NAME).read_text().splitlines()]
    assert steps == sorted(set(steps))  # every evaluation once: the retry resumed, it did not start over


def test_the_local_executor_needs_no_ray_and_the_ray_one_says_how_to_get_it(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    paths = write_sweep(tmp_path / "configs", max_step=2)
    assert {e.status for e in sweep(paths[:1], tiny_corpus, tmp_path / "local", workers=1)} == {"finished"}
    with pytest.raises(ValueError, match=r"pip install 'regmix\[ray\]'"):
        sweep(paths, tiny_corpus, tmp_path / "ray", Executor("ray"))
    with pytest.raises(ValueError, match="unknown executor 'slurm'"):
        Executor.parse("slurm")
    with pytest.raises(ValueError, match="GPUs per task but the device is cpu"):
        Executor("ray", gpus=1).task_gpus("cpu")


def test_train_proxy_takes_the_executor_flags(ray, tiny_corpus, tmp_path, monkeypatch, capsys):
    write_sweep(tmp_path / "sweep", max_step=2)
    monkeypatch.chdir(tmp_path)
    assert train_proxy.main(["--config", "sweep", "--corpus", str(tiny_corpus.root), "--wandb", "off",
                             "--no-progress", "--device", "cpu", "--executor", "ray", "--ray-cpus", "1"]) == 0
    assert all(load_result(tmp_path / "runs" / "sweep" / f"n{i}").ok for i in (1, 2, 3))
    assert run_command(train_proxy.main, ["--config", "sweep", "--corpus", str(tiny_corpus.root),
                                          "--ray-cpus", "0"]) == 2
    assert "--ray-cpus: must be a finite number > 0" in capsys.readouterr().err
    torch.set_num_threads(1)


def test_an_experiment_names_its_executor_and_flags_override_it(tmp_path):
    (tmp_path / "exp.yaml").write_text("sweep:\n  executor: {kind: ray, address: auto, gpus: 0.5}\n")
    experiment = load_experiment(tmp_path / "exp.yaml")
    assert experiment.sweep.make_executor() == Executor("ray", "auto", gpus=0.5)
    parser = argparse.ArgumentParser()
    add_executor_arguments(parser)
    overridden = with_executor(experiment, parser.parse_args(["--ray-retries", "1"])).sweep.make_executor()
    assert overridden == Executor("ray", "auto", gpus=0.5, retries=1)
    local = with_executor(experiment, parser.parse_args(["--executor", "local"])).sweep.train_options()["executor"]
    assert local.kind == "local"
    for bad, reason in (("executor: slurm", "unknown executor 'slurm'"), ("executor: {kind: ray, cpus: 0}", "cpus > 0"),
                        ("executor: {kind: ray, gpu: 1}", "unexpected keyword")):
        (tmp_path / "bad.yaml").write_text(f"sweep:\n  {bad}\n")
        with pytest.raises(ConfigError, match=f"bad.yaml: 'sweep.executor': .*{reason}"):
            load_experiment(tmp_path / "bad.yaml")
