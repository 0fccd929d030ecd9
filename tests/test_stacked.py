"""The stacked engine: each proxy of a group trains exactly as it would alone (fp32, CPU)."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from regmix.core.mixture import Mixture
from regmix.core.results import load_result
from regmix.core.schema import CHECKPOINT_NAME, HISTORY_NAME
from regmix.settings.run_config import RunConfig
from regmix.settings.training import TrainingSettings
from regmix.train import stacked
from regmix.train.checkpoint import checkpoint_step
from regmix.train.loop import train
from regmix.train.models import build_model
from regmix.train.sweep import train_proxies

TOLERANCE = 1e-4  # relative; fp32 batched matmuls and chunked softmax only reorder sums
MIXTURES = [{"alpha": 0.6, "beta": 0.3, "gamma": 0.1, "delta": 0.0},
            {"alpha": 0.1, "beta": 0.1, "gamma": 0.2, "delta": 0.6},
            {"alpha": 0.0, "beta": 1.0, "gamma": 0.0, "delta": 0.0}]
SEEDS = [7, 7, 11]
GRAD_CLIP = 0.8  # between the proxies' early gradient norms (0.70-0.96): clipping must be per proxy


def make_configs(**settings) -> list[RunConfig]:
    training = dict(model_name="tinyllama_demo", global_batch_size=8, micro_batch_size=4, max_step=4,
                    learning_rate=3e-3, min_lr=3e-4, warmup_steps=2, lr_schedule="cosine",
                    eval_step_interval=1, save_step_interval=2, block_size=32, eval_tokens=96, grad_clip=GRAD_CLIP)
    training.update(settings)
    return [RunConfig(name=f"n{i}", train=Mixture.from_dict(weights), valid=("alpha", "beta", "gamma"),
                      training=TrainingSettings(seed=seed, **training))
            for i, (weights, seed) in enumerate(zip(MIXTURES, SEEDS))]


def train_group(configs, corpus, run_dirs, loss_chunk=stacked.DEFAULT_LOSS_CHUNK):
    """The configs through the loop with the stacked engine (as a CUDA sweep trains them)."""
    engine = stacked.StackedEngine(configs[0].training, [c.training.seed for c in configs], corpus.tokenizer.vocab_size,
                                   torch.device("cpu"), loss_chunk=loss_chunk)
    return train(engine, configs, corpus, run_dirs, wandb_mode="off")


def history(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / HISTORY_NAME).read_text().splitlines()]


def max_relative_deviation(a: list[dict], b: list[dict]) -> float:
    assert [r["trainer/global_step"] for r in a] == [r["trainer/global_step"] for r in b]
    keys = [k for k in a[0] if k.startswith("metric/") and k.endswith("loss")]
    return max(abs(x[k] - y[k]) / abs(y[k]) for x, y in zip(a, b) for k in keys)


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def single_runs(tiny_corpus, tmp_path_factory):
    """Each config trained alone by the single-proxy trainer."""
    root = tmp_path_factory.mktemp("single")
    torch.set_num_threads(1)
    return [(train_proxies([c], tiny_corpus, [root / c.name], wandb_mode="off")[0], root / c.name)
            for c in make_configs()]


def test_stacked_forward_and_gradients_match_litgpt():
    models = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        models.append(build_model("tinyllama_demo", vocab_size=96, block_size=16))
    group = stacked.StackedGPT(models, loss_chunk=13)  # 32 tokens per proxy: uneven chunks on purpose
    batch = torch.randint(0, 96, (3, 2, 17))
    losses = group.loss(batch)
    losses.sum().backward()
    for k, model in enumerate(models):
        logits = model(batch[k, :, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[k, :, 1:].reshape(-1))
        loss.backward()
        assert losses[k].item() == pytest.approx(loss.item(), rel=1e-6)
        for i, p in enumerate(model.parameters()):
            torch.testing.assert_close(group.weights[i].grad[k], p.grad, rtol=1e-5, atol=1e-6)


def test_group_matches_training_each_alone(tiny_corpus, single_runs, tmp_path):
    configs = make_configs()
    # 128 tokens per proxy: uneven loss chunks
    results = train_group(configs, tiny_corpus, [tmp_path / c.name for c in configs], loss_chunk=48)
    deviation = 0.0
    for result, (single, single_dir) in zip(results, single_runs):
        assert result.ok and result.step == single.step == 4 and result.tokens == single.tokens
        assert result.valid_losses == pytest.approx(single.valid_losses, rel=TOLERANCE)
        group_history = history(tmp_path / result.name)
        deviation = max(deviation, max_relative_deviation(group_history, history(single_dir)))
        assert not (tmp_path / result.name / CHECKPOINT_NAME).exists()
        assert load_result(tmp_path / result.name).valid_losses == result.valid_losses
    print(f"max relative deviation from single-proxy training: {deviation:.2e}")
    assert deviation < TOLERANCE


def test_diverged_proxy_fails_alone(tiny_corpus, single_runs, tmp_path, monkeypatch):
    original = stacked.StackedEngine.step

    def poisoned(self, lr, draw, accumulation):
        if self.alive[1]:
            with torch.no_grad():
                self.model.param("lm_head.weight")[1].fill_(math.nan)
        return original(self, lr, draw, accumulation)

    monkeypatch.setattr(stacked.StackedEngine, "step", poisoned)
    configs = make_configs()
    results = train_group(configs, tiny_corpus, [tmp_path / c.name for c in configs])
    assert [r.status for r in results] == ["finished", "failed", "finished"]
    assert results[1].step == 1 and "diverged: training loss is nan at step 1" in results[1].error
    assert load_result(tmp_path / "n1").status == "failed"
    for k in (0, 2):
        assert results[k].valid_losses == pytest.approx(single_runs[k][0].valid_losses, rel=TOLERANCE)


def test_group_resumes_and_checkpoints_fit_the_single_trainer(tiny_corpus, single_runs, tmp_path, monkeypatch):
    configs = make_configs()
    run_dirs = [tmp_path / c.name for c in configs]
    original = stacked.StackedEngine.step
    calls = []

    def interrupted(self, lr, draw, accumulation):
        calls.append(lr)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return original(self, lr, draw, accumulation)

    monkeypatch.setattr(stacked.StackedEngine, "step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_group(configs, tiny_corpus, run_dirs)
    monkeypatch.setattr(stacked.StackedEngine, "step", original)
    assert [checkpoint_step(d) for d in run_dirs] == [3, 3, 3]

    shutil.copytree(run_dirs[0], tmp_path / "alone")
    alone = train_proxies([configs[0]], tiny_corpus, [tmp_path / "alone"], wandb_mode="off")[0]
    assert alone.valid_losses == pytest.approx(single_runs[0][0].valid_losses, rel=TOLERANCE)

    results = train_group(configs, tiny_corpus, run_dirs)
    for result, (single, single_dir) in zip(results, single_runs):
        assert result.valid_losses == pytest.approx(single.valid_losses, rel=TOLERANCE)
        assert max_relative_deviation(history(tmp_path / result.name), history(single_dir)) < TOLERANCE


def test_group_refuses_mismatched_settings(tiny_corpus, tmp_path):
    configs = make_configs()
    configs[2].training.learning_rate = 1e-3
    with pytest.raises(ValueError, match="share all training settings"):
        train_group(configs, tiny_corpus, [tmp_path / c.name for c in configs])


def test_a_failed_proxy_leaves_the_others_checkpoints_their_own(tiny_corpus, single_runs, tmp_path, monkeypatch):
    """Proxy 0 diverges at step 1, the group is stopped at step 4 and resumed: 1 and 2 match their lone runs."""
    original = stacked.StackedEngine.step
    calls = []

    def poisoned_then_stopped(self, lr, draw, accumulation):
        calls.append(lr)
        if len(calls) == 4:
            raise KeyboardInterrupt
        if self.alive[0]:
            with torch.no_grad():
                self.model.param("lm_head.weight")[0].fill_(math.nan)
        return original(self, lr, draw, accumulation)

    monkeypatch.setattr(stacked.StackedEngine, "step", poisoned_then_stopped)
    configs = make_configs()
    run_dirs = [tmp_path / c.name for c in configs]
    with pytest.raises(KeyboardInterrupt):
        train_group(configs, tiny_corpus, run_dirs)
    monkeypatch.setattr(stacked.StackedEngine, "step", original)
    assert load_result(run_dirs[0]).status == "failed"
    survivors = train_group(configs[1:], tiny_corpus, run_dirs[1:])
    for k, result in zip((1, 2), survivors):
        assert result.valid_losses == pytest.approx(single_runs[k][0].valid_losses, rel=TOLERANCE)
