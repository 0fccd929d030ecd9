"""Mixture search: every proposer on the simplex and within bounds, exact resume, BO and TuRBO beat random on a
synthetic objective, and the search driver with real proxy runs (interrupted, resumed, started from runs)."""

import json
from pathlib import Path

import numpy as np
import pytest
from test_pipeline import EXPERIMENT, write_corpus

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.observations import find_csvs, read_csvs
from regmix.core.space import SearchSpace
from regmix.search import OFFLINE, SEQUENTIAL, make_proposer
from regmix.search.offline import PowerLawObjective, minimize_on_space, regret, replay
from regmix.settings.run_config import load_run_config
from regmix.study.experiment import load_experiment
from regmix.study.runner import run_study
from regmix.study.state import STATE_NAME
from regmix.train.sweep import train_sweep
from regmix.train.wandb_runs import read_offline_run

FAST = {"bo": {"num_restarts": 3, "raw_samples": 64, "mc_samples": 32},
        "turbo": {"num_restarts": 3, "raw_samples": 64, "mc_samples": 32},
        "regmix": {"candidates": 20000, "top_k": 16, "regressor": "linear"}, "random": {}}


def fast(method: str, **extra) -> dict:
    return {**FAST[method], **extra}


def bounded_problem(dim: int = 17) -> tuple[PowerLawObjective, SearchSpace]:
    """The synthetic objective on a space with binding lower and upper bounds."""
    problem = PowerLawObjective(dim, seed=3, noise=0.01)
    lower, upper = np.zeros(dim), np.full(dim, 0.3)
    lower[0], upper[1], upper[2] = 0.05, 0.02, 0.0  # domain 2 is pinned at 0
    return problem, SearchSpace(problem.domains, problem.prior, lower, upper)


@pytest.mark.parametrize("method", sorted(OFFLINE + SEQUENTIAL))
def test_every_proposal_is_on_the_simplex_and_within_bounds(method):
    problem, space = bounded_problem()
    proposer = make_proposer(method, space, problem.objective(), seed=1, settings=fast(method))
    for _ in range(3):  # bo/turbo: the initial design (18 runs), then two acquisition batches
        mixtures = proposer.ask(6 if len(proposer) >= 18 else 18)
        rows = space.vectors(mixtures)
        assert space.contains(rows).all(), rows[~space.contains(rows)]
        assert [m.domains for m in mixtures] == [problem.domains] * len(mixtures)
        proposer.tell(mixtures, problem(rows))
    best = proposer.recommend()
    assert space.contains(best.mixture.vector(space.domains)).all() and np.isfinite(best.predicted)


@pytest.mark.parametrize("method", sorted(OFFLINE + SEQUENTIAL))
def test_a_restored_proposer_asks_for_the_same_mixtures(method):
    problem = PowerLawObjective(5, seed=0, noise=0.01)
    proposer = make_proposer(method, problem.space(), problem.objective(), seed=4, settings=fast(method, **(
        {"initial": 6} if method in ("bo", "turbo") else {})))
    replay(proposer, problem, [12], batch=3)
    saved = json.loads(json.dumps(proposer.state_dict()))  # the search writes it as JSON
    restored = make_proposer(method, problem.space(), problem.objective(), seed=0, settings=fast(method))
    restored.load_state_dict(saved)
    asked, again = proposer.ask(3), restored.ask(3)
    np.testing.assert_allclose([m.weights for m in asked], [m.weights for m in again], atol=1e-9)


def test_bo_and_turbo_beat_random_on_the_synthetic_objective():
    problem = PowerLawObjective(5, seed=0, noise=0.01)
    space = problem.space()
    _, optimum = minimize_on_space(problem.value, space, np.vstack([space.prior, np.full(5, 0.2)]))
    regrets: dict[str, list[float]] = {}
    for method in ("random", "bo", "turbo"):
        for seed in range(3):
            proposer = make_proposer(method, space, problem.objective(), seed=seed, settings=fast(method))
            [(_, best)] = replay(proposer, problem, [20], batch=4)
            regrets.setdefault(method, []).append(regret(best.mixture, problem.value, space, optimum))
    means = {m: float(np.mean(r)) for m, r in regrets.items()}
    assert means["bo"] < means["random"] and means["turbo"] < means["random"], regrets


def test_bad_spaces_and_settings_are_one_error_naming_the_file():
    natural = Mixture(("a", "b"), np.array([0.9, 0.1]))
    with pytest.raises(ConfigError, match=r"exp.yaml: upper bounds .* sum to 0.6 < 1"):
        SearchSpace.around(natural, 1.0, {"a": [0, 0.5]}, "exp.yaml")
    with pytest.raises(ConfigError, match="exp.yaml: bounds name domain 'c'"):
        SearchSpace.around(natural, 15.0, {"c": [0, 0.5]}, "exp.yaml")
    space, objective = SearchSpace.around(natural), Objective({"a": 1.0})
    with pytest.raises(ConfigError, match=r"exp.yaml: method 'bo' has no settings \['restarts'\]"):
        make_proposer("bo", space, objective, settings={"restarts": 3}, source="exp.yaml")
    with pytest.raises(ConfigError, match="exp.yaml: unknown search method 'cma'"):
        make_proposer("cma", space, objective, source="exp.yaml")


SEARCH = "method: bo\nsearch: {budget: 6, batch: 3, settings: {initial: 3, num_restarts: 3, raw_samples: 64}}\n"


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    write_corpus(tmp_path / "src")
    (tmp_path / "tiny.yaml").write_text(EXPERIMENT + SEARCH)
    return tmp_path


NO_ANCHORS = EXPERIMENT.replace('wandb: "off"}', 'wandb: "off", anchor_seeds: 0}')


def test_search_end_to_end_from_the_pipeline(workdir):
    Path("tiny.yaml").write_text(EXPERIMENT.replace('wandb: "off"', "wandb: offline") + SEARCH)
    summary = run_study(load_experiment("tiny.yaml"), report=lambda line: None)
    folder = Path("runs/tiny/bo")
    assert summary["runs"]["method"] == 6 and summary["runs"]["failed"] == 0 and summary["method"] == "bo"
    optimal = load_run_config("mixture_config/tiny/bo/optimal_mixture.yaml")
    assert optimal.valid == ("prose",) and optimal.train.weights.sum() == pytest.approx(1.0)
    assert optimal.extra["method"] == "bo" and optimal.extra["predicted_loss"] == pytest.approx(
        summary["predicted_loss"], abs=1e-6)
    runs = read_csvs(*find_csvs(folder))  # the corpus (data/tiny) names the losses
    assert (folder / "train_mixture_proxy.csv").exists() and (folder / "train_tiny_loss_proxy.csv").exists()
    assert runs.index[-6:] == tuple(f"bo_n{i}" for i in range(1, 7)) and runs.targets == ("code", "legal", "prose")
    assert len(runs) == 6 + 6  # the anchors (told to bo as observations) and its own runs
    assert (folder / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    state = json.loads((folder / STATE_NAME).read_text())
    own = [t for t in state["trials"] if t["source"] == "method"]
    assert [t["status"] for t in own] == ["recorded"] * 6 and [t["round"] for t in own] == [1, 1, 1, 2, 2, 2]
    assert summary["verification"]["seeds"] == 3  # the same evidence as every method
    progress = [read_offline_run(p) for p in sorted(folder.glob("wandb/offline-run-*/*.wandb"))]
    assert {run.name for run in progress} == {"study-bo"}  # one run, resumed each round
    assert [row["search/runs"] for run in progress for row in run.history] == [1, 2, 3, 4, 5, 6]
    assert len(list(Path("runs/tiny/proxies").glob("bo_n*/wandb/offline-run-*/*.wandb"))) == 6  # one per run


def test_a_search_killed_between_ask_and_tell_resumes_with_its_proposals(workdir):
    Path("tiny.yaml").write_text(NO_ANCHORS + SEARCH)
    calls: list[list[str]] = []

    def killed_in_round_two(paths, *args, **kwargs):
        calls.append([Path(p).stem for p in paths])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return train_sweep(paths, *args, **kwargs)

    with pytest.raises(KeyboardInterrupt):
        run_study(load_experiment("tiny.yaml"), report=lambda line: None, train=killed_in_round_two)
    state = json.loads(Path("runs/tiny/bo", STATE_NAME).read_text())
    proposed = {t["name"]: t["requested"] for t in state["trials"] if t["status"] == "training"}
    assert sorted(proposed) == ["bo_n4", "bo_n5", "bo_n6"]

    calls.clear()
    run_study(load_experiment("tiny.yaml"), report=lambda line: None, train=killed_in_round_two)
    assert calls == [["bo_n4", "bo_n5", "bo_n6"]]  # round 1 is not trained again, round 2 is not re-drawn
    for name, requested in proposed.items():
        trained = load_run_config(Path("runs/tiny/proxies", name, "config.yaml"))
        np.testing.assert_allclose(trained.train.vector(list(requested)), list(requested.values()), atol=1e-9)


def test_a_search_starts_from_existing_runs_and_skips_them(workdir):
    Path("tiny.yaml").write_text(NO_ANCHORS + SEARCH)
    run_study(load_experiment("tiny.yaml"), report=lambda line: None)
    trained: list[str] = []

    def counting(paths, *args, **kwargs):
        trained.extend(Path(p).stem for p in paths)
        return train_sweep(paths, *args, **kwargs)

    for name, start in (("from_runs", "runs/tiny/proxies"),
                        ("from_csv", ["runs/tiny/bo/train_mixture_proxy.csv",
                                      "runs/tiny/bo/train_tiny_loss_proxy.csv"])):
        Path(f"{name}.yaml").write_text(NO_ANCHORS.replace("name: tiny", f"name: {name}") + SEARCH.replace(
            "budget: 6", f"budget: 8, start_from: {json.dumps(start)}"))
        trained.clear()
        summary = run_study(load_experiment(f"{name}.yaml"), report=lambda line: None, train=counting)
        assert trained == ["bo_n7", "bo_n8"] and summary["runs"]["method"] == 2
        assert summary["runs"]["started_from"] == 6


def test_a_changed_search_is_refused_on_resume(workdir):
    run_study(load_experiment("tiny.yaml"), report=lambda line: None)
    Path("tiny.yaml").write_text(EXPERIMENT + SEARCH.replace("initial: 3", "initial: 4"))
    with pytest.raises(ConfigError, match=r"study.json: a study with other settings than the experiment"):
        run_study(load_experiment("tiny.yaml"), report=lambda line: None)
    Path("tiny.yaml").write_text(EXPERIMENT + SEARCH.replace("budget: 6", "budget: 9"))  # a larger budget continues
    assert run_study(load_experiment("tiny.yaml"), report=lambda line: None)["runs"]["method"] == 9


@pytest.mark.parametrize("method", ["random", "bo"])
def test_a_recommendation_stays_in_the_space_when_the_best_run_lies_outside(method):
    problem = PowerLawObjective(4, seed=0)
    optimum, _ = minimize_on_space(problem.value, problem.space(), np.full((1, 4), 0.25))
    space = SearchSpace(problem.domains, problem.prior, np.zeros(4), np.where(np.arange(4) == optimum.argmax(),
                                                                               optimum.max() / 2, 1.0))
    proposer = make_proposer(method, space, problem.objective(), settings=fast(method))
    outside = [space.mixture(optimum)]  # e.g. a run started from, before these bounds
    proposer.tell(outside, problem(optimum))
    replay(proposer, problem, [6], batch=3)
    assert space.contains(proposer.recommend().mixture.vector(space.domains)).all()


def test_regmix_asks_in_batches_when_given_and_runs_of_other_settings_are_refused(workdir):
    experiment = load_experiment("tiny.yaml")
    experiment.method, experiment.sweep.num_configs, experiment.search.batch = "regmix", 4, 2
    experiment.sweep.anchor_seeds, experiment.search.settings = 0, {}
    summary = run_study(experiment, report=lambda line: None)
    state = json.loads(Path("runs/tiny/regmix", STATE_NAME).read_text())
    assert [t["round"] for t in state["trials"]] == [1, 1, 2, 2] and summary["runs"]["method"] == 4
    assert summary["files"]["optimal_mixture"] == "mixture_config/tiny/regmix/optimal_mixture.yaml"

    other = NO_ANCHORS.replace("max_step: 6", "max_step: 4").replace("name: tiny", "name: other")
    Path("other.yaml").write_text(other + SEARCH.replace("budget: 6", 'budget: 9, start_from: "runs/tiny/proxies"'))
    with pytest.raises(ConfigError, match=r"result.json: trained with other settings .* max_step 6 \(the search: 4\)"):
        run_study(load_experiment("other.yaml"), report=lambda line: None)


def test_a_law_regressor_waits_for_the_runs_it_needs():
    """The log-linear law needs m + 1 runs: before that RegMix hands over the best run, then fits; a list of
    regressors uses the ones that can fit, and CV only once every CV fit has enough runs."""
    problem = PowerLawObjective(6, seed=2)
    proposer = make_proposer("regmix", problem.space(), problem.objective(), seed=0,
                             settings=fast("regmix", regressor=["loglinear", "linear"], folds=3))
    replay(proposer, problem, [5], batch=5)
    assert proposer.recommend().basis.startswith("linear regressor")  # 5 runs: too few for the law on 6 domains
    replay(proposer, problem, [7], batch=2)
    # 7 = m + 1: both fit, but CV's folds (3 of 7) would not: no CV, the first named is kept
    assert proposer.recommend().basis.startswith("loglinear regressor")
    law = make_proposer("regmix", problem.space(), problem.objective(), seed=0,
                        settings=fast("regmix", regressor="loglinear"))
    replay(law, problem, [6], batch=6)
    assert law.recommend().basis == "best observed run"
    replay(law, problem, [7], batch=1)
    assert law.recommend().basis.startswith("loglinear regressor")
