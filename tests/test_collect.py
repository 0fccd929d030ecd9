"""Collection: matching runs to configs by name, achieved or requested mixtures, reporting every bad run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_wandb_runs import offline_run_file

from regmix.cli import run_command
from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.observations import read_csvs
from regmix.core.results import RunResult, evaluation_row, load_result, save_result
from regmix.core.schema import (
    DEFAULT_CORPUS,
    HISTORY_NAME,
    loss_csv_name,
)
from regmix.regression import fit as fit_module
from regmix.regression import simulate as simulate_module
from regmix.settings.run_config import RunConfig, load_run_config, save_run_config
from regmix.settings.training import TrainingSettings
from regmix.study import collect as collect_module
from regmix.study.collect import collect
from regmix.train.wandb_runs import OfflineRun

DOMAINS = ("web", "code", "books")
VALID = ("web", "code")


def true_losses(weights: np.ndarray) -> dict[str, float]:
    return {"web": 3.0 - weights[0], "code": 4.0 - 2 * weights[1]}


def make_sweep(tmp_path: Path, names: list[str], runs: list[str] | None = None, status: dict | None = None
               ) -> tuple[Path, Path]:
    configs, out = tmp_path / "configs", tmp_path / "runs"
    rng = np.random.default_rng(0)
    for name in names:
        mixture = Mixture(DOMAINS, rng.dirichlet(np.ones(len(DOMAINS))))
        save_run_config(RunConfig(name, mixture, VALID, TrainingSettings(max_step=10)), configs / f"{name}.yaml")
        if runs is None or name in runs:
            state = (status or {}).get(name, "finished")
            save_result(RunResult(name, state, mixture, true_losses(mixture.weights), step=10, tokens=100,
                                  error="boom" if state == "failed" else None), out / name)
    return configs, out


def losses_of(result, label: int | str, domain: str = "web") -> float:
    return float(result.observations.loss_frame().loc[label, domain])


def test_csv_layout_and_index_matching(tmp_path):
    configs, runs = make_sweep(tmp_path, ["n1", "n2", "n10", "extra_run"])
    result = collect(configs, runs)
    assert result.report.problems() == []
    observations = result.observations
    assert observations.index == ("extra_run", 1, 2, 10)  # natural order of the config names
    assert observations.domains == DOMAINS and observations.targets == VALID
    mixture_csv, loss_csv = observations.save(tmp_path / "data" / "m.csv", tmp_path / "data" / "l.csv")
    assert mixture_csv.read_text().splitlines()[0] == "index,train_web,train_code,train_books"
    assert loss_csv.read_text().splitlines()[0] == "index,metric/web_val_loss,metric/code_val_loss"
    observations = read_csvs(mixture_csv, loss_csv)
    mixtures, losses = observations.mixture_frame(), observations.loss_frame()
    for idx in mixtures.index:  # each loss row belongs to its own mixture
        expected = true_losses(mixtures.loc[idx, list(DOMAINS)].to_numpy(float))
        assert losses.loc[idx, "web"] == pytest.approx(expected["web"])
        assert losses.loc[idx, "code"] == pytest.approx(expected["code"])


def test_missing_failed_and_orphan_runs_are_reported(tmp_path):
    configs, runs = make_sweep(tmp_path, ["n1", "n2", "n3", "n4"], runs=["n1", "n2", "n3"], status={"n2": "failed"})
    (runs / "n3" / "result.json").unlink()  # started, never finished
    (runs / "n99").mkdir()
    result = collect(configs, runs)
    report = result.report
    assert report.collected == ["n1"]
    assert report.missing == ["n4"]
    assert set(report.failed) == {"n2", "n3"} and "boom" in report.failed["n2"]
    assert set(report.orphans) == {"n99"}
    assert result.observations.index == (1,) and result.observations.losses.shape == (1, 2)
    assert "missing 1, failed 2" in report.summary()
    with pytest.raises(ConfigError, match="strict"):
        collect(configs, runs, strict=True)
    with pytest.raises(ConfigError, match="no such runs folder"):
        collect(configs, tmp_path / "nowhere")


def test_a_run_of_another_mixture_is_never_paired_with_the_config(tmp_path):
    configs, runs = make_sweep(tmp_path, ["n1", "n2"])
    save_run_config(RunConfig("n2", Mixture(DOMAINS, [0.2, 0.3, 0.5]), VALID, TrainingSettings(max_step=10)),
                    configs / "n2.yaml")  # the folder synthesized again; runs/n2 is the old mixture's run
    report = collect(configs, runs).report
    assert report.collected == ["n1"] and "another mixture" in report.failed["n2"]


def _offline(monkeypatch, runs: dict[str, OfflineRun]) -> None:
    monkeypatch.setattr("regmix.train.wandb_runs.find_offline_runs", lambda root: [Path(root) / p for p in runs])
    monkeypatch.setattr("regmix.train.wandb_runs.read_offline_run", lambda path, partial=False: runs[Path(path).name])


def _history(web: float, steps=(5, 10)) -> list[dict]:
    rows = [{"trainer/global_step": s, "metric/train_loss": 9.0} for s in steps]
    rows += [{"trainer/global_step": s, "metric/web_val_loss": web + 10 - s, "metric/code_val_loss": 1.0}
             for s in steps]
    return rows


def test_wandb_offline_last_value_and_step(tmp_path, monkeypatch):
    configs, _ = make_sweep(tmp_path, ["n1", "n2"], runs=[])
    _offline(monkeypatch, {"a.wandb": OfflineRun("n1", "a", {}, _history(2.0)),
                           "b.wandb": OfflineRun("n2", "b", {}, _history(3.0))})
    result = collect(configs, wandb_dir=tmp_path)
    assert losses_of(result, 1) == 2.0
    assert losses_of(result, 2) == 3.0
    early = collect(configs, wandb_dir=tmp_path, step=5)
    assert losses_of(early, 1) == 7.0


def test_duplicates_unfinished_and_incomplete_runs(tmp_path, monkeypatch):
    configs, _ = make_sweep(tmp_path, ["n1", "n2", "n3"], runs=[])
    _offline(monkeypatch, {
        "a.wandb": OfflineRun("n1", "a", {}, _history(2.0, steps=(5,))),       # restarted: stopped at step 5
        "b.wandb": OfflineRun("n1", "b", {}, _history(2.5)),                   # ... and finished
        "c.wandb": OfflineRun("n2", "c", {}, _history(3.0, steps=(5,))),       # never finished
        "d.wandb": OfflineRun("n3", "d", {}, [{"trainer/global_step": 10, "metric/web_val_loss": 1.0}]),
    })
    result = collect(configs, wandb_dir=tmp_path)
    report = result.report
    assert set(report.duplicated) == {"n1"} and len(report.duplicated["n1"]) == 2
    assert losses_of(result, 1) == 2.5  # the finished one, not the first one found
    assert "unfinished" in report.failed["n2"]
    assert "code_val_loss" in report.failed["n3"]
    assert result.observations.index == (1,)
    with pytest.raises(ConfigError):
        collect(configs, wandb_dir=tmp_path, strict=True)


def test_resumed_wandb_run_is_one_run(tmp_path, monkeypatch):
    configs, _ = make_sweep(tmp_path, ["n1"], runs=[])
    _offline(monkeypatch, {"a.wandb": OfflineRun("n1", "same-id", {}, _history(2.0, steps=(5,))),
                           "b.wandb": OfflineRun("n1", "same-id", {}, _history(2.0, steps=(10,)))})
    result = collect(configs, wandb_dir=tmp_path, strict=True)
    assert losses_of(result, 1) == 2.0 and not result.report.duplicated


def test_damaged_wandb_files_fail_their_run_naming_the_file(tmp_path):
    configs, _ = make_sweep(tmp_path, ["n1", "n2", "n3"], runs=[])
    wandb_dir = tmp_path / "wandb"
    offline_run_file(wandb_dir / "offline-run-1" / "run-a.wandb", "n1", "a", _history(2.0))
    cut = offline_run_file(wandb_dir / "offline-run-2" / "run-b.wandb", "n2", "b", _history(3.0))
    cut.write_bytes(cut.read_bytes()[:-20])  # the last session of n2, cut in its last record
    killed = offline_run_file(wandb_dir / "offline-run-3" / "run-c.wandb", "n3", "c", _history(4.0, steps=(5,)))
    killed.write_bytes(killed.read_bytes()[:-20])  # n3 killed at step 5, then resumed to the end
    offline_run_file(wandb_dir / "offline-run-4" / "run-c.wandb", "n3", "c", _history(4.0, steps=(10,)))
    (wandb_dir / "offline-run-5").mkdir()
    (wandb_dir / "offline-run-5" / "run-d.wandb").write_bytes(b"not wandb at all")
    result = collect(configs, wandb_dir=wandb_dir)
    report = result.report
    assert report.collected == ["n1", "n3"] and losses_of(result, 3) == 4.0
    assert "damaged run file (run-b.wandb, its last session): truncated record" in report.failed["n2"]
    assert str(cut) in report.failed["n2"]
    assert "bad header" in report.unreadable[str(wandb_dir / "offline-run-5" / "run-d.wandb")]
    assert not report.orphans and not report.missing
    (wandb_dir / "offline-run-1" / "run-a.wandb").unlink()
    (wandb_dir / "offline-run-4" / "run-c.wandb").unlink()
    with pytest.raises(ConfigError, match=f"{wandb_dir}: no usable run .*damaged run file .*{cut}"):
        collect(configs, wandb_dir=wandb_dir)


def test_local_losses_at_a_step_come_from_the_history(tmp_path):
    configs, runs = make_sweep(tmp_path, ["n1"])
    drawn = {5: Mixture(DOMAINS, [0.6, 0.3, 0.1]), 10: Mixture(DOMAINS, [0.5, 0.3, 0.2])}
    rows = [evaluation_row(s, s * 100, 9.0, 1.0, {"web": 10.0 - s, "code": 5.0}, achieved=drawn[s]) for s in (5, 10)]
    (runs / "n1" / HISTORY_NAME).write_text("".join(json.dumps(r) + "\n" for r in rows))
    early = collect(configs, runs, step=5)
    assert losses_of(early, 1) == 5.0
    np.testing.assert_allclose(early.observations.mixtures[0], drawn[5].weights)  # achieved by step 5
    with pytest.raises(ConfigError, match="no usable run .*nothing logged at step 7"):
        collect(configs, runs, step=7)


def test_achieved_mixture_by_default_requested_on_demand(tmp_path, capsys):
    configs, runs = make_sweep(tmp_path, ["n1", "n2"])
    result = load_result(runs / "n1")
    achieved = Mixture(DOMAINS, [0.7, 0.2, 0.1])
    assert not achieved.close_to(result.requested)
    result.achieved = achieved
    save_result(result, runs / "n1")
    requested = {n: load_run_config(configs / f"{n}.yaml").train.weights for n in ("n1", "n2")}

    default = collect(configs, runs)  # run n2 recorded no achieved mixture (older result.json): its config's
    assert default.report.collected == ["n1", "n2"]  # drew off its config, but was asked for it: not a mismatch
    np.testing.assert_allclose(default.observations.mixtures, [achieved.weights, requested["n2"]])
    np.testing.assert_allclose(collect(configs, runs, requested=True).observations.mixtures,
                               [requested["n1"], requested["n2"]])

    for flags, expected in (([], achieved.weights), (["--requested"], requested["n1"])):
        out = tmp_path / f"out{len(flags)}"
        collect_module.main(["--configs", str(configs), "--runs", str(runs), "--output", str(out), *flags])
        written = pd.read_csv(out / "train_mixture_1m.csv", index_col="index")
        np.testing.assert_allclose(written.loc[1, [f"train_{d}" for d in DOMAINS]].to_numpy(float), expected)


def test_wandb_achieved_mixture_comes_from_the_history(tmp_path, monkeypatch):
    configs, _ = make_sweep(tmp_path, ["n1", "n2"], runs=[])
    history = _history(2.0)
    history += [{"trainer/global_step": 5, "achieved/web": 0.2, "achieved/code": 0.8},
                {"trainer/global_step": 10, "achieved/books": 3.0, "achieved/web": 1.0}]  # shares, in any order
    _offline(monkeypatch, {"a.wandb": OfflineRun("n1", "a", {}, history),
                           "b.wandb": OfflineRun("n2", "b", {}, _history(3.0))})
    result = collect(configs, wandb_dir=tmp_path, strict=True)
    np.testing.assert_allclose(result.observations.mixtures[0], [0.25, 0.0, 0.75])
    config_n2 = load_run_config(configs / "n2.yaml").train
    np.testing.assert_allclose(result.observations.mixtures[1], config_n2.weights)  # none logged: the config's
    np.testing.assert_allclose(collect(configs, wandb_dir=tmp_path, step=5).observations.mixtures[0], [0.2, 0.8, 0.0])
    np.testing.assert_allclose(collect(configs, wandb_dir=tmp_path, requested=True).observations.mixtures[0],
                               load_run_config(configs / "n1.yaml").train.weights)


def test_cli(tmp_path, capsys):
    configs, runs = make_sweep(tmp_path, ["n1", "n2"], runs=["n1"])
    collect_module.main(["--configs", str(configs), "--runs", str(runs), "--output", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert "missing: n2" in captured.out and (tmp_path / "out" / "train_pile_loss_1m.csv").exists()
    assert (tmp_path / "out" / "train_mixture_1m.csv").exists()
    assert "warning: 1 runs or run files are not in the CSVs" in captured.err
    assert run_command(collect_module.main, ["--configs", str(configs), "--runs", str(runs), "--strict"]) == 2
    assert "(--strict): missing: n2" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        collect_module.main(["--help"])
    assert exit_info.value.code == 0 and "--requested" in capsys.readouterr().out


def test_collect_fit_simulate_chain_with_no_file_flags(tmp_path, monkeypatch, capsys):
    """collect writes where fit reads (data/, the loss CSV named by the runs' corpus), fit where simulate reads."""
    configs, runs = make_sweep(tmp_path, [f"n{i}" for i in range(1, 13)])
    (tmp_path / "sweep").mkdir()
    runs.rename(tmp_path / "sweep" / "configs")  # runs/<configs folder>: where `regmix train` puts them
    (tmp_path / "sweep").rename(tmp_path / "runs")
    for run in (tmp_path / "runs" / "configs").iterdir():
        result = load_result(run)
        result.settings = {"corpus": "my web"}  # the prepared corpus's folder name, as the trainer records it
        save_result(result, run)
    (tmp_path / "prior.yaml").write_text("train: {train_web: 5e9, train_code: 3e9, train_books: 2e9}\n")
    monkeypatch.chdir(tmp_path)
    collect_module.main(["--configs", "configs"])
    assert sorted(p.name for p in Path("data").iterdir()) == ["train_mixture_1m.csv", "train_my_web_loss_1m.csv"]
    model = fit_module.main(["--model", "linear", "--folds", "1", "--threads", "1"])
    assert "runs: data/train_mixture_1m.csv, data/train_my_web_loss_1m.csv" in capsys.readouterr().out
    assert model.targets == VALID and Path("model.npz").exists()
    simulate_module.main(["--prior", "prior.yaml", "--num-candidates", "2000", "--top-k", "8", "--screen", "1",
                          "--threads", "1", "--quiet"])
    assert load_run_config("optimal_mixture.yaml").train.domains == DOMAINS
    shutil.copytree("configs", "untrained")
    with pytest.raises(ConfigError, match="runs/untrained: no such runs folder, where `regmix train` puts the runs"):
        collect_module.main(["--configs", "untrained"])


def test_the_corpus_tag_comes_from_the_runs(tmp_path, capsys, monkeypatch):
    configs, runs = make_sweep(tmp_path, ["n1", "n2", "n3"])
    _offline(monkeypatch, {"a.wandb": OfflineRun("n1", "a", {"corpus": "web text"}, _history(2.0))})
    assert collect(configs, wandb_dir=tmp_path).corpus == "web_text"  # wandb's config holds it as result.json
    assert collect(configs, runs).corpus == DEFAULT_CORPUS  # RegMix's published runs record none: the Pile's
    for name, corpus in (("n1", "web"), ("n2", "web"), ("n3", "web")):
        result = load_result(runs / name)
        result.settings = {"corpus": corpus}
        save_result(result, runs / name)
    assert collect(configs, runs).corpus == "web"
    result = load_result(runs / "n3")
    result.settings = {"corpus": "code"}
    save_result(result, runs / "n3")
    collection = collect(configs, runs)
    assert collection.corpora == ("code", "web") and collection.corpus == DEFAULT_CORPUS
    collect_module.main(["--configs", str(configs), "--runs", str(runs), "--output", str(tmp_path / "out")])
    assert "the runs trained on several corpora ['code', 'web']" in capsys.readouterr().err
    assert (tmp_path / "out" / loss_csv_name(DEFAULT_CORPUS, "1m")).exists()
    collect_module.main(["--configs", str(configs), "--runs", str(runs), "--output", str(tmp_path / "named"),
                         "--corpus", "mine"])
    assert (tmp_path / "named" / "train_mine_loss_1m.csv").exists()


def test_runs_that_recorded_their_scale_give_the_scale_columns(tmp_path, monkeypatch):
    configs, runs = make_sweep(tmp_path, ["n1", "n2", "n3"])
    assert collect(configs, runs).observations.scale is None  # RegMix's runs record no scale: RegMix's columns
    for name, params in (("n1", 1e6), ("n2", 1e6), ("n3", 4e6)):
        result = load_result(runs / name)
        result.settings = {"non_embedding_parameters": params, "tokens_per_step": 2048}  # as the trainer records
        save_result(result, runs / name)
    observations = collect(configs, runs).observations
    np.testing.assert_array_equal(observations.scale, [[1e6, 20480], [1e6, 20480], [4e6, 20480]])  # step 10
    collect_module.main(["--configs", str(configs), "--runs", str(runs), "--output", str(tmp_path / "out")])
    header = (tmp_path / "out" / "train_mixture_1m.csv").read_text().splitlines()[0]
    assert header.endswith(",params,tokens")
    _offline(monkeypatch, {"a.wandb": OfflineRun("n1", "a", {"non_embedding_parameters": 5e5, "tokens_per_step": 100},
                                                 _history(2.0))})
    from_wandb = collect(configs, wandb_dir=tmp_path)  # the wandb config holds the scale as result.json does
    assert from_wandb.report.collected == ["n1"] and from_wandb.observations.scale.tolist() == [[5e5, 1000.0]]


def test_every_evaluation_as_a_row_at_its_tokens(tmp_path):
    configs, runs = make_sweep(tmp_path, ["n1", "n2"])
    for name in ("n1", "n2"):
        result = load_result(runs / name)
        result.settings = {"non_embedding_parameters": 1e6, "tokens_per_step": 100}
        save_result(result, runs / name)
        rows = [evaluation_row(step, step * 100, 9.0, 1.0, {"web": 3.0 - step / 10, "code": 2.0}) for step in (5, 10)]
        (runs / name / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    collection = collect(configs, runs, evaluations=True)
    observations = collection.observations
    assert observations.index == ("n1@5", "n1@10", "n2@5", "n2@10") and collection.report.collected == ["n1", "n2"]
    assert observations.scale[:, 1].tolist() == [500.0, 1000.0, 500.0, 1000.0]
    assert observations.losses[:2, observations.targets.index("web")].tolist() == [2.5, 2.0]
    assert not collection.report.duplicated  # a run's evaluations are one run
    with pytest.raises(ValueError, match="at no one step"):
        collect(configs, runs, step=5, evaluations=True)
