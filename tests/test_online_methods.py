"""Every online method and static baseline on the study runner: what each trains, what it answers, its command."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from regmix.cli import RunFailed
from regmix.core.files import ConfigError
from regmix.core.objective import Objective
from regmix.online.__main__ import main
from regmix.search import ONLINE
from regmix.search.online import grid_mixtures
from regmix.settings.run_config import load_run_config
from regmix.settings.training import TrainingSettings
from regmix.study.experiment import CorpusSettings, Experiment, SearchSettings, SimulationSettings, SweepSettings
from regmix.study.runner import run_study
from regmix.train.pretrain import resolve_mixture
from regmix.train.sweep import SweepEntry, train_sweep

SETTINGS = TrainingSettings(model_name="tinyllama_demo", global_batch_size=8, micro_batch_size=4, max_step=6,
                            warmup_steps=1, eval_step_interval=3, save_step_interval=3, block_size=32,
                            eval_tokens=128, seed=2)
DOMAINS = ("alpha", "beta", "gamma", "delta")
VALID = ("alpha", "beta", "gamma")
OPTIONS = {"grid": {"runs": 5}, "dml": {"runs": 5}, "aioli": {"update_steps": 6, "lp_steps": 1, "sweeps": 1},
           "skillit": {"update_steps": 2}, "doge": {"update_steps": 2}}
RUNS = {"stratified": 1, "natural": 1, "grid": 5, "dml": 6, "skillit": 5, "doremi": 3, "doge": 2, "aioli": 1,
        "highest_loss": 1}


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


def experiment(corpus, name: str = "methods", settings: dict | None = None, anchor_seeds: int = 0,
               target: Objective | None = None) -> Experiment:
    """The tiny corpus as it is, tiny proxies, no anchors unless asked, no repetition caps (a tiny corpus)."""
    return Experiment(name=name, target=target, corpus=CorpusSettings(prepared=str(corpus.root)), proxy=SETTINGS,
                      sweep=SweepSettings(anchor_seeds=anchor_seeds, workers=1, wandb="off"),
                      simulation=SimulationSettings(repetitions=0),
                      search=SearchSettings(settings=dict(settings or {})))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("methods")


@pytest.mark.parametrize("method", ONLINE)
def test_every_method_trains_what_it_needs_and_answers_a_mixture(tiny_corpus, shared, monkeypatch, method):
    monkeypatch.chdir(shared)
    summary = run_study(experiment(tiny_corpus, settings=OPTIONS.get(method, {})), method, report=lambda line: None)
    assert summary["runs"]["method"] == RUNS[method] and summary["runs"]["failed"] == 0
    optimal = load_run_config(f"mixture_config/methods/{method}/optimal_mixture.yaml")
    assert optimal.train.domains == DOMAINS and optimal.train.weights.sum() == pytest.approx(1.0)
    assert optimal.extra["method"] == method and optimal.training.model_name == "tinyllama_1_1b"
    state = json.loads((shared / "runs/methods" / method / "study.json").read_text())
    names = [t["name"] for t in state["trials"]]
    if method == "stratified":
        np.testing.assert_allclose(optimal.train.weights, 0.25)
    if method == "natural":
        tokens = np.array([tiny_corpus.tokens("train", d) for d in DOMAINS], dtype=float)
        np.testing.assert_allclose(optimal.train.weights, tokens / tokens.sum(), atol=1e-9)
    if method == "grid":  # chosen on the part methods measure, not the held-out part the runs are scored on
        values = {t["name"]: np.mean([t["probe_losses"][d] for d in VALID]) for t in state["trials"]}
        assert state["proposer"]["final"] == min(values, key=values.get)
        assert all(t["probe_losses"] != t["losses"] for t in state["trials"])
    if method in ("doremi", "doge"):  # the answer is the proxy's step-averaged weights, trained in a run of its own
        proxy = json.loads((shared / "runs/methods/proxies" / f"{method}_proxy" / "result.json").read_text())
        assert len(proxy["trajectory"]) >= 2 and state["proposer"]["final"] == method
    if method == "doremi":
        assert "stratified" in names and (shared / "runs/methods/proxies/stratified/checkpoint.pt").exists()
    if method == "skillit":
        assert json.loads((shared / "runs/methods/proxies/skills.json").read_text()).keys() == set(DOMAINS)
    if method in ("aioli", "doremi", "doge", "skillit", "highest_loss"):
        assert (shared / "runs/methods" / method / "weights.png").stat().st_size > 0


def test_methods_share_runs_and_a_finished_study_trains_nothing(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_study(experiment(tiny_corpus), "stratified", report=lambda line: None)
    lines: list[str] = []
    run_study(experiment(tiny_corpus), "doremi", report=lines.append)  # its reference is the stratified run
    assert any("1 skipped" in line for line in lines), lines  # trained once, by the first method
    again: list[str] = []
    run_study(experiment(tiny_corpus), "stratified", report=again.append)
    assert not any("] round" in line for line in again), again


def test_an_online_result_is_not_reused_after_its_settings_change(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_study(experiment(tiny_corpus, settings={"update_steps": 2}), "doge", report=lambda line: None)
    with pytest.raises(ConfigError, match=r"study.json: a study with other settings"):
        run_study(experiment(tiny_corpus, settings={"update_steps": 3}), "doge", report=lambda line: None)


def test_the_objective_weights_choose_among_the_grid(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for domain in ("alpha", "gamma"):
        exp = dataclasses.replace(experiment(tiny_corpus, settings={"runs": 5}, target=Objective({domain: 1.0})),
                                  name=f"grid_{domain}")
        summary = run_study(exp, "grid", report=lambda line: None)
        state = json.loads((tmp_path / "runs" / f"grid_{domain}" / "grid" / "study.json").read_text())
        best = min(state["trials"], key=lambda t: t["probe_losses"][domain])
        assert state["proposer"]["final"] == best["name"]
        assert summary["objective"] == {domain: 1.0}


def test_restricted_aioli_starts_from_another_methods_answer(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    grid = run_study(experiment(tiny_corpus, settings={"runs": 5}), "grid", report=lambda line: None)
    settings = {**OPTIONS["aioli"], "prior": "grid", "prior_steps": 2}
    run_study(experiment(tiny_corpus, settings=settings), "aioli", report=lambda line: None)
    result = json.loads((tmp_path / "runs/methods/proxies/aioli_after_grid/result.json").read_text())
    first = result["trajectory"][0]
    assert first["step"] == 0 and first["mixture"] == pytest.approx(grid["optimal"])  # the prior, for prior_steps
    assert [t["step"] for t in result["trajectory"]][1] == 2  # then Aioli
    with pytest.raises(ConfigError, match="needs prior_steps > 0"):
        run_study(experiment(tiny_corpus, settings={"prior": "grid"}), "aioli", report=lambda line: None)
    with pytest.raises(ConfigError, match="prior 'bo': no answer of that method"):
        run_study(dataclasses.replace(experiment(tiny_corpus, settings={**settings, "prior": "bo"}), name="other"),
                  "aioli", report=lambda line: None)


def test_grid_is_a_simplex_grid_for_few_domains_and_a_space_filling_set_beyond():
    two = grid_mixtures(("a", "b"), 10, 0)
    assert len(two) == 10 and all(0 < m["a"] < 1 for m in two)
    three = grid_mixtures(("a", "b", "c"), 10, 0)
    assert len(three) == 10 and len({tuple(m.weights) for m in three}) == 10
    five = grid_mixtures(tuple("abcde"), 10, 0)
    assert len(five) == 10 and all(m.weights.sum() == pytest.approx(1.0) for m in five)


def test_bad_method_settings_are_one_error_before_training(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="policy 'aioli' has no settings \\['bogus'\\]"):
        run_study(experiment(tiny_corpus, settings={"bogus": 1}), "aioli", report=lambda line: None)
    with pytest.raises(ConfigError, match="method 'grid' takes \\['runs'\\], not \\['eta'\\]"):
        run_study(experiment(tiny_corpus, settings={"eta": 1}), "grid", report=lambda line: None)
    assert not (tmp_path / "runs/methods/proxies").exists()


def test_command_line_writes_the_report_plot_and_a_config_pretrain_accepts(tiny_corpus, tmp_path, monkeypatch,
                                                                           capsys):
    monkeypatch.chdir(tmp_path)
    flags = ["--global-batch-size", "8", "--micro-batch-size", "4", "--max-step", "4", "--warmup-steps", "1",
             "--eval-step-interval", "2", "--block-size", "32", "--eval-tokens", "128"]
    main(["--method", "aioli", "--corpus", str(tiny_corpus.root), "--domains", "alpha", "beta", "--name", "cli",
          "--wandb", "off", "--anchor-seeds", "2", "--setting", "update_steps=4", "lp_steps=1", "sweeps=1", *flags])
    folder = tmp_path / "runs/cli/aioli"
    assert (folder / "weights.png").stat().st_size > 0
    report = json.loads((folder / "report.json").read_text())
    assert report["objective"] == {"alpha": 0.5, "beta": 0.5}  # a subset is validated on its own valid domains
    assert report["verification"]["seeds"] in (2, 4, 6) and report["runs"]["anchors"] >= 4  # seeds added if undecided
    path = tmp_path / "mixture_config/cli/aioli/optimal_mixture.yaml"
    config = load_run_config(resolve_mixture(str(path)))
    assert set(config.train.active()) <= {"alpha", "beta"} and config.training.model_name == "tinyllama_1_1b"
    assert yaml.safe_load(path.read_text())["method"] == "aioli"
    assert (folder / "report.md").read_text().startswith("**")
    assert "aioli study report" in capsys.readouterr().out


def test_help_documents_every_method_and_its_published_settings(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for expected in ("aioli:", "doremi:", "doge:", "skillit:", "grid, dml: runs=10", "one_hot_factor=0.75",
                     "published: 1e-3", "0.01 for <= 3", "published: 0.2"):
        assert expected in text


def test_an_online_method_whose_run_fails_says_so_and_reports_no_answer(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def proxy_fails(paths, *args, **kwargs):
        others = [p for p in paths if Path(p).stem != "doge_proxy"]
        entries = train_sweep(others, *args, **kwargs) if others else []
        return entries + [SweepEntry("doge_proxy", "failed", "diverged (a test)")]

    with pytest.raises(RunFailed, match="the doge method could not finish \\(doge_proxy: diverged \\(a test\\)\\)"):
        run_study(experiment(tiny_corpus, settings={"update_steps": 2}), "doge", report=lambda line: None,
                  train=proxy_fails)
    assert not (tmp_path / "mixture_config/methods/doge/optimal_mixture.yaml").exists()


def test_a_policy_that_would_never_update_within_the_run_is_refused_before_training(tiny_corpus, tmp_path,
                                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"method 'aioli': policy 'aioli' updates the mixture every 200 steps "
                                          r"\(update_steps\) but the run has 6"):
        run_study(experiment(tiny_corpus, anchor_seeds=2), "aioli", report=lambda line: None)
    assert not (tmp_path / "runs/methods/proxies").exists()
    # a hand-written config is refused by its own check
    (tmp_path / "run.yaml").write_text("train: {train_alpha: 1.0}\nmax_step: 6\nschedule: {policy: aioli}\n")
    with pytest.raises(ConfigError, match=r"run.yaml: policy 'aioli' updates the mixture every 200 steps"):
        load_run_config(tmp_path / "run.yaml")
