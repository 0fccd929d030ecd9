"""Proxy training: loss falls, sampling follows the weights, exact resume, sweeps survive bad configs."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_VOCAB
from scipy.stats import chisquare

from regmix import train_proxy
from regmix.cli import run_command
from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.results import load_result
from regmix.core.schema import CHECKPOINT_NAME, CONFIG_NAME, HISTORY_NAME, LOCK_NAME
from regmix.data.sampler import MixtureSampler, TokenStream
from regmix.data.validation import split_documents, validation_sets
from regmix.settings.run_config import RunConfig, load_run_config, run_config_paths, save_run_config
from regmix.settings.training import TrainingSettings
from regmix.train import engine as engine_module
from regmix.train.engine import CrossEntropy
from regmix.train.locks import acquire_lock, release_lock
from regmix.train.models import PRESETS, build_model, non_embedding_parameters
from regmix.train.runlog import resolve_wandb_mode
from regmix.train.sweep import train_proxies, train_sweep
from regmix.train.wandb_runs import find_offline_runs, read_offline_run

WEIGHTS = {"alpha": 0.6, "beta": 0.3, "gamma": 0.1, "delta": 0.0}


def train_one(config, corpus, run_dir, **options):
    """One proxy through the loop with the single engine."""
    options.setdefault("wandb_mode", "off")
    return train_proxies([config], corpus, [run_dir], **options)[0]


def make_config(name: str = "n1", weights: dict = WEIGHTS, **settings) -> RunConfig:
    training = dict(model_name="tinyllama_demo", global_batch_size=8, micro_batch_size=4, max_step=12,
                    learning_rate=3e-3, min_lr=3e-4, warmup_steps=2, lr_schedule="cosine",
                    eval_step_interval=4, save_step_interval=3, block_size=32, eval_tokens=128, seed=7)
    training.update(settings)
    return RunConfig(name=name, train=Mixture.from_dict(weights), valid=("alpha", "beta", "gamma"),
                     training=TrainingSettings(**training))


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    torch.set_num_threads(1)  # tiny models: one thread is as fast and immune to busy cores


def test_presets_match_regmix():
    model = build_model("tinyllama_1M", vocab_size=50277, block_size=2048)
    c = model.config
    assert (c.n_layer, c.n_head, c.n_embd, c.intermediate_size) == (2, 8, 256, 512)
    assert c.padded_vocab_size == 50304 and c.block_size == 2048 and c.rotary_percentage == 1.0
    assert (c.norm_class_name, c.mlp_class_name, c.bias, c.parallel_residual) == ("RMSNorm", "LLaMAMLP", False, False)
    assert 1.0e6 < non_embedding_parameters(model) < 1.5e6
    assert PRESETS["tinyllama_1_1b"]["n_query_groups"] == 4
    with pytest.raises(ValueError, match="unknown model_name"):
        build_model("gpt5", 64, 32)


def test_proxy_trains_and_loss_falls(tiny_corpus, tmp_path):
    config = make_config(max_step=30, eval_step_interval=10, lr_schedule="constant", learning_rate=1e-2)
    result = train_one(config, tiny_corpus, tmp_path / "run")
    assert result.ok and result.step == 30 and result.tokens == 30 * 8 * 32
    assert set(result.valid_losses) == {"alpha", "beta", "gamma"}
    history = [json.loads(line) for line in (tmp_path / "run" / HISTORY_NAME).read_text().splitlines()]
    assert [row["trainer/global_step"] for row in history] == [10, 20, 30]
    assert history[-1]["metric/train_loss"] < math.log(TINY_VOCAB) - 1.0
    assert result.valid_losses["alpha"] < math.log(TINY_VOCAB) - 1.0
    assert load_result(tmp_path / "run").valid_losses == result.valid_losses
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_sampling_follows_weights_and_never_reads_zero_weight(tiny_corpus, monkeypatch):
    opened = []
    original = type(tiny_corpus).open_tokens
    monkeypatch.setattr(type(tiny_corpus), "open_tokens",
                        lambda self, split, domain: opened.append((split, domain)) or original(self, split, domain))
    sampler = MixtureSampler(tiny_corpus, Mixture.from_dict(WEIGHTS), block_size=16, seed=1)
    batches = [sampler.next_batch(50) for _ in range(60)]
    counts = np.array([sampler.counts.get(d, 0) for d in ("alpha", "beta", "gamma")])
    assert counts.sum() == 3000 and ("train", "delta") not in opened and "delta" not in sampler.counts
    assert chisquare(counts, 3000 * np.array([0.6, 0.3, 0.1])).pvalue > 1e-3
    assert all(b.shape == (50, 17) and b.dtype == torch.int64 and int(b.max()) < TINY_VOCAB for b in batches)

    again = MixtureSampler(tiny_corpus, Mixture.from_dict(WEIGHTS), block_size=16, seed=1)
    assert torch.equal(again.next_batch(50), batches[0])
    resumed = MixtureSampler(tiny_corpus, Mixture.from_dict(WEIGHTS), block_size=16, seed=1)
    resumed.load_state_dict(again.state_dict())
    assert torch.equal(resumed.next_batch(50), batches[1])

    resumed.set_weights(Mixture.from_dict({"alpha": 0.0, "beta": 0.0, "gamma": 0.0, "delta": 1.0}))
    resumed.next_batch(20)
    assert resumed.counts["delta"] == 20


def test_token_stream_crosses_shards_and_wraps_short_domains():
    shards = [np.arange(5, dtype=np.uint16), np.array([], dtype=np.uint16), np.arange(5, 8, dtype=np.uint16)]
    stream = TokenStream(shards)
    assert stream.total == 8
    assert stream.window(3, 4).tolist() == [3, 4, 5, 6]
    assert stream.window(6, 12).tolist() == [6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1]
    assert set(stream.random_starts(np.random.default_rng(0), 50, 20).tolist()) == {0}


def test_validation_sets_are_fixed_and_capped(tiny_corpus):
    sets = validation_sets(tiny_corpus, ("alpha", "beta", "gamma"), block_size=32, eval_tokens=256)
    assert not sets.split and sets.probe is sets.heldout
    assert {d: len(w) for d, w in sets.heldout.items()} == {"alpha": 8, "beta": 8, "gamma": 8}
    again = validation_sets(tiny_corpus, ("alpha",), block_size=32, eval_tokens=10**9)
    assert len(again.heldout["alpha"]) == (1200 - 1) // 32
    assert torch.equal(again.heldout["alpha"][0], sets.heldout["alpha"][0])


def test_split_keeps_every_document_whole_on_one_side():
    rng = np.random.default_rng(0)
    documents = [np.append(rng.integers(1, 60, size=n), 0) for n in rng.integers(5, 80, size=40)]
    tokens = np.concatenate(documents).astype(np.uint16)
    probe, heldout = split_documents(tokens, 0, 0.3, [7, 1])
    assert len(probe) + len(heldout) == len(tokens)
    assert probe[-1] == 0 and heldout[-1] == 0  # both end at a document border

    def documents_of(part):
        return {tuple(d) for d in np.split(part, np.flatnonzero(part == 0) + 1) if len(d)}

    assert documents_of(probe).isdisjoint(documents_of(heldout))
    assert documents_of(probe) | documents_of(heldout) == {tuple(d) for d in documents}
    assert 0.3 <= len(probe) / len(tokens) < 0.3 + 80 / len(tokens)
    again, _ = split_documents(tokens, 0, 0.3, [7, 1])
    other, _ = split_documents(tokens, 0, 0.3, [8, 1])
    assert np.array_equal(again, probe) and not np.array_equal(other, probe)
    one, rest = split_documents(tokens[:10], 0, 0.5, [0])  # too few documents: at least one on each side
    assert len(one) and len(rest)


def test_validation_split_gives_methods_and_scoring_different_windows(tiny_corpus):
    sets = validation_sets(tiny_corpus, ("alpha", "beta"), block_size=32, eval_tokens=256, probe_share=0.5)
    assert sets.split and set(sets.probe) == set(sets.heldout) == {"alpha", "beta"}
    probe_rows = {tuple(r.tolist()) for r in sets.probe["alpha"]}
    assert probe_rows.isdisjoint(tuple(r.tolist()) for r in sets.heldout["alpha"])


def test_resume_after_interruption_matches_uninterrupted_run(tiny_corpus, tmp_path, monkeypatch, capsys):
    config = make_config()
    whole = train_one(config, tiny_corpus, tmp_path / "whole")

    draws = {"n": 0}
    original = MixtureSampler.next_batch

    def crash_at_step_8(self, size, part=(0, 1)):
        draws["n"] += 1
        if draws["n"] > 2 * 7:  # two micro-batches a step: dies inside step 8, after the step-6 checkpoint
            raise KeyboardInterrupt
        return original(self, size, part)

    monkeypatch.setattr(MixtureSampler, "next_batch", crash_at_step_8)
    with pytest.raises(KeyboardInterrupt):
        train_one(config, tiny_corpus, tmp_path / "resumed")
    assert torch.load(tmp_path / "resumed" / CHECKPOINT_NAME, weights_only=True)["step"] == 6
    monkeypatch.setattr(MixtureSampler, "next_batch", original)
    history_path = tmp_path / "resumed" / HISTORY_NAME
    # a damaged line before the good ones (reported, they are kept) and one cut off by a crash while appending
    history_path.write_text("garbage\x00\n" + history_path.read_text() + '{"trainer/global_st')
    other = make_config(weights={"alpha": 0.2, "beta": 0.7, "gamma": 0.1, "delta": 0.0})
    with pytest.raises(ConfigError, match="another mixture"):
        train_one(other, tiny_corpus, tmp_path / "resumed")
    capsys.readouterr()
    resumed = train_one(config, tiny_corpus, tmp_path / "resumed")
    assert f"{history_path}:1: damaged line skipped" in capsys.readouterr().err

    assert resumed.step == whole.step == 12
    for domain, loss in whole.valid_losses.items():
        assert resumed.valid_losses[domain] == pytest.approx(loss, abs=1e-6)
    def history(run):
        return [json.loads(x) for x in (tmp_path / run / HISTORY_NAME).read_text().splitlines()]
    assert [r["trainer/global_step"] for r in history("resumed")] == [4, 8, 12]


def test_divergence_is_recorded_as_failed(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(engine_module, "next_token_loss",
                        lambda model, batch: model(batch[:, :-1]).sum() * float("nan"))
    result = train_one(make_config(), tiny_corpus, tmp_path / "nan")
    assert result.status == "failed" and "diverged" in result.error and result.step == 1
    assert load_result(tmp_path / "nan").status == "failed"


def test_sweep_reports_bad_configs_and_finishes_the_rest(tiny_corpus, tmp_path, capsys):
    folder = tmp_path / "configs"
    save_run_config(make_config("n1", max_step=4), folder / "n1.yaml")
    (folder / "n2.yaml").write_text("train: {train_alpha: 0.5, train_beta: [oops\n")
    save_run_config(make_config("n3", {"alpha": 0.5, "epsilon": 0.5}, max_step=4), folder / "n3.yaml")
    save_run_config(make_config("n4", {"beta": 0.2, "gamma": 0.8}, max_step=4), folder / "n4.yaml")
    paths = run_config_paths(folder)
    entries = train_sweep(paths, tiny_corpus, tmp_path / "runs", wandb_mode="off", progress=False)
    status = {e.name: e.status for e in entries}
    assert status == {"n1": "finished", "n2": "failed", "n3": "failed", "n4": "finished"}
    out = capsys.readouterr().out
    assert "2 failed, 2 finished" in out and "n2.yaml: not valid YAML" in out and "epsilon" in out
    assert load_run_config(tmp_path / "runs" / "n1" / CONFIG_NAME).train.to_dict() == WEIGHTS

    again = train_sweep(paths, tiny_corpus, tmp_path / "runs", wandb_mode="off", progress=False)
    assert {e.name: e.status for e in again} == {"n1": "skipped", "n2": "failed", "n3": "failed", "n4": "skipped"}

    save_run_config(make_config("n1", weights={"alpha": 0.5, "beta": 0.5}, max_step=4), folder / "n1.yaml")
    resynthesized = {e.name: e for e in train_sweep(paths, tiny_corpus, tmp_path / "runs", wandb_mode="off",
                                                        progress=False)}
    assert resynthesized["n1"].status == "failed" and "another mixture" in resynthesized["n1"].detail
    assert load_result(tmp_path / "runs" / "n1").requested.to_dict() == WEIGHTS  # kept, not overwritten


def _hold_lock_until_killed(path: str) -> None:
    acquire_lock(Path(path))
    time.sleep(600)


def test_locks_exclude_other_holders_and_die_with_their_holder(tmp_path):
    lock = tmp_path / "run" / LOCK_NAME
    fd = acquire_lock(lock)
    assert fd is not None and acquire_lock(lock) is None
    assert lock.read_text().split() == [str(os.getpid()), socket.gethostname()]
    release_lock(lock, fd)
    assert not lock.exists()

    holder = mp.get_context("spawn").Process(target=_hold_lock_until_killed, args=(str(lock),))
    holder.start()
    deadline = time.time() + 60
    while not (lock.exists() and lock.read_text().strip()) and time.time() < deadline:
        time.sleep(0.05)
    assert acquire_lock(lock) is None
    holder.kill()
    holder.join()
    fd = acquire_lock(lock)  # the dead holder's lock file is still there, its lock is not
    assert fd is not None
    release_lock(lock, fd)


def test_wandb_offline_run_holds_the_metrics(tiny_corpus, tmp_path):
    config = make_config("n7", max_step=8)
    result = train_one(config, tiny_corpus, tmp_path / "n7", wandb_mode="offline")
    files = find_offline_runs(tmp_path / "n7")
    assert len(files) == 1 and files[0].parent.name.startswith("offline-run-")
    run = read_offline_run(files[0].parent)
    assert run.name == "n7" and run.run_id
    assert run.config["train"]["train_alpha"] == 0.6 and run.config["model_name"] == "tinyllama_demo"
    final = [row for row in run.history if "metric/alpha_val_loss" in row][-1]
    assert final["trainer/global_step"] == 8
    for domain, loss in result.valid_losses.items():
        assert final[f"metric/{domain}_val_loss"] == pytest.approx(loss)
        assert final[f"metric/{domain}_val_ppl"] == pytest.approx(math.exp(loss))
    assert sum("metric/train_loss" in row for row in run.history) >= 8


def test_wandb_mode_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert resolve_wandb_mode("auto") == "offline"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    assert resolve_wandb_mode("auto") == "online"
    assert resolve_wandb_mode("off") == "off"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode("auto") == "off"


def test_in_place_cross_entropy_matches_torch():
    logits = torch.randn(40, 64, dtype=torch.float64)
    targets = torch.randint(0, 64, (40,))
    ours, theirs = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    loss = CrossEntropy.apply(ours * 1.0, targets)
    expected = torch.nn.functional.cross_entropy(theirs, targets)
    (2 * loss).backward()
    (2 * expected).backward()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-12)
    assert torch.allclose(ours.grad, theirs.grad, atol=1e-12)


def test_parallel_workers_share_a_sweep_and_respect_locks(tiny_corpus, tmp_path):
    folder = tmp_path / "configs"
    for i in range(1, 4):
        save_run_config(make_config(f"n{i}", max_step=3), folder / f"n{i}.yaml")
    runs = tmp_path / "runs"
    held = acquire_lock(runs / "n2" / LOCK_NAME)  # as if another machine were training n2
    entries = train_sweep(run_config_paths(folder), tiny_corpus, runs, workers=2, device="cpu",
                             wandb_mode="off", progress=False, report=lambda line: None)
    assert {e.name: e.status for e in entries} == {"n1": "finished", "n2": "busy", "n3": "finished"}
    assert (runs / "n2" / LOCK_NAME).exists() and not (runs / "n1" / LOCK_NAME).exists()
    release_lock(runs / "n2" / LOCK_NAME, held)
    sequential = train_one(make_config("n1", max_step=3), tiny_corpus, tmp_path / "alone")
    assert load_result(runs / "n1").valid_losses == pytest.approx(sequential.valid_losses, abs=1e-6)


def test_cli_trains_one_config_and_names_bad_inputs(tiny_corpus, tmp_path, monkeypatch, capsys):
    save_run_config(make_config("n9", max_step=2), tmp_path / "sweep" / "n9.yaml")
    monkeypatch.chdir(tmp_path)
    assert train_proxy.main(["--config", "sweep/n9.yaml", "--corpus", str(tiny_corpus.root), "--wandb", "off",
                    "--no-progress"]) == 0
    assert load_result(tmp_path / "runs" / "sweep" / "n9").ok
    assert run_command(train_proxy.main, ["--config", "sweep", "--corpus", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nowhere" in err and "no prepared corpus" in err
    assert run_command(train_proxy.main, ["--config", "nope.yaml", "--corpus", str(tiny_corpus.root)]) == 2
    assert "nope.yaml: no such config file or folder" in capsys.readouterr().err
    assert not (tmp_path / "runs" / tmp_path.name).exists()


def test_sweep_in_groups_matches_one_by_one(tiny_corpus, tmp_path):
    """group_size > 1 (the CUDA default) routes a sweep through the multi-proxy trainer, same results."""
    folder = tmp_path / "configs"
    mixtures = [WEIGHTS, {"beta": 0.2, "gamma": 0.8}, {"alpha": 0.9, "gamma": 0.1}]
    for i, weights in enumerate(mixtures, start=1):
        save_run_config(make_config(f"n{i}", weights, max_step=3), folder / f"n{i}.yaml")
    save_run_config(make_config("n4", WEIGHTS, max_step=2), folder / "n4.yaml")
    paths = run_config_paths(folder)
    alone = train_sweep(paths, tiny_corpus, tmp_path / "alone", workers=1, group_size=1, device="cpu",
                           wandb_mode="off", progress=False)
    grouped = train_sweep(paths, tiny_corpus, tmp_path / "grouped", workers=1, group_size=4, device="cpu",
                             wandb_mode="off", progress=False)
    assert [e.status for e in alone] == [e.status for e in grouped] == ["finished"] * 4
    for name in ("n1", "n2", "n3", "n4"):
        a, g = load_result(tmp_path / "alone" / name), load_result(tmp_path / "grouped" / name)
        assert a.step == g.step
        for domain, loss in a.valid_losses.items():
            assert g.valid_losses[domain] == pytest.approx(loss, rel=1e-4)
