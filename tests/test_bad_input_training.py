"""Bad input to the commands that train (train_proxy, pipeline, search, transfer, online): one line on stderr
naming the flag or file, the right exit code, no traceback, and the finished run next to it untouched."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_bad_input import check_bad_input
from test_train_proxy import make_config

from regmix import pipeline, train_proxy
from regmix.cli import run_command
from regmix.online.__main__ import main as online_main
from regmix.search.__main__ import main as search_main
from regmix.settings.run_config import save_run_config
from regmix.study import transfer
from regmix.train.sweep import train_sweep

COMMANDS = {"train_proxy": train_proxy.main, "pipeline": pipeline.main, "search": search_main,
            "transfer": transfer.main, "online": online_main}
NO_CUDA = "" if torch.cuda.is_available() else "cuda"

# (id, command, argv ({corpus}, {sweep}, {runs}, {work} are filled in), names one of which stderr must hold, code)
CASES = [
    ("workers negative", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--workers", "-1"],
     ["--workers"], 2),
    ("workers not a number", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--workers", "two"],
     ["--workers"], 2),
    ("group size negative", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--group-size", "-3"],
     ["--group-size"], 2),
    ("device unknown", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--device", "tpu9"],
     ["--device"], 2),
    ("wandb mode unknown", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--wandb", "maybe"],
     ["--wandb"], 2),
    ("executor unknown", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--executor", "slurm"],
     ["slurm"], 2),
    ("ray cpus zero", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--ray-cpus", "0"],
     ["--ray-cpus"], 2),
    ("ray gpus negative", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--ray-gpus", "-1"],
     ["--ray-gpus"], 2),
    ("ray retries negative", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--ray-retries", "-1"],
     ["--ray-retries"], 2),
    ("config missing", "train_proxy", ["--config", "{work}/nope.yaml", "--corpus", "{corpus}"], ["nope.yaml"], 2),
    ("config folder empty", "train_proxy", ["--config", "{work}/empty", "--corpus", "{corpus}"], ["empty"], 2),
    ("corpus missing", "train_proxy", ["--config", "{sweep}", "--corpus", "{work}/nowhere"], ["nowhere"], 2),
    ("output is a file", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--output", "{work}/file"],
     ["file"], 2),
    ("pipeline executor unknown", "pipeline", ["--config", "{work}/exp.yaml", "--executor", "k8s"], ["k8s"], 2),
    ("pipeline sweep workers negative", "pipeline", ["--config", "{work}/workers.yaml"], ["workers.yaml"], 2),
    ("pipeline sweep wandb unknown", "pipeline", ["--config", "{work}/wandb.yaml"], ["wandb.yaml"], 2),
    ("pipeline sweep device unknown", "pipeline", ["--config", "{work}/device.yaml"], ["device.yaml"], 2),
    ("pipeline config missing", "pipeline", ["--config", "{work}/none.yaml"], ["none.yaml"], 2),
    ("pipeline flag unknown", "pipeline", ["--configg", "x.yaml"], ["--configg"], 2),
    ("search budget zero", "search", ["--config", "{work}/exp.yaml", "--budget", "0"], ["--budget"], 2),
    ("search budget beyond memory", "search", ["--config", "{work}/exp.yaml", "--budget", "1000000000000000"],
     ["--budget"], 2),
    ("search batch zero", "search", ["--config", "{work}/exp.yaml", "--batch", "0"], ["--batch"], 2),
    ("search method unknown", "search", ["--config", "{work}/exp.yaml", "--method", "cmaes"], ["--method"], 2),
    ("search setting not key=value", "search", ["--config", "{work}/exp.yaml", "--setting", "initial"],
     ["initial"], 2),
    ("transfer seeds zero", "transfer", ["--optimal", "{work}/optimal.yaml", "--corpus", "{corpus}", "--seeds", "0"],
     ["--seeds"], 2),
    ("transfer workers negative", "transfer", ["--optimal", "{work}/optimal.yaml", "--corpus", "{corpus}",
                                               "--workers", "-2"], ["--workers"], 2),
    ("transfer optimal missing", "transfer", ["--optimal", "{work}/gone.yaml", "--corpus", "{corpus}"],
     ["gone.yaml"], 2),
    ("transfer baseline missing", "transfer", ["--optimal", "{work}/optimal.yaml", "--corpus", "{corpus}",
                                               "--baselines", "{work}/other.yaml", "--no-estimate"], ["other.yaml"], 2),
    ("online method unknown", "online", ["--corpus", "{corpus}", "--method", "doremi2"], ["--method"], 2),
    ("online domain unknown", "online", ["--corpus", "{corpus}", "--method", "natural", "--domains", "zeta"],
     ["--domains"], 2),
    ("online valid unknown", "online", ["--corpus", "{corpus}", "--method", "natural", "--valid", "delta"],
     ["--valid"], 2),
    ("online domain twice", "online", ["--corpus", "{corpus}", "--method", "natural", "--domains", "alpha", "alpha"],
     ["--domains"], 2),
    ("search seed negative", "search", ["--config", "{work}/exp.yaml", "--seed", "-1"], ["--seed"], 2),
    ("online setting made by the method", "online", ["--corpus", "{corpus}", "--method", "skillit", "--setting",
                                                     'skills="/etc/shadow"'], ["--setting"], 2),
    ("online setting unknown", "online", ["--corpus", "{corpus}", "--method", "aioli", "--setting", "etaa=1"],
     ["etaa"], 2),
    ("online name not a name", "online", ["--corpus", "{corpus}", "--method", "natural", "--name", "../up"],
     ["--name"], 2),
    ("online output of the old harness", "online", ["--corpus", "{corpus}", "--method", "natural", "--output",
                                                    "{work}/file"], ["--output"], 2),
]
if NO_CUDA:
    CASES.append(("cuda without a GPU", "train_proxy", ["--config", "{sweep}", "--corpus", "{corpus}", "--device",
                                                        "cuda"], ["--device"], 2))


@pytest.fixture(scope="module")
def finished(tiny_corpus, tmp_path_factory):
    """A folder with a finished sweep, an experiment and an optimal mixture, for the commands to be given."""
    work = tmp_path_factory.mktemp("bad_training")
    save_run_config(make_config("n1", max_step=2), work / "sweep" / "n1.yaml")
    train_sweep([work / "sweep" / "n1.yaml"], tiny_corpus, work / "runs", workers=1, device="cpu",
                wandb_mode="off", progress=False, report=lambda line: None)
    save_run_config(make_config("optimal_mixture", max_step=2), work / "optimal.yaml")
    (work / "empty").mkdir()
    (work / "file").write_text("a file where a folder should be\n")
    (work / "exp.yaml").write_text(f"name: bad\ncorpus: {{prepared: {tiny_corpus.root}}}\n")
    for name, sweep in (("workers", "workers: -1"), ("wandb", "wandb: maybe"), ("device", "device: tpu9")):
        (work / f"{name}.yaml").write_text(f"name: bad\nsweep: {{{sweep}}}\n")
    return work


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_training_input(case, finished, tiny_corpus, capsys, monkeypatch):
    name, command, argv, names, code = case
    monkeypatch.chdir(finished)
    fill = {"corpus": tiny_corpus.root, "sweep": finished / "sweep", "runs": finished / "runs", "work": finished}
    argv = [a.format(**fill) for a in argv]
    if "--output" not in argv and command == "train_proxy":
        argv += ["--output", str(finished / "runs"), "--wandb", "off"] if "--wandb" not in argv else \
            ["--output", str(finished / "runs")]
    before = sorted(p.name for p in finished.iterdir())
    check_bad_input(COMMANDS[command], argv, capsys, names=names, code=code,
                    watched=[finished / "runs", finished / "sweep", tiny_corpus.root])
    assert sorted(p.name for p in finished.iterdir()) == before
    assert not Path(finished.parent / "x").exists()


def test_a_bad_wandb_key_is_one_error_before_any_run(finished, tiny_corpus, tmp_path):
    """In a fresh process, as users meet it (wandb keeps its login state for the life of a process)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"} | {"WANDB_API_KEY": "not-a-key"}
    done = subprocess.run([sys.executable, "-m", "regmix.train_proxy", "--config", str(finished / "sweep"),
                           "--corpus", str(tiny_corpus.root), "--output", str(tmp_path / "wb"), "--wandb", "online"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith("error: --wandb online: wandb cannot log") and not (tmp_path / "wb").exists()


def test_a_full_disk_while_checkpointing_fails_the_run_in_one_line(finished, tiny_corpus, tmp_path, capsys,
                                                                    monkeypatch):
    fsync = os.fsync

    def full(fd: int) -> None:
        if ".checkpoint.pt.tmp." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, "No space left on device")
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full)
    save_run_config(make_config("n1", max_step=6, save_step_interval=3), tmp_path / "sweep" / "n1.yaml")
    check_bad_input(train_proxy.main, ["--config", tmp_path / "sweep", "--corpus", tiny_corpus.root, "--output",
                                       tmp_path / "full", "--wandb", "off", "--no-progress"], capsys,
                    names=[str(tmp_path / "full")], code=1, watched=[finished / "runs", tiny_corpus.root])
    assert not list((tmp_path / "full").rglob("*.tmp")) and not (tmp_path / "full" / "n1" / "result.json").exists()


def test_a_symlinked_lock_or_log_never_writes_outside_the_run(finished, tiny_corpus, tmp_path, capsys):
    """A run folder's lock or metrics.jsonl planted as a link to another file: that file is never written. The
    lock is refused (bad input); the log is replaced by the run's own file."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    for planted in ("lock", "metrics.jsonl"):
        save_run_config(make_config("n1", max_step=2), tmp_path / planted / "sweep" / "n1.yaml")
        run = tmp_path / planted / "runs" / "n1"
        run.mkdir(parents=True)
        (run / planted).symlink_to(victim)
        argv = ["--config", tmp_path / planted / "sweep", "--corpus", tiny_corpus.root, "--output", run.parent,
                "--wandb", "off", "--no-progress"]
        if planted == "lock":
            check_bad_input(train_proxy.main, argv, capsys, names=[str(run / "lock")], watched=[victim])
        else:
            assert run_command(train_proxy.main, [str(a) for a in argv]) == 0
            assert not (run / planted).is_symlink()
        assert victim.read_text() == "precious\n"
