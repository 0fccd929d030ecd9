"""The one training loop: static runs unchanged, schedules that change the mixture and resume exactly."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.results import load_result
from regmix.core.schema import CHECKPOINT_NAME, HISTORY_NAME
from regmix.online.policy import OnlinePolicy
from regmix.settings.run_config import RunConfig, Stage, load_run_config, save_run_config
from regmix.settings.training import TrainingSettings
from regmix.train.sweep import train_proxies

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = dict(model_name="tinyllama_demo", global_batch_size=8, micro_batch_size=4, max_step=10,
                learning_rate=3e-3, min_lr=3e-4, warmup_steps=2, lr_schedule="cosine", eval_step_interval=5,
                save_step_interval=3, block_size=32, eval_tokens=128, seed=3)
START = {"alpha": 0.5, "beta": 0.25, "gamma": 0.125, "delta": 0.125}
VALID = ("alpha", "beta", "gamma")


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def config(name: str = "g", **schedule) -> RunConfig:
    return RunConfig(name, Mixture.from_dict(START), VALID, TrainingSettings(**SETTINGS), **schedule)


def piecewise() -> RunConfig:
    first = Mixture.from_dict({"alpha": 0.9, "beta": 0.1})
    second = Mixture.from_dict({"gamma": 0.5, "delta": 0.5})
    stages = (Stage(4, first), Stage(10, second))
    return RunConfig("p", Mixture(("alpha", "beta", "gamma", "delta"), [0.36, 0.04, 0.3, 0.3]), VALID,
                     TrainingSettings(**SETTINGS), stages=stages)


def online() -> RunConfig:
    return dataclasses.replace(config("o"), policy={"policy": "highest_loss", "rate": 0.5},
                             training=TrainingSettings(**{**SETTINGS, "eval_step_interval": 2}))


def stopped_at(monkeypatch, stop: int, train_it) -> None:
    """Run `train_it` with the loop interrupted when it reaches step `stop` (the last checkpoint stays)."""
    from regmix.train import loop

    original = loop.learning_rate

    def stop_there(step, settings):
        if step == stop:
            raise KeyboardInterrupt
        return original(step, settings)

    monkeypatch.setattr(loop, "learning_rate", stop_there)
    with pytest.raises(KeyboardInterrupt):
        train_it()
    monkeypatch.setattr(loop, "learning_rate", original)


def test_static_run_gives_the_losses_of_the_trainer_before_the_single_loop(tiny_corpus, tmp_path):
    """Golden values: the same config trained by the pre-refactor `train_proxy` (commit 8e218dc), scored on the
    whole valid stream as then (probe_share 0); with the split, the held-out part's windows differ and the probe
    losses come with the result."""
    whole = dataclasses.replace(config(), training=TrainingSettings(**{**SETTINGS, "probe_share": 0.0}))
    result = train_proxies([whole], tiny_corpus, [tmp_path / "g"], wandb_mode="off")[0]
    assert result.probe_losses == {}
    split = train_proxies([config()], tiny_corpus, [tmp_path / "split"], wandb_mode="off")[0]
    assert set(split.probe_losses) == set(split.valid_losses) == set(result.valid_losses)
    assert split.probe_losses != split.valid_losses
    assert result.valid_losses == pytest.approx(
        {"alpha": 3.516082763671875, "beta": 3.8878469467163086, "gamma": 4.281304359436035}, abs=1e-6)
    rows = [json.loads(line) for line in (tmp_path / "g" / HISTORY_NAME).read_text().splitlines()]
    assert [r["metric/train_loss"] for r in rows] == pytest.approx([3.9917473793029785, 3.6361083984375], abs=1e-6)
    assert result.trajectory == [] and result.requested.close_to(Mixture.from_dict(START))
    assert sum(result.achieved.weights) == pytest.approx(1.0) and set(result.achieved.domains) == set(START)


def test_piecewise_schedule_switches_mixture_at_its_stage(tiny_corpus, tmp_path):
    path = tmp_path / "p.yaml"
    save_run_config(piecewise(), path)
    loaded = load_run_config(path)
    assert [s.until_step for s in loaded.stages] == [4, 10] and loaded.train.close_to(piecewise().train)
    result = train_proxies([loaded], tiny_corpus, [tmp_path / "run"], wandb_mode="off")[0]
    assert [t["step"] for t in result.trajectory] == [0, 4]
    assert result.trajectory[1]["mixture"] == {"gamma": 0.5, "delta": 0.5}
    # 4 steps x 8 sequences of alpha/beta only, then 6 x 8 of gamma/delta only
    achieved = result.achieved.to_dict()
    assert achieved["alpha"] + achieved["beta"] == pytest.approx(32 / 80)
    assert achieved["gamma"] + achieved["delta"] == pytest.approx(48 / 80)
    rows = [json.loads(line) for line in (tmp_path / "run" / HISTORY_NAME).read_text().splitlines()]
    assert rows[0]["mixture/gamma"] == 0.5 and rows[0]["achieved/alpha"] + rows[0]["achieved/beta"] == \
        pytest.approx(32 / 40)


@pytest.mark.parametrize("text, problem", [
    ("train: {train_a: 1.0}\nschedule: []\n", "has no stages"),
    ("schedule: [{until_step: 4, train: {train_a: 1.0}}]\n", "before max_step"),
    ("schedule: [{until_step: 20, train: {train_a: 1.0}}, {until_step: 20, train: {train_a: 1.0}}]\n",
     "must be an integer above 20"),
    ("train: {train_a: 0.5, train_b: 0.5}\nschedule: [{until_step: 20, train: {train_a: 1.0}}]\n",
     "differs from the schedule"),
    ("train: {train_a: 1.0}\nschedule: {rate: 2}\n", "must be a list"),
])
def test_bad_schedules_are_one_error_naming_the_file(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "max_step: 10\n")
    with pytest.raises(ConfigError, match=problem) as error:
        load_run_config(path)
    assert str(path) in str(error.value)


def test_unknown_online_policy_or_setting_names_the_file(tiny_corpus, tmp_path):
    for policy, problem in (({"policy": "nope"}, "unknown online policy 'nope'"),
                            ({"policy": "highest_loss", "speed": 3}, "has no settings \\['speed'\\]"),
                            ({"policy": "highest_loss", "rate": 7}, "rate must be in")):
        with pytest.raises(ConfigError, match=problem):
            train_proxies([dataclasses.replace(config(), policy=policy)], tiny_corpus, [tmp_path / "x"],
                          sources=["exp.yaml"], wandb_mode="off")


KILL_SCRIPT = """
import os, signal, sys, torch
from regmix.settings.run_config import load_run_config
from regmix.data.corpus import load_manifest
from regmix.data.sampler import MixtureSampler
from regmix.train.sweep import train_proxies
torch.set_num_threads(1)
config, corpus, run_dir, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
draws, original = [0], MixtureSampler.next_batch
def next_batch(self, size, part=(0, 1)):
    draws[0] += 1
    if draws[0] > kill_after:
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, size, part)
MixtureSampler.next_batch = next_batch
train_proxies([load_run_config(config)], load_manifest(corpus), [run_dir], wandb_mode="off")
"""


def aioli() -> RunConfig:
    policy = {"policy": "aioli", "update_steps": 6, "lp_steps": 1, "sweeps": 1, "one_hot_factor": 0.7, "eta": 2.0}
    return dataclasses.replace(config("a"), policy=policy)


@pytest.fixture(scope="module")
def reference(tiny_corpus, tmp_path_factory) -> Path:
    """A kept checkpoint of a finished run: DoReMi's reference model."""
    run_dir = tmp_path_factory.mktemp("reference")
    train_proxies([config("ref")], tiny_corpus, [run_dir], wandb_mode="off", keep_checkpoint=True)
    return run_dir / CHECKPOINT_NAME


def doremi(reference: Path) -> RunConfig:
    return dataclasses.replace(config("dr"), policy={"policy": "doremi", "reference": str(reference), "eta": 5.0})


def doge(reference: Path) -> RunConfig:
    return dataclasses.replace(config("dg"), policy={"policy": "doge", "update_steps": 2, "mu": 0.001})


def skillit(reference: Path) -> RunConfig:
    skills = reference.parent / "skills.json"
    skills.write_text(json.dumps({d: {v: 3.0 + 0.1 * i + 0.05 * j for j, v in enumerate(VALID)}
                                  for i, d in enumerate(START)}))
    return dataclasses.replace(config("sk"), policy={"policy": "skillit", "skills": str(skills), "update_steps": 3})


@pytest.mark.parametrize("make", [piecewise, online, aioli, doremi, doge, skillit],
                         ids=["piecewise", "online", "aioli", "doremi", "doge", "skillit"])
def test_changing_schedule_killed_and_resumed_matches_the_uninterrupted_run(tiny_corpus, tmp_path, make, request):
    path = tmp_path / "config.yaml"
    takes_reference = make in (doremi, doge, skillit)
    save_run_config(make(request.getfixturevalue("reference")) if takes_reference else make(), path)
    run_config = load_run_config(path)
    whole = train_proxies([run_config], tiny_corpus, [tmp_path / "whole"], wandb_mode="off")[0]
    assert len(whole.trajectory) >= 2, "the schedule never changed the mixture"

    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(path), str(tiny_corpus.root),
                             str(tmp_path / "resumed"), str(2 * 7 + 1)], cwd=ROOT, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    checkpoint = torch.load(tmp_path / "resumed" / CHECKPOINT_NAME, weights_only=True)
    assert checkpoint["step"] == 6 and not (tmp_path / "resumed" / "result.json").exists()

    resumed = train_proxies([run_config], tiny_corpus, [tmp_path / "resumed"], wandb_mode="off")[0]
    assert resumed.valid_losses == whole.valid_losses
    assert resumed.trajectory == whole.trajectory
    assert resumed.achieved.to_dict() == whole.achieved.to_dict()
    history = [(tmp_path / run / HISTORY_NAME).read_text() for run in ("whole", "resumed")]
    strip = [[{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in h.splitlines()]
             for h in history]
    assert strip[0] == strip[1]
    assert load_result(tmp_path / "resumed").trajectory == whole.trajectory


def test_online_policy_moves_weight_to_the_worst_domain(tiny_corpus, tmp_path):
    result = train_proxies([online()], tiny_corpus, [tmp_path / "o"], wandb_mode="off")[0]
    rows = [json.loads(line) for line in (tmp_path / "o" / HISTORY_NAME).read_text().splitlines()]
    first = rows[0]
    worst = max(VALID, key=lambda d: first[f"metric/{d}_val_loss"])
    after = next(t for t in result.trajectory if t["step"] == 2)["mixture"]
    assert after[worst] == pytest.approx(0.5 * START[worst] + 0.5)


def test_resume_refuses_another_schedule(tiny_corpus, tmp_path, monkeypatch):
    stopped_at(monkeypatch, 6, lambda: train_proxies([piecewise()], tiny_corpus, [tmp_path / "run"], wandb_mode="off"))
    last = Stage(10, Mixture.from_dict({"delta": 1.0}))
    changed = dataclasses.replace(piecewise(), stages=(piecewise().stages[0], last))
    with pytest.raises(ConfigError, match="another schedule"):
        train_proxies([changed], tiny_corpus, [tmp_path / "run"], wandb_mode="off")
    with pytest.raises(ConfigError, match=r"other settings \(learning_rate\)"):
        slower = TrainingSettings(**{**SETTINGS, "learning_rate": 1e-3})
        train_proxies([dataclasses.replace(piecewise(), training=slower)], tiny_corpus, [tmp_path / "run"],
                      wandb_mode="off")


def test_a_damaged_checkpoint_is_one_error(tiny_corpus, tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / CHECKPOINT_NAME).write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="unreadable checkpoint") as error:
        train_proxies([config()], tiny_corpus, [tmp_path / "run"], wandb_mode="off")
    assert CHECKPOINT_NAME in str(error.value)


def test_nan_validation_loss_fails_the_run_without_a_crash(tiny_corpus, tmp_path, monkeypatch):
    from regmix.train.engine import SingleEngine

    monkeypatch.setattr(SingleEngine, "evaluate", lambda self, valid, size: [{d: math.nan for d in valid}])
    result = train_proxies([config()], tiny_corpus, [tmp_path / "run"], wandb_mode="off")[0]
    assert result.status == "failed" and "validation loss" in result.error and result.step == 5
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_resume_past_a_shrunk_max_step_evaluates_before_finishing(tiny_corpus, tmp_path, monkeypatch):
    # the last checkpoint is at step 3
    stopped_at(monkeypatch, 4, lambda: train_proxies([config()], tiny_corpus, [tmp_path / "run"], wandb_mode="off"))
    shorter = dataclasses.replace(config(), training=TrainingSettings(**{**SETTINGS, "max_step": 2}))
    result = train_proxies([shorter], tiny_corpus, [tmp_path / "run"], wandb_mode="off")[0]
    assert result.ok and result.step == 3 and set(result.valid_losses) == set(VALID)


class _Elsewhere(OnlinePolicy):
    """A policy that sends the run to a domain the corpus lacks."""

    interval = 2

    def on_interval(self, step, counts, probe):
        return Mixture.from_dict({"nowhere": 1.0}) if step else None


def test_a_policy_mixture_outside_the_corpus_is_one_error_naming_the_config(tiny_corpus, tmp_path, monkeypatch):
    from regmix.train import schedule

    monkeypatch.setattr(schedule, "make_policy", lambda spec, initial, source: _Elsewhere(initial))
    with pytest.raises(ConfigError, match=r"exp.yaml \(policy _Elsewhere at step 2\): unknown domains \['nowhere'\]"):
        train_proxies([dataclasses.replace(config(), policy={"policy": "highest_loss"})], tiny_corpus,
                      [tmp_path / "x"], sources=["exp.yaml"], wandb_mode="off")


def test_a_bad_policy_is_refused_when_its_config_is_read(tmp_path):
    path = tmp_path / "o.yaml"
    path.write_text("train: {train_a: 1.0}\nschedule: {policy: highest_loss, rate: 5}\n")
    with pytest.raises(ConfigError, match="o.yaml: policy 'highest_loss': rate must be in"):
        load_run_config(path)


def test_sweep_does_not_reuse_a_result_of_another_schedule(tiny_corpus, tmp_path):
    from regmix.train.sweep import train_sweep

    path = tmp_path / "configs" / "p.yaml"
    save_run_config(piecewise(), path)
    assert [e.status for e in train_sweep([path], tiny_corpus, tmp_path / "runs", wandb_mode="off",
                                          progress=False, report=lambda line: None)] == ["finished"]
    first, second = piecewise().stages
    swapped = Stage(4, second.mixture), Stage(10, first.mixture)
    save_run_config(dataclasses.replace(piecewise(), stages=swapped, train=Mixture(
        ("gamma", "delta", "alpha", "beta"), [0.2, 0.2, 0.54, 0.06])), path)
    entry = train_sweep([path], tiny_corpus, tmp_path / "runs", wandb_mode="off", progress=False,
                        report=lambda line: None)[0]
    assert entry.status == "failed" and "another schedule" in entry.detail
