"""`regmix predict`: a model's predictions for a user's mixtures, from a CSV, a config or a folder of them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regmix.cli import run_command
from regmix.core.observations import Observations
from regmix.regression.fit import fit
from regmix.regression.model_file import save_model
from regmix.regression.predict import main

DOMAINS = ("web", "code", "books")


@pytest.fixture
def fitted(tmp_path):
    rng = np.random.default_rng(3)
    weights = rng.dirichlet(np.ones(3), 40)
    losses = np.c_[3 - np.log(weights[:, 0] + 0.05), 3.5 - np.log(weights[:, 1] + 0.05)]
    observations = Observations(DOMAINS, ("web", "code"), tuple(range(1, 41)), weights, losses)
    observations.save(tmp_path / "mixtures.csv", tmp_path / "losses.csv")
    model = fit(observations, ["linear"], folds=1)
    save_model(model, tmp_path / "model.npz")
    return model, observations


def test_predict_round_trips_the_models_own_training_rows(fitted, tmp_path, capsys):
    model, observations = fitted
    table = main(["--model", str(tmp_path / "model.npz"), "--mixtures", str(tmp_path / "mixtures.csv"),
                  "--output", str(tmp_path / "predicted.csv")])
    expected = model.predict(observations.mixtures)
    np.testing.assert_allclose(table[["metric/web_val_loss", "metric/code_val_loss"]].to_numpy(), expected)
    np.testing.assert_allclose(table["objective"], expected.mean(axis=1))
    written = pd.read_csv(tmp_path / "predicted.csv", index_col="index")
    assert list(written.index) == list(range(1, 41))
    assert "objective: mean validation loss of web, code" in capsys.readouterr().out


def test_predict_reads_configs_and_weights_the_objective(fitted, tmp_path):
    model, _ = fitted
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "production.yaml").write_text("train:\n  train_web: 0.7\n  train_code: 0.3\n")
    (tmp_path / "configs" / "uniform.yaml").write_text("train: {train_web: 0.25, train_code: 0.25, train_books: 0.5}\n")
    table = main(["--model", str(tmp_path / "model.npz"), "--mixtures", str(tmp_path / "configs"),
                  "--target", "code"])
    assert list(table.index) == ["production", "uniform"]
    production = model.predict(np.array([[0.7, 0.3, 0.0]]))[0]
    assert table.loc["production", "objective"] == pytest.approx(production[1])


def test_a_domain_the_model_never_saw_names_the_file(fitted, tmp_path, capsys):
    (tmp_path / "other.yaml").write_text("train: {train_web: 0.5, train_math: 0.5}\n")
    code = run_command(main, ["--model", str(tmp_path / "model.npz"), "--mixtures", str(tmp_path / "other.yaml")])
    err = capsys.readouterr().err
    assert code != 0 and "other.yaml" in err and "['math']" in err and "model.npz" in err
