"""Every mixing method in one harness: what each trains, what it answers, and its command line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from regmix.core.files import ConfigError
from regmix.online.__main__ import main
from regmix.settings.run_config import load_run_config
from regmix.settings.training import TrainingSettings
from regmix.study.online_methods import METHODS, grid_mixtures, run_method
from regmix.train.pretrain import resolve_mixture

SETTINGS = TrainingSettings(model_name="tinyllama_demo", global_batch_size=8, micro_batch_size=4, max_step=6,
                            warmup_steps=1, eval_step_interval=3, save_step_interval=3, block_size=32,
                            eval_tokens=128, seed=2)
DOMAINS = ("alpha", "beta", "gamma", "delta")
VALID = ("alpha", "beta", "gamma")
OPTIONS = {"grid": {"runs": 5}, "dml": {"runs": 5}, "aioli": {"update_steps": 6, "lp_steps": 1, "sweeps": 1},
           "skillit": {"update_steps": 2}, "doge": {"update_steps": 2}}
EXTRA_RUNS = {"stratified": 0, "natural": 0, "grid": 4, "dml": 5, "skillit": 4, "doremi": 2, "doge": 1, "aioli": 0,
              "highest_loss": 0}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("methods")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_what_it_needs_and_answers_a_mixture(tiny_corpus, shared, method):
    result = run_method(method, tiny_corpus, shared, SETTINGS, DOMAINS, VALID, OPTIONS.get(method, {}),
                        wandb_mode="off", progress=False, report=lambda line: None)
    assert result.final.ok and set(result.final.valid_losses) == set(VALID)
    assert result.extra_runs == EXTRA_RUNS[method]
    for mixture in (result.mixture, result.averaged):
        assert mixture.domains == DOMAINS and mixture.weights.sum() == pytest.approx(1.0)
        assert (mixture.weights >= 0).all()
    saved = json.loads((shared / method / "result.json").read_text())
    assert saved["extra_runs"] == EXTRA_RUNS[method] and saved["final_run"] == result.final.name
    if method == "stratified":
        np.testing.assert_allclose(result.mixture.weights, 0.25)
    if method == "natural":
        tokens = np.array([tiny_corpus.tokens("train", d) for d in DOMAINS], dtype=float)
        np.testing.assert_allclose(result.mixture.weights, tokens / tokens.sum())
    if method == "grid":
        best = min(result.runs, key=lambda r: np.mean(list(r.valid_losses.values())))
        assert result.final is best
    if method in ("doremi", "doge"):  # the answer is the proxy's step-averaged weights, trained in a run of its own
        assert result.online.name == f"{method}_proxy" and len(result.online.trajectory) >= 2
        np.testing.assert_allclose(result.final.requested.weights, result.mixture.weights)
    if method == "doremi":
        assert "stratified" in [r.name for r in result.runs]  # its reference run
    if method == "skillit":
        assert json.loads((shared / "skills.json").read_text()).keys() == set(DOMAINS)


def test_natural_on_a_subset_is_the_token_shares_of_that_subset(tiny_corpus, tmp_path):
    result = run_method("natural", tiny_corpus, tmp_path, SETTINGS, ("beta", "delta"), ("beta",), wandb_mode="off",
                        progress=False, report=lambda line: None)
    tokens = np.array([tiny_corpus.tokens("train", d) for d in ("beta", "delta")], dtype=float)
    np.testing.assert_allclose(result.mixture.weights, tokens / tokens.sum())


def test_a_finished_method_is_not_trained_again(tiny_corpus, tmp_path):
    first = run_method("stratified", tiny_corpus, tmp_path, SETTINGS, DOMAINS, VALID, wandb_mode="off",
                       progress=False, report=lambda line: None)
    lines = []
    again = run_method("stratified", tiny_corpus, tmp_path, SETTINGS, DOMAINS, VALID, wandb_mode="off",
                       progress=False, report=lines.append)
    assert lines == [] and again.final.valid_losses == first.final.valid_losses


def test_grid_is_a_simplex_grid_for_few_domains_and_a_space_filling_set_beyond():
    two = grid_mixtures(("a", "b"), 10, 0)
    assert len(two) == 10 and all(0 < m["a"] < 1 for m in two)
    three = grid_mixtures(("a", "b", "c"), 10, 0)
    assert len(three) == 10 and len({tuple(m.weights) for m in three}) == 10
    five = grid_mixtures(tuple("abcde"), 10, 0)
    assert len(five) == 10 and all(m.weights.sum() == pytest.approx(1.0) for m in five)


def test_bad_method_settings_are_one_error_before_training(tiny_corpus, tmp_path):
    with pytest.raises(ConfigError, match="policy 'aioli' has no settings \\['bogus'\\]"):
        run_method("aioli", tiny_corpus, tmp_path, SETTINGS, DOMAINS, VALID, {"bogus": 1}, wandb_mode="off",
                   progress=False, report=lambda line: None)
    with pytest.raises(ConfigError, match="method 'grid' takes only `runs`"):
        run_method("grid", tiny_corpus, tmp_path, SETTINGS, DOMAINS, VALID, {"eta": 1}, wandb_mode="off",
                   progress=False, report=lambda line: None)
    assert not (tmp_path / "runs").exists()


def test_command_line_writes_the_result_plot_and_configs_pretrain_accepts(tiny_corpus, tmp_path, capsys):
    flags = ["--global-batch-size", "8", "--micro-batch-size", "4", "--max-step", "4", "--warmup-steps", "1",
             "--eval-step-interval", "2", "--block-size", "32", "--eval-tokens", "128"]
    main(["--method", "aioli", "--corpus", str(tiny_corpus.root), "--domains", "alpha", "beta", "--output",
          str(tmp_path), "--wandb", "off", "--no-progress", "--setting", "update_steps=4", "lp_steps=1",
          "sweeps=1", *flags])
    folder = tmp_path / "aioli"
    assert (folder / "weights.png").stat().st_size > 0
    saved = json.loads((folder / "result.json").read_text())
    assert set(saved["valid_losses"]) == {"alpha", "beta"}  # a subset is validated on its own domains
    for kind in ("final", "averaged"):
        config = load_run_config(resolve_mixture(str(folder / f"mixture_{kind}.yaml")))
        assert set(config.train.active()) <= {"alpha", "beta"} and config.training.model_name == "tinyllama_1_1b"
        assert yaml.safe_load((folder / f"mixture_{kind}.yaml").read_text())["method"] == "aioli"
    assert "mean perplexity" in capsys.readouterr().out


def test_help_documents_every_method_and_its_published_settings(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for expected in ("aioli:", "doremi:", "doge:", "skillit:", "grid, dml: runs=10", "one_hot_factor=0.75",
                     "published: 1e-3", "0.01 for <= 3", "published: 0.2"):
        assert expected in text
