"""Bad input to the commands that compute results (collect, fit, simulate): one line on stderr naming the flag or
file, exit code 2, no traceback, and the CSVs, model and optimal mixture already there untouched; a full disk while
writing: exit code 1, the file and the full disk named, the old files byte-identical."""

from __future__ import annotations

import errno
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_bad_input import check_bad_input, folder_hashes
from test_collect import DOMAINS, VALID, make_sweep
from test_wandb_runs import offline_run_file

from regmix.core.files import ConfigError, check_outputs
from regmix.core.mixture import Mixture
from regmix.regression import fit, simulate
from regmix.settings.run_config import RunConfig, save_run_config
from regmix.settings.training import TrainingSettings
from regmix.study import collect

COMMANDS = {"collect": collect.main, "fit": fit.main, "simulate": simulate.main}
NAMES = [f"n{i}" for i in range(1, 7)]
MIXTURES, LOSSES = "train_mixture_1m.csv", "train_pile_loss_1m.csv"
# Each command writes into the folders with good results (`--output`); the placeholders are filled by `work`.
COLLECT = ["--configs", "{configs}", "--runs", "{runs}", "--output", "{data}"]
FIT = ["--mixtures", "{data}/" + MIXTURES, "--losses", "{data}/" + LOSSES, "--model", "linear", "--folds", "1",
       "--output", "{model}"]
SIMULATE = ["--model", "{model}", "--prior", "{prior}", "--num-candidates", "2000", "--top-k", "8", "--screen", "1",
            "--threads", "1", "--quiet", "--output", "{optimal}"]


def replaced(argv: list[str], flag: str, value: str) -> list[str]:
    """`argv` with `flag`'s value replaced (or the flag added)."""
    if flag not in argv:
        return [*argv, flag, value]
    at = argv.index(flag) + 1
    return [*argv[:at], value, *argv[at + 1:]]


def fit_on(mixtures: str = "{data}/" + MIXTURES, losses: str = "{data}/" + LOSSES) -> list[str]:
    return replaced(replaced(FIT, "--mixtures", mixtures), "--losses", losses)


# (id, command, argv, names: every one of them must be in the line on stderr)
CASES = [
    ("configs folder missing", "collect", replaced(COLLECT, "--configs", "{work}/nope"), ["nope"]),
    ("configs folder empty", "collect", replaced(COLLECT, "--configs", "{bad}/empty"), ["empty", "no config"]),
    ("config not YAML", "collect", replaced(COLLECT, "--configs", "{bad}/broken"), ["n1.yaml"]),
    ("runs folder missing", "collect", replaced(COLLECT, "--runs", "{work}/gone"), ["gone"]),
    ("wandb folder missing", "collect", [*COLLECT[:2], "--wandb-dir", "{work}/nowandb", *COLLECT[4:]], ["nowandb"]),
    ("no loss source", "collect", [*COLLECT[:2], *COLLECT[4:]], ["--runs", "--wandb-dir"]),
    ("step negative", "collect", [*COLLECT, "--step", "-1"], ["--step"]),
    ("step not a number", "collect", [*COLLECT, "--step", "ten"], ["--step"]),
    ("scale with a slash", "collect", [*COLLECT, "--scale", "1m/../x"], ["--scale"]),
    ("corpus with a space", "collect", [*COLLECT, "--corpus", "the pile"], ["--corpus"]),
    ("output is a file", "collect", replaced(COLLECT, "--output", "{bad}/file.txt"), ["file.txt"]),
    ("runs of other mixtures", "collect", replaced(COLLECT, "--configs", "{bad}/resynthesized"),
     ["{runs}", "another mixture"]),
    ("no run finished", "collect", replaced(COLLECT, "--runs", "{bad}/failed/runs"), ["failed/runs", "no usable run"]),
    ("strict with runs missing", "collect", [*replaced(COLLECT, "--runs", "{bad}/some/runs"), "--strict"],
     ["{configs}", "--strict", "missing: n5"]),
    ("truncated wandb run file", "collect", [*COLLECT[:2], "--wandb-dir", "{bad}/wandb", *COLLECT[4:]],
     ["run-a.wandb", "truncated"]),
    ("folds zero", "fit", replaced(FIT, "--folds", "0"), ["--folds"]),
    ("folds negative", "fit", replaced(FIT, "--folds", "-2"), ["--folds"]),
    ("more folds than runs", "fit", replaced(FIT, "--folds", "10"), [LOSSES, "10 folds"]),
    ("extrapolation above 1", "fit", [*FIT, "--extrapolation", "1.5"], ["--extrapolation"]),
    ("threads zero", "fit", [*FIT, "--threads", "0"], ["--threads"]),
    ("regressor unknown", "fit", replaced(FIT, "--model", "xgboost"), ["--model"]),
    ("mixture CSV missing", "fit", fit_on(mixtures="{bad}/none.csv"), ["none.csv", "not found"]),
    ("loss CSV empty", "fit", fit_on(losses="{bad}/empty_loss.csv"), ["empty_loss.csv", "empty"]),
    ("loss CSV header only", "fit", fit_on(losses="{bad}/header_loss.csv"), ["header_loss.csv", "only a header"]),
    ("NaN loss", "fit", fit_on(losses="{bad}/nan_loss.csv"), ["nan_loss.csv", "not finite"]),
    ("mixture not summing to 1", "fit", fit_on(mixtures="{bad}/sum_mixture.csv"), ["sum_mixture.csv", "sum to"]),
    ("negative weight", "fit", fit_on(mixtures="{bad}/negative_mixture.csv"), ["negative_mixture.csv", "negative"]),
    ("run indices differ", "fit", fit_on(losses="{bad}/shifted_loss.csv"), ["shifted_loss.csv", "only in losses"]),
    ("loss column in the mixture CSV", "fit", fit_on(mixtures="{bad}/column_mixture.csv"),
     ["column_mixture.csv", "metric/web_val_loss"]),
    ("column twice", "fit", fit_on(mixtures="{bad}/twice_mixture.csv"), ["twice_mixture.csv", "more than once"]),
    ("too few runs", "fit", fit_on("{bad}/few_mixture.csv", "{bad}/few_loss.csv"), ["few_loss.csv", "too few runs"]),
    ("target not in the CSVs", "fit", [*FIT, "--target", "arxiv"], [LOSSES, "arxiv"]),
    ("top-k zero", "simulate", replaced(SIMULATE, "--top-k", "0"), ["--top-k"]),
    ("fewer candidates than top-k", "simulate", replaced(SIMULATE, "--num-candidates", "4"),
     ["--num-candidates", "--top-k"]),
    ("simulate threads zero", "simulate", replaced(SIMULATE, "--threads", "0"), ["--threads"]),
    ("temperature zero", "simulate", [*SIMULATE, "--temperature", "0"], ["--temperature"]),
    ("temperature negative", "simulate", [*SIMULATE, "--temperature", "-0.5"], ["--temperature"]),
    ("screen zero", "simulate", replaced(SIMULATE, "--screen", "0"), ["--screen"]),
    ("maximum usage NaN", "simulate", [*SIMULATE, "--maximum-usage", "nan"], ["--maximum-usage"]),
    ("seed negative", "simulate", [*SIMULATE, "--seed", "-1"], ["--seed"]),
    ("target not in the model", "simulate", [*SIMULATE, "--target", "arxiv"], ["model.npz", "arxiv", "'web'"]),
    ("target weight negative", "simulate", [*SIMULATE, "--target", "web=-1"], ["--target"]),
    ("plot over the config", "simulate", [*SIMULATE, "--plot", "{optimal}"], ["--plot"]),
    ("plot over the model", "simulate", [*SIMULATE, "--plot", "{model}"], ["--plot", "--model"]),
    ("config over the model", "simulate", replaced(SIMULATE, "--output", "{model}"), ["--output", "--model"]),
    ("config over the prior", "simulate", replaced(SIMULATE, "--output", "{prior}"), ["--output", "--prior"]),
    ("config over a folder", "simulate", replaced(SIMULATE, "--output", "{data}"), ["--output", "not a plain file"]),
    ("model over the mixture CSV", "fit", replaced(FIT, "--output", "{data}/" + MIXTURES), ["--output",
                                                                                               "--mixtures"]),
    ("model over a folder", "fit", replaced(FIT, "--output", "{data}"), ["--output", "not a plain file"]),
    ("prior of other domains", "simulate", replaced(SIMULATE, "--prior", "{bad}/other_prior.yaml"),
     ["other_prior.yaml", "model.npz", "math"]),
    ("prior missing", "simulate", replaced(SIMULATE, "--prior", "{bad}/no_prior.yaml"), ["no_prior.yaml"]),
    ("model missing", "simulate", replaced(SIMULATE, "--model", "{bad}/no_model.npz"), ["no_model.npz", "not found"]),
    ("model cut short", "simulate", replaced(SIMULATE, "--model", "{bad}/cut.npz"), ["cut.npz", "damaged"]),
    ("model a pickle", "simulate", replaced(SIMULATE, "--model", "{bad}/old.joblib"), ["old.joblib", "re-fit"]),
]


def _write_bad_inputs(work: Path, bad: Path) -> None:
    """Every damaged file and folder the cases point at, made from the good ones."""
    (bad / "empty").mkdir(parents=True)
    shutil.copytree(work / "configs", bad / "broken")
    (bad / "broken" / "n1.yaml").write_text("train: [never closed\n")
    (bad / "file.txt").write_text("a file where a folder should be\n")
    for name in NAMES:  # the configs written again: the runs in work/runs trained on other mixtures
        save_run_config(RunConfig(name, Mixture(DOMAINS, [0.2, 0.3, 0.5]), VALID, TrainingSettings(max_step=10)),
                        bad / "resynthesized" / f"{name}.yaml")
    make_sweep(bad / "failed", NAMES, status=dict.fromkeys(NAMES, "failed"))
    make_sweep(bad / "some", NAMES, runs=NAMES[:4])
    cut = offline_run_file(bad / "wandb" / "offline-run-1" / "run-a.wandb", "n1", "a",
                           [{"trainer/global_step": 10, "metric/web_val_loss": 2.0, "metric/code_val_loss": 3.0}])
    cut.write_bytes(cut.read_bytes()[:-30])
    mixtures = pd.read_csv(work / "data" / MIXTURES)
    losses = pd.read_csv(work / "data" / LOSSES)
    (bad / "empty_loss.csv").write_text("")
    losses.iloc[:0].to_csv(bad / "header_loss.csv", index=False)
    variants = {"nan_loss.csv": losses.assign(**{"metric/web_val_loss": [np.nan, *losses.iloc[1:, 1]]}),
                "sum_mixture.csv": mixtures.assign(train_web=mixtures["train_web"] + 0.3),
                "negative_mixture.csv": mixtures.assign(train_books=-mixtures["train_books"]),
                "shifted_loss.csv": losses.assign(index=losses["index"] + 100),
                "column_mixture.csv": mixtures.assign(**{"metric/web_val_loss": 1.0}),
                "few_mixture.csv": mixtures.iloc[:3], "few_loss.csv": losses.iloc[:3]}
    for name, table in variants.items():
        table.to_csv(bad / name, index=False)
    text = (work / "data" / MIXTURES).read_text().splitlines()
    (bad / "twice_mixture.csv").write_text("\n".join([text[0] + ",train_web", *(line + ",0" for line in text[1:])]))
    (bad / "other_prior.yaml").write_text("train: {train_web: 0.5, train_code: 0.3, train_math: 0.2}\n")
    model = (work / "model.npz").read_bytes()
    (bad / "cut.npz").write_bytes(model[:len(model) // 2])
    (bad / "old.joblib").write_bytes(pickle.dumps({"regressor": None}, protocol=pickle.HIGHEST_PROTOCOL))


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A finished sweep with its CSVs, model and optimal mixture (the results no bad input may touch), and the bad
    inputs in work/bad."""
    work = tmp_path_factory.mktemp("bad_results")
    make_sweep(work, NAMES)
    (work / "prior.yaml").write_text("train: {train_web: 0.5, train_code: 0.3, train_books: 0.2}\n")
    paths = filled(work)
    for command, argv in (("collect", COLLECT), ("fit", FIT), ("simulate", SIMULATE)):
        COMMANDS[command]([a.format(**paths) for a in argv])
    _write_bad_inputs(work, work / "bad")
    return work


def filled(work: Path) -> dict[str, Path]:
    return {"work": work, "bad": work / "bad", "configs": work / "configs", "runs": work / "runs",
            "data": work / "data", "model": work / "model.npz", "prior": work / "prior.yaml",
            "optimal": work / "optimal" / "optimal_mixture.yaml"}


def results(work: Path) -> list[Path]:
    """What the three commands computed and wrote, and their inputs."""
    return [work / "data", work / "model.npz", work / "optimal", work / "configs", work / "runs", work / "bad"]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_result_input(case, work, capsys):
    _, command, argv, names = case
    paths = filled(work)
    line = check_bad_input(COMMANDS[command], [a.format(**paths) for a in argv], capsys,
                           names=[n.format(**paths) for n in names], watched=results(work))
    assert all(n.format(**paths) in line for n in names), line


def disk_full(monkeypatch: pytest.MonkeyPatch, from_call: int) -> None:
    """Every fsync from the `from_call`-th on fails as on a full disk (with no file name, as the kernel's error)."""
    calls, real = [], os.fsync

    def fsync(fd: int) -> None:
        calls.append(fd)
        if len(calls) >= from_call:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


@pytest.mark.parametrize("command, change, from_call, name", [
    # collect: the mixture CSV is on disk, the loss CSV fails: neither may replace the old pair
    ("collect", lambda argv: replaced(argv, "--runs", "{bad}/some/runs"), 2, LOSSES),
    ("fit", lambda argv: [*argv, "--target", "web"], 1, "model.npz"),
    # simulate: the config is on disk, its plot fails: neither may replace the old ones
    ("simulate", lambda argv: [*argv, "--maximum-usage", "1.5"], 2, "optimal_mixture.png"),
], ids=["collect", "fit", "simulate"])
def test_a_full_disk_keeps_the_old_results(command, change, from_call, name, work, tmp_path, capsys, monkeypatch):
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    disk_full(monkeypatch, from_call)
    argv = [a.format(**filled(copy)) for a in change({"collect": COLLECT, "fit": FIT, "simulate": SIMULATE}[command])]
    line = check_bad_input(COMMANDS[command], argv, capsys, names=[name], code=1, watched=results(copy))
    assert "No space left on device" in line and "the disk is full" in line
    monkeypatch.undo()
    before = folder_hashes(*results(copy))
    COMMANDS[command](argv)
    assert folder_hashes(*results(copy)) != before  # with room it replaces them: the files kept above were at stake


def test_an_output_inside_an_input_folder_or_on_a_device_is_refused(tmp_path):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "manifest.json").write_text("{}")
    with pytest.raises(ConfigError, match="--output is inside the input --prior"):
        check_outputs({"--output": tmp_path / "corpus" / "manifest.json"}, {"--prior": tmp_path / "corpus"})
    with pytest.raises(ConfigError, match="/dev/null: --output: not a plain file"):
        check_outputs({"--output": "/dev/null"}, {})
    check_outputs({"--output": tmp_path / "new.yaml", "--plot": tmp_path / "new.png"}, {"--prior": tmp_path / "corpus"})
