"""The study runner's common ground: one objective, one space with the caps, one definition of natural and
uniform, one coercion of settings, one resume rule, and `regmix compare` killed and resumed."""

from __future__ import annotations

import io
import json
import pickle
import random
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from test_faults import run, snapshot
from test_pipeline import EXPERIMENT

from regmix.core.files import ConfigError
from regmix.core.objective import Objective
from regmix.core.space import SearchSpace
from regmix.data.corpus import CorpusManifest
from regmix.settings.run_config import load_run_config
from regmix.study.experiment import load_experiment
from regmix.study.runner import run_study
from regmix.study.study import open_study
from regmix.study.transfer import baseline_mixture

FAST = 'sweep: {num_configs: 4, anchor_seeds: 2, workers: 1, wandb: "off"}'


def test_one_objective_parses_every_spelling_and_defaults_to_the_mean():
    assert Objective.parse("web") == Objective({"web": 1.0})
    assert Objective.parse(["web", "code"]) == Objective.parse({"metric/web_val_loss": 1, "code": 1})
    assert Objective.parse(["web=3", "code"]).weights == {"web": 0.75, "code": 0.25}
    assert Objective.parse(None) is None
    objective = Objective.for_domains(None, ["a", "b", "c"], empty=["c"])
    assert objective.weights == {"a": 0.5, "b": 0.5}  # a valid domain without tokens is left out
    assert objective.value({"a": 1.0, "b": 3.0}) == 2.0 and objective.breakdown({"a": 1.0, "b": 3.0})["b"] == 1.5
    assert objective.to_file() == {"metric/a_val_loss": 0.5, "metric/b_val_loss": 0.5}
    for bad in ({"a": float("nan")}, {"a": -1}, {"a": 0}, 3):
        with pytest.raises(ConfigError):
            Objective.parse(bad, "exp.yaml")
    with pytest.raises(ConfigError, match=r"exp.yaml: target domains \['z'\] are not valid domains"):
        Objective.for_domains(Objective({"z": 1.0}), ["a"], source="exp.yaml")
    with pytest.raises(ConfigError, match=r"\['pile_c'\] are not valid domains \['code', 'pile_cc'\] \(did you "
                                          r"mean 'pile_cc'\?\)"):
        Objective.for_domains(Objective({"pile_c": 1.0}), ["pile_cc", "code"], source="exp.yaml")


def test_uniform_is_over_domains_with_tokens_everywhere(tiny_corpus, tmp_path):
    empty = CorpusManifest(root=tmp_path, source="x", tokenizer=tiny_corpus.tokenizer, dtype="uint16",
                           shards={"train": {**tiny_corpus.shards["train"], "hollow": []},
                                   "valid": tiny_corpus.shards["valid"]})
    assert "hollow" not in empty.uniform().active() and len(empty.uniform().active()) == 4
    assert baseline_mixture("uniform", empty)[1].close_to(empty.uniform())


def test_settings_are_coerced_one_way_in_experiments_and_run_configs(tmp_path):
    for value, ok in (("1.5", False), ("true", False), ("1e3", True), ("800e9", True), ("'12'", True)):
        (tmp_path / "exp.yaml").write_text(f"proxy: {{max_step: {value}}}\n")
        (tmp_path / "run.yaml").write_text(f"train: {{train_a: 1.0}}\nmax_step: {value}\n")
        for read in (lambda: load_experiment(tmp_path / "exp.yaml").proxy,
                     lambda: load_run_config(tmp_path / "run.yaml").training):
            if ok:
                assert isinstance(read().max_step, int)
            else:
                with pytest.raises(ConfigError, match="max_step' must be a whole number|max_step must be a whole"):
                    read()
    (tmp_path / "exp.yaml").write_text("simulation: {verify: 'no'}\n")
    with pytest.raises(ConfigError, match="'simulation.verify' must be true or false"):
        load_experiment(tmp_path / "exp.yaml")


def test_the_space_keeps_every_recommendation_within_the_caps():
    space = SearchSpace(("a", "b", "c"), np.array([0.5, 0.3, 0.2]), np.zeros(3), np.ones(3),
                        caps=np.array([0.4, 1.0, 1.0]))
    capped = space.recommendable()
    assert capped.upper[0] == 0.4 and space.upper[0] == 1.0  # proposals may go beyond, recommendations not
    moved = capped.project(np.array([[0.9, 0.05, 0.05]]))[0]
    assert moved[0] == pytest.approx(0.4) and moved.sum() == pytest.approx(1.0)


def test_an_online_answer_beyond_the_caps_is_projected_and_said(workdir):
    Path("tiny.yaml").write_text(EXPERIMENT.replace('wandb: "off"}', 'wandb: "off", anchor_seeds: 0}')
                                 + "search: {bounds: {prose: [0.0, 0.25]}}\n")
    study = open_study(load_experiment("tiny.yaml"), "stratified", report=lambda line: None)
    assert study.space.upper[study.space.domains.index("prose")] == 0.25
    summary = run_study(load_experiment("tiny.yaml"), "stratified", report=lambda line: None)
    assert summary["projected_onto_caps"] and summary["optimal"]["prose"] <= 0.25 + 1e-9


def test_the_objective_weights_reach_the_regmix_answer(workdir):
    answers = {}
    for target in ("prose", "code"):
        Path("tiny.yaml").write_text(EXPERIMENT.replace("target: prose", f"target: {target}").replace(
            "name: tiny", f"name: {target}").replace('wandb: "off"}', 'wandb: "off", anchor_seeds: 0}'))
        summary = run_study(load_experiment("tiny.yaml"), report=lambda line: None)
        answers[target] = summary["optimal"]
        assert load_run_config(f"mixture_config/{target}/regmix/optimal_mixture.yaml").extra["objective"] == {
            f"metric/{target}_val_loss": 1.0}
    assert answers["prose"]["prose"] > answers["code"]["prose"] and answers["code"]["code"] > answers["prose"]["code"]


def timeless(files: dict[str, bytes]) -> dict[str, bytes]:
    """A kept checkpoint (DoReMi's reference) records the training time so far: compare it without that."""
    out = {}
    for path, data in files.items():
        if path.endswith("checkpoint.pt"):
            state = torch.load(io.BytesIO(data), weights_only=True)
            state.pop("seconds", None)
            data = repr(sorted((k, repr(v)) for k, v in state.items())).encode()
        out[path] = data
    return out


def test_compare_killed_twice_and_resumed_gives_the_uninterrupted_files(workdir):
    Path("tiny.yaml").write_text(EXPERIMENT.replace('sweep: {num_configs: 8, workers: 1, wandb: "off"}', FAST)
                                 + "search: {budget: 4, batch: 2, settings: {bo: {initial: 2, num_restarts: 2, "
                                   "raw_samples: 32}}}\n")
    command = ["regmix", "compare", "--config", "tiny.yaml", "--methods", "regmix", "bo", "doremi"]
    compared = [workdir / "runs/tiny/proxies", workdir / "mixture_config/tiny"]  # not the files holding timings
    compared += [workdir / "runs/tiny" / m / f for m in ("regmix", "bo", "doremi")
                 for f in ("train_mixture_proxy.csv", "train_tiny_loss_proxy.csv")]
    started = time.perf_counter()
    run(command, workdir)
    took, reference = time.perf_counter() - started, timeless(snapshot(compared))
    rng = random.Random(3)
    for folder in ("runs", "mixture_config"):
        shutil.rmtree(workdir / folder)
    for _ in range(2):
        run(command, workdir, kill_after=rng.uniform(0.15, 0.95) * took)
    run(command, workdir)
    again = timeless(snapshot(compared))
    assert sorted(again) == sorted(reference)
    assert not [path for path in reference if again[path] != reference[path]]
    table = (workdir / "runs/tiny/compare/comparison.md").read_text()
    assert all(f"| {m} |" in table for m in ("regmix", "bo", "doremi"))
    assert (workdir / "runs/tiny/compare/comparison.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((workdir / "runs/tiny/compare/report.json").read_text())
    assert report["methods"]["doremi"]["runs"] == 3 and report["methods"]["bo"]["runs"] == 4
    assert report["methods"]["regmix"]["anchors"] >= 4  # shared: trained once for all three
    # the verification adds seeds until Welch's test decides against natural and uniform, or max_seeds (6)
    verified = json.loads((workdir / "runs/tiny/regmix/report.json").read_text())["verification"]
    undecided = [n for n, v in verified["verdicts"].items() if v == "undecided"]
    assert verified["seeds"] == (6 if undecided else verified["seeds"]) and 2 <= verified["seeds"] <= 6
    assert all(len(verified["mixtures"][n]["objectives"]) == 6 for n in undecided)
    run(command, workdir)  # all done: resumes to the same table
    assert (workdir / "runs/tiny/compare/comparison.md").read_text() == table


@pytest.mark.parametrize("method", ["random", "turbo"])
def test_the_other_sequential_methods_run_on_the_runner(workdir, method):
    Path("tiny.yaml").write_text(EXPERIMENT.replace('wandb: "off"}', 'wandb: "off", anchor_seeds: 0}')
                                 + f"method: {method}\nsearch: {{budget: 4, batch: 2"
                                 + (", settings: {initial: 2, num_restarts: 2, raw_samples: 32}" if method == "turbo"
                                    else "") + "}\n")
    summary = run_study(load_experiment("tiny.yaml"), report=lambda line: None)
    assert summary["runs"]["method"] == 4 and summary["method"] == method
    assert load_run_config(f"mixture_config/tiny/{method}/optimal_mixture.yaml").extra["method"] == method


def test_a_config_error_raised_in_a_worker_process_reaches_the_parent_whole():
    error = pickle.loads(pickle.dumps(ConfigError("exp.yaml", "bad setting")))
    assert (error.source, error.problem, str(error)) == ("exp.yaml", "bad setting", "exp.yaml: bad setting")


def test_a_hand_edited_state_is_one_error_and_a_fixed_setting_before_any_training_starts_anew(workdir):
    Path("tiny.yaml").write_text(EXPERIMENT.replace('wandb: "off"}', 'wandb: "off", anchor_seeds: 2}'))
    run_study(load_experiment("tiny.yaml"), report=lambda line: None)
    path = Path("runs/tiny/regmix/study.json")
    good = path.read_text()
    state = json.loads(good)
    for edit, problem in ((lambda s: s["trials"].pop(1), r"the anchor runs \['anchor_natural_s1'\] are missing"),
                          (lambda s: s["trials"][0].update(losses="x"), "losses must map domains to finite numbers"),
                          (lambda s: s["trials"][5].update(requested={"code": -1.0}),
                           r"trial n\d+: requested weight of domain .code. is -1.0"),
                          (lambda s: s.update(trials=None), "unreadable study state")):
        edited = json.loads(good)
        edit(edited)
        path.write_text(json.dumps(edited))
        with pytest.raises(ConfigError, match=f"study.json: .*{problem}"):
            run_study(load_experiment("tiny.yaml"), report=lambda line: None)
    assert state["trials"][4]["source"] == "method"
    # a setting fixed after the method's runs failed their checks: the old state trained nothing, so it starts anew
    path.write_text(json.dumps({**state, "identity": {**state["identity"], "seed": 99},
                                "trials": [t if t["source"] == "anchor" else {**t, "status": "failed"}
                                           for t in state["trials"]]}))
    lines: list[str] = []
    run_study(load_experiment("tiny.yaml"), report=lines.append)
    assert any("trained nothing of the method: anew" in line for line in lines)
