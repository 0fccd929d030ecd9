"""Collection: RegMix's CSV layout, matching runs to configs by name, and reporting every bad run."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from regmix import collect as collect_module
from regmix.collect import collect, read_csvs, run_index
from regmix.mixture import ConfigError, Mixture, RunConfig, TrainingSettings, save_run_config
from regmix.results import HISTORY_NAME, RunResult, evaluation_row, save_result
from regmix.wandb_runs import OfflineRun

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


def test_csv_layout_and_index_matching(tmp_path):
    configs, runs = make_sweep(tmp_path, ["n1", "n2", "n10", "extra_run"])
    result = collect(configs, runs)
    assert result.report.problems() == []
    assert list(result.mixtures.index) == ["extra_run", 1, 2, 10]  # natural order of the config names
    assert list(result.mixtures.columns) == [f"train_{d}" for d in DOMAINS]
    assert list(result.losses.columns) == ["metric/web_val_loss", "metric/code_val_loss"]
    mixture_csv, loss_csv = result.save(tmp_path / "data", "1m", "pile")
    assert mixture_csv.name == "train_mixture_1m.csv" and loss_csv.name == "train_pile_loss_1m.csv"
    header = mixture_csv.read_text().splitlines()[0]
    assert header == "index,train_web,train_code,train_books"
    assert pd.read_csv(loss_csv).columns[0] == "index"
    mixtures, losses = read_csvs(mixture_csv, loss_csv)
    for idx in mixtures.index:  # each loss row belongs to its own mixture
        expected = true_losses(mixtures.loc[idx, list(DOMAINS)].to_numpy(float))
        assert losses.loc[idx, "metric/web_val_loss"] == pytest.approx(expected["web"])
        assert losses.loc[idx, "metric/code_val_loss"] == pytest.approx(expected["code"])


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
    assert list(result.mixtures.index) == [1] == list(result.losses.index)
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
    monkeypatch.setattr("regmix.wandb_runs.find_offline_runs", lambda root: [Path(root) / p for p in runs])
    monkeypatch.setattr("regmix.wandb_runs.read_offline_run", lambda path: runs[Path(path).name])


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
    assert result.losses.loc[1, "metric/web_val_loss"] == 2.0
    assert result.losses.loc[2, "metric/web_val_loss"] == 3.0
    early = collect(configs, wandb_dir=tmp_path, step=5)
    assert early.losses.loc[1, "metric/web_val_loss"] == 7.0


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
    assert result.losses.loc[1, "metric/web_val_loss"] == 2.5  # the finished one, not the first one found
    assert "unfinished" in report.failed["n2"]
    assert "code_val_loss" in report.failed["n3"]
    assert list(result.losses.index) == [1]
    with pytest.raises(ConfigError):
        collect(configs, wandb_dir=tmp_path, strict=True)


def test_resumed_wandb_run_is_one_run(tmp_path, monkeypatch):
    configs, _ = make_sweep(tmp_path, ["n1"], runs=[])
    _offline(monkeypatch, {"a.wandb": OfflineRun("n1", "same-id", {}, _history(2.0, steps=(5,))),
                           "b.wandb": OfflineRun("n1", "same-id", {}, _history(2.0, steps=(10,)))})
    result = collect(configs, wandb_dir=tmp_path, strict=True)
    assert result.losses.loc[1, "metric/web_val_loss"] == 2.0 and not result.report.duplicated


def test_local_losses_at_a_step_come_from_the_history(tmp_path):
    configs, runs = make_sweep(tmp_path, ["n1"])
    rows = [evaluation_row(s, s * 100, 9.0, 1.0, {"web": 10.0 - s, "code": 5.0}) for s in (5, 10)]
    (runs / "n1" / HISTORY_NAME).write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert collect(configs, runs, step=5).losses.loc[1, "metric/web_val_loss"] == 5.0
    assert "nothing logged at step 7" in collect(configs, runs, step=7).report.failed["n1"]


def test_read_csvs_refuses_mismatched_rows(tmp_path):
    pd.DataFrame({"index": [1, 2], "train_a": [1.0, 0.0], "train_b": [0.0, 1.0]}).to_csv(tmp_path / "m.csv", index=False)
    pd.DataFrame({"index": [2, 3], "metric/a_val_loss": [1.0, 2.0]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(ConfigError, match="only in mixtures \\[1\\]"):
        read_csvs(tmp_path / "m.csv", tmp_path / "l.csv")
    pd.DataFrame({"index": [2, 1], "metric/a_val_loss": [2.0, 1.0]}).to_csv(tmp_path / "l.csv", index=False)
    mixtures, losses = read_csvs(tmp_path / "m.csv", tmp_path / "l.csv")
    assert list(losses.index) == [1, 2] and losses["metric/a_val_loss"].tolist() == [1.0, 2.0]
    assert list(mixtures.columns) == ["a", "b"]
    pd.DataFrame({"index": [2, 1], "metric/a_val_loss": ["abc", 1.0]}).to_csv(tmp_path / "l.csv", index=False)
    with pytest.raises(ConfigError, match="l.csv: 1 values are not finite numbers, first in row 2"):
        read_csvs(tmp_path / "m.csv", tmp_path / "l.csv")


def test_run_index_and_cli(tmp_path, capsys):
    assert run_index("n12") == 12 and run_index("n12b") == "n12b"
    configs, runs = make_sweep(tmp_path, ["n1", "n2"], runs=["n1"])
    collect_module.main(["--configs", str(configs), "--runs", str(runs), "--output", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert "missing: n2" in out and (tmp_path / "out" / "train_pile_loss_1m.csv").exists()
    with pytest.raises(SystemExit, match="strict"):
        collect_module.main(["--configs", str(configs), "--runs", str(runs), "--strict"])
