"""Fitting: the model zoo, validated input, cross-validation confined to the rows it is given, extrapolation CV,
the selection rule, model files."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from regmix.core.files import ConfigError
from regmix.core.observations import Observations, find_csvs, read_csvs
from regmix.core.schema import loss_csv_name, mixture_csv_name
from regmix.regression import fit as fit_module
from regmix.regression import regressors
from regmix.regression.fit import (
    REGRESSORS,
    FittedModel,
    cross_validate,
    extrapolation_scores,
    farthest_runs,
    fit,
    selection_score,
)
from regmix.regression.mixing_law import LogLinearMixingLaw
from regmix.regression.model_file import load_model, save_model
from regmix.regression.regressors import GPMixtureRegressor, LinearMixtureRegressor, make_regressor

DOMAINS = ["web", "code", "books", "math"]

FIGURES = ["spearman", "pearson", "mse", "r2", "rmse", "regret", "optimism"]


def observed(rows: int, seed: int) -> Observations:
    """Mixtures and two losses from a known, log-shaped function (like real mixture -> loss curves)."""
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(len(DOMAINS), 0.7), rows)
    web = 3.0 - 0.4 * np.log(weights[:, 0] + 0.01) - 0.1 * np.log(weights[:, 2] + 0.01)
    code = 3.5 - 0.5 * np.log(weights[:, 1] + 0.01) + 0.2 * weights[:, 0] * weights[:, 3]
    noise = rng.normal(0, 0.01, (rows, 2))
    return Observations(tuple(DOMAINS), ("web", "code"), tuple(range(1, rows + 1)), weights, np.c_[web, code] + noise)


def synthetic(rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    observations = observed(rows, seed)
    return observations.mixture_frame(), observations.loss_frame()


def test_command_names_the_zoo():
    """fit.py spells the zoo's names out (its --help imports no scikit-learn): they are the zoo's."""
    assert (fit_module.REGRESSORS, fit_module.BEST) == (regressors.REGRESSORS, regressors.BEST)


def test_zoo_names_params_and_multi_target():
    X, Y = synthetic(80, 0)
    scaled = X.assign(params=np.where(np.arange(80) % 2, 1e6, 4e6), tokens=2e8)
    for name in REGRESSORS:
        regressor = make_regressor(name)
        assert isinstance(regressor.get_params(), dict)
        inputs = scaled if name in regressors.SCALE_AWARE else X
        both = regressor.fit(inputs, Y).predict(inputs)
        assert both.shape == (80, 2)
        rows = X
        if name in regressors.SCALE_AWARE:  # at one scale: the model predicts the rows of that scale
            both, rows = both[1::2], X.iloc[1::2]
        model = FittedModel(name, regressor, tuple(DOMAINS), ("web", "code"),
                            scale=(1e6, 2e8) if name in regressors.SCALE_AWARE else None)
        code_only = model.select(["code"])  # what the exact optimum predicts for a one-target objective
        assert code_only.targets == ("code",) and model.targets == ("web", "code")
        np.testing.assert_allclose(code_only.predict(rows.to_numpy()), both[:, [1]])
        np.testing.assert_allclose(model.predict(rows.to_numpy()), both)  # the original is untouched
    one = make_regressor("lightgbm").fit(X, Y["web"]).predict(X)
    assert one.shape == (80,)
    assert make_regressor("lightgbm").get_params()["n_estimators"] == 1000  # the published setting
    with pytest.raises(ValueError, match="unknown regressor"):
        make_regressor("xgboost")


def test_input_is_validated_and_domain_order_checked():
    X, Y = synthetic(40, 1)
    model = LinearMixtureRegressor().fit(X, Y)
    with pytest.raises(ValueError, match=">= 0"):
        LinearMixtureRegressor().fit(X - 1.0, Y)
    bad = X.copy()
    bad.iloc[0, 0] = np.nan
    with pytest.raises(ValueError):
        LinearMixtureRegressor().fit(bad, Y)
    with pytest.raises(ValueError):
        model.predict(X[DOMAINS[::-1]])  # same domains, other order: refused, never silently misread
    with pytest.raises(ValueError):
        model.predict(X.iloc[:, :3])


class Spy(LinearMixtureRegressor):
    """Records which rows each fold fits on and predicts."""

    log: list[tuple[str, tuple]] = []

    def fit(self, X, y):
        Spy.log.append(("fit", tuple(X.index)))
        return super().fit(X, y)

    def predict(self, X):
        Spy.log.append(("predict", tuple(X.index)))
        return super().predict(X)


def test_cross_validation_sees_only_the_rows_given_and_predicts_out_of_fold():
    X, Y = synthetic(100, 2)
    train, held_out = X.index[:70], X.index[70:]
    Spy.log = []
    table, predictions = cross_validate(Spy(), X.loc[train], Y.loc[train], folds=5)
    assert predictions.shape == (70, 2)
    seen = {i for _, rows in Spy.log for i in rows}
    assert seen == set(train) and not seen & set(held_out)
    fits, predicts = Spy.log[0::2], Spy.log[1::2]
    for (_, fitted), (_, predicted) in zip(fits, predicts):
        assert not set(fitted) & set(predicted)
    assert sorted(i for _, rows in predicts for i in rows) == sorted(train)
    assert list(table.columns) == FIGURES and list(table.index) == list(Y.columns)


def test_gp_closed_form_matches_sklearn_predict():
    X, Y = synthetic(60, 3)
    gp = GPMixtureRegressor().fit(X, Y["web"])
    fresh, _ = synthetic(500, 4)
    fitted = gp.models_[0]
    reference = fitted["gp"].predict(np.log(fresh.to_numpy() + gp.eps)) * fitted["scale"] + fitted["mean"]
    np.testing.assert_allclose(gp.predict(fresh), reference, rtol=0, atol=1e-9)
    assert (gp.predict_std(fresh.iloc[:5]) > 0).all()


def test_fit_keeps_the_best_by_cv_and_the_model_file_round_trips(tmp_path, capsys):
    model = fit(observed(90, 5), ["linear", "gp"], folds=3)
    assert model.name == "gp"  # the loss is log-shaped: the GP must beat a line on CV
    said = capsys.readouterr().out  # progress as each fold ends, not only when a regressor's CV is whole
    assert all(f"{name}: fold {k}/3 fitted" in said for name in ("linear", "gp") for k in (1, 2, 3))
    assert "gp: fitting on all 90 runs, 2 targets" in said
    assert model.cv["web"]["spearman"] > 90
    assert set(model.extrapolation) == {"web", "code"} and model.extrapolation["web"]["spearman"] > 80
    assert model.domains == tuple(DOMAINS) and model.targets == ("web", "code")
    loaded = load_model(save_model(model, tmp_path / "model.npz"))
    fresh, _ = synthetic(30, 6)
    np.testing.assert_array_equal(loaded.predict(fresh.to_numpy()), model.predict(fresh.to_numpy()))
    assert loaded.predict_spread(fresh.to_numpy()) is not None  # the GP's own std
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    with pytest.raises(ConfigError, match="junk.npz"):
        load_model(tmp_path / "junk.npz")


def test_targets_in_another_order_and_by_loss_column():
    observations = observed(40, 8)
    model = fit(observations, ["linear"], targets=["metric/code_val_loss", "web"], folds=1)
    assert model.targets == ("code", "web")  # the order asked for, by valid domain
    reference = fit(observations, ["linear"], targets=["web"], folds=1)
    weights = observations.mixtures
    np.testing.assert_allclose(model.predict(weights)[:, 1], reference.predict(weights)[:, 0])
    with pytest.raises(ValueError, match="were not observed"):
        fit(observations, ["linear"], targets=["arxiv"], folds=1)


def test_ensemble_spread_and_cli(tmp_path, capsys):
    X, Y = synthetic(80, 7)
    ensemble = make_regressor("ensemble").fit(X, Y)
    spread = ensemble.predict_spread(X)
    assert spread.shape == (80, 2) and (spread >= 0).all()
    mixture_csv, loss_csv = tmp_path / mixture_csv_name("1m"), tmp_path / loss_csv_name("pile", "1m")
    observed(80, 7).save(mixture_csv, loss_csv)
    model = fit_module.main(["--mixtures", str(mixture_csv), "--losses", str(loss_csv),
                             "--model", "linear", "--target", "web", "--folds", "3",
                             "--output", str(tmp_path / "model.npz")])
    assert isinstance(model, FittedModel) and model.targets == ("web",)
    out = capsys.readouterr().out
    assert "kept linear" in out and "3-fold CV" in out and "extrapolation CV" in out and "selection score" in out
    # as a command: the model file must load in another process
    subprocess.run([sys.executable, "-m", "regmix.regression.fit", "--mixtures", str(mixture_csv), "--losses",
                    str(loss_csv), "--model", "linear", "--folds", "1", "--output",
                    str(tmp_path / "cli.npz")], check=True, capture_output=True)
    assert load_model(tmp_path / "cli.npz").targets == tuple(Y.columns)
    with pytest.raises(ConfigError, match="nowhere_loss_1m.csv: file not found"):
        fit_module.main(["--mixtures", str(mixture_csv), "--losses", str(tmp_path / "nowhere_loss_1m.csv")])


def test_ensemble_stays_useful_with_a_few_dozen_proxies():
    """The published min_child_samples=20 makes LightGBM constant on ~40 rows; the ensemble member adapts."""
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(5), size=48)
    y = 3 - 0.08 * np.log(X[:, 0] + 1e-3) - 0.5 * X[:, 1] + 0.3 * X[:, 2] ** 2 + rng.normal(0, 0.01, 48)
    model = fit(Observations(tuple("abcde"), ("a",), tuple(range(48)), X, y[:, None]), ["ensemble"])
    assert model.cv["a"]["r2"] > 0.85


def law_and_bump(rows: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A log-linear law plus a bump near one mixture: structure the law's form cannot make."""
    X = np.random.default_rng(seed).dirichlet(np.ones(3), rows)
    law = 2.0 + 0.8 * np.exp(X @ np.array([-2.0, 0.5, 1.0]))
    bump = 0.3 * np.exp(-((X - [0.2, 0.6, 0.2]) ** 2).sum(axis=1) / (2 * 0.15 ** 2))
    return pd.DataFrame(X, columns=DOMAINS[:3]), law + bump


def test_law_plus_residual_recovers_a_bump_the_law_alone_misses():
    X, y = law_and_bump(150, 10)
    fresh, truth = law_and_bump(400, 11)
    observations = Observations(tuple(DOMAINS[:3]), ("web",), tuple(range(150)), X.to_numpy(), y[:, None])
    models = {name: fit(observations, [name], folds=1) for name in ("loglinear", "law_gp", "law_lightgbm")}
    errors = {name: np.abs(model.predict(fresh.to_numpy())[:, 0] - truth).mean() for name, model in models.items()}
    assert errors["law_gp"] < errors["loglinear"] / 5 and errors["law_gp"] < 0.01
    assert errors["law_lightgbm"] < 0.6 * errors["loglinear"]  # trees: a step-wise bump, still far closer
    assert (models["law_gp"].predict_spread(fresh.to_numpy()[:5]) > 0).all()  # the residual GP's std
    assert models["law_lightgbm"].predict_spread(fresh.to_numpy()) is None


def test_extrapolation_fits_on_the_centre_and_scores_the_farthest_runs():
    rng = np.random.default_rng(12)
    central = rng.dirichlet(np.full(4, 40.0), 40)
    extreme = np.array([[0.97, 0.01, 0.01, 0.01], [0.01, 0.97, 0.01, 0.01], [0.0, 0.4, 0.3, 0.3],
                        [0.5, 0.5, 0.0, 0.0], [0.01, 0.01, 0.01, 0.97], [0.3, 0.3, 0.4, 0.0],
                        [0.01, 0.01, 0.97, 0.01], [0.9, 0.0, 0.1, 0.0], [0.0, 0.0, 0.5, 0.5], [0.8, 0.2, 0.0, 0.0]])
    positions = np.arange(3, 50, 5)  # scattered among the central runs
    weights = np.insert(central, positions - np.arange(10), extreme, axis=0)
    assert np.allclose(weights[positions], extreme)
    X = pd.DataFrame(weights, columns=DOMAINS, index=range(100, 150))
    Y = pd.DataFrame({"web": 3 - np.log(weights[:, 0] + 0.01), "code": 3 - np.log(weights[:, 1] + 0.01)}, index=X.index)
    assert set(farthest_runs(X, 0.2)) == set(positions)
    Spy.log = []
    table = extrapolation_scores(Spy(), X, Y, fraction=0.2)
    (fitted, rows_fitted), (predicted, rows_predicted) = Spy.log
    assert fitted == "fit" and rows_fitted == tuple(np.delete(X.index, positions))  # never an extreme run
    assert predicted == "predict" and sorted(rows_predicted) == list(X.index[positions])
    assert list(table.columns) == FIGURES and list(table.index) == ["web", "code"]
    with pytest.raises(ValueError, match="at least 3"):
        farthest_runs(X.iloc[:10], 0.2)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        farthest_runs(X, 1.0)


def spearman_table(values: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"spearman": values, "pearson": values, "mse": 0.0, "r2": 0.0}, index=["web", "code"])


def test_selection_rule_averages_cv_and_extrapolation_spearman(monkeypatch):
    # linear fits the proxies best but ranks the far runs badly; loglinear's CV Spearman is undefined (constant)
    cv = {LinearMixtureRegressor: [99.0, 97.0], GPMixtureRegressor: [90.0, 88.0], LogLinearMixingLaw: [np.nan, 99.0]}
    far = {LinearMixtureRegressor: [40.0, 50.0], GPMixtureRegressor: [85.0, 83.0], LogLinearMixingLaw: [100.0, 99.0]}
    assert selection_score(spearman_table(cv[LinearMixtureRegressor]), spearman_table(far[LinearMixtureRegressor])
                           ) == pytest.approx(71.5)
    assert selection_score(spearman_table(cv[LogLinearMixingLaw]), spearman_table(far[LogLinearMixingLaw])
                           ) == pytest.approx(74.5)  # the undefined Spearman counts 0 (skipped, 99.25 would win)
    assert selection_score(spearman_table([80.0, 80.0]), None) == 80.0 and selection_score(None, None) == 0.0
    monkeypatch.setattr(fit_module, "cross_validate",
                        lambda regressor, *_, **__: (spearman_table(cv[type(regressor)]), None))
    monkeypatch.setattr(fit_module, "extrapolation_scores",
                        lambda regressor, *_, **__: spearman_table(far[type(regressor)]))
    model = fit(observed(30, 13), ["linear", "loglinear", "gp"], folds=3)
    assert model.name == "gp"  # 86.5 > 74.5 (loglinear) > 71.5 (linear, the best by CV alone)
    assert model.cv["web"]["spearman"] == 90.0 and model.extrapolation["code"]["spearman"] == 83.0


def test_fit_refuses_a_law_with_too_few_runs_for_its_cv():
    observations = observed(12, 0)  # 4 domains: the law needs 5 runs; 5-fold CV fits on 9, extrapolation on 10
    assert fit(observations, ["loglinear"], folds=5).name == "loglinear"
    with pytest.raises(ValueError, match="loglinear needs 5 runs for 4 domains.*sees 4"):
        fit(observed(5, 0), ["loglinear", "linear"], folds=5)


def test_mixture_csvs_rounded_like_regmixs_published_ones_are_read(tmp_path):
    """RegMix's published weights are rounded to 3 decimals (rows sum to 0.996-1.003): real data, not damage."""
    observations = observed(20, 3)
    mixtures, losses = observations.mixture_frame().round(3), observations.loss_frame()
    mixtures.iloc[0] = [0.301, 0.2, 0.3, 0.195]  # sums to 0.996
    observations = Observations(observations.domains, observations.targets, observations.index,
                                mixtures.to_numpy(), losses.to_numpy())
    observations.save(tmp_path / mixture_csv_name("1m"), tmp_path / loss_csv_name("pile", "1m"))
    read = read_csvs(tmp_path / mixture_csv_name("1m"), tmp_path / loss_csv_name("pile", "1m"))
    assert read.mixtures[0].sum() == pytest.approx(0.996)


def test_early_stopping_lightgbm_stops_on_an_inner_split_and_never_sees_more():
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(4), size=80)
    y = 3.0 - X[:, 0] + rng.normal(0, 0.3, size=80)  # mostly noise: the full 1000 rounds overfit it
    stopped = make_regressor("lightgbm_es").fit(X, y)
    rounds = stopped.models_[0].num_trees()
    assert 1 <= rounds < 1000
    assert make_regressor("lightgbm").fit(X, y).models_[0].num_trees() == 1000
    # the rounds come from the inner split alone: refitting on the same rows finds the same number
    assert make_regressor("lightgbm_es").fit(X, y).models_[0].num_trees() == rounds


def test_regret_and_lower_tail_optimism_say_what_picking_by_the_model_costs():
    from regmix.regression.fit import evaluate

    y = np.arange(20, dtype=float)  # run 0 is the best
    honest = evaluate(y, y + 0.5)
    assert honest["regret"] == 0.0 and honest["optimism"] == pytest.approx(-0.5) and honest["rmse"] == 0.5
    flattering = y.copy()
    flattering[7] = -5.0  # a middling run predicted best
    picked = evaluate(y, flattering)
    assert picked["regret"] == 7.0
    assert picked["optimism"] == pytest.approx((12.0 + 0.0) / 2)  # the 2 runs predicted best: 7 (-5) and 0 (0)


def test_saturating_law_recovers_diminishing_returns_and_stays_bounded():
    rng = np.random.default_rng(21)
    a, b = np.array([0.3, 0.0, 0.2, 0.1]), np.array([0.5, 1.0, 0.3, 0.8])

    def law(P: np.ndarray) -> np.ndarray:
        return 2.0 + ((P + 1e-3) ** -b - 1) / b @ a

    X = rng.dirichlet(np.ones(4), 120)
    model = make_regressor("saturating").fit(X, law(X) + rng.normal(0, 0.005, 120))
    fresh = rng.dirichlet(np.ones(4), 300)
    assert np.abs(model.predict(fresh) - law(fresh)).max() < 0.05
    assert model.models_[0]["a"][1] < 0.01  # the domain that does not help gets (close to) no term
    corners = np.eye(4)  # far outside the runs: finite, and no better than the law allows
    assert np.isfinite(model.predict(corners)).all() and (model.predict(corners) > 1.9).all()
    assert regressors.minimum_runs("saturating", 4) == 9
    with pytest.raises(ValueError, match="saturating needs 9 runs"):
        fit(observed(8, 0), ["saturating"], folds=1)


def test_fit_selects_by_regret_or_rmse_when_asked(monkeypatch):
    tables = {LinearMixtureRegressor: pd.DataFrame({"spearman": [95.0, 95.0], "regret": [0.3, 0.2], "rmse": 0.1},
                                                   index=["web", "code"]),
              GPMixtureRegressor: pd.DataFrame({"spearman": [90.0, 90.0], "regret": [0.0, 0.1], "rmse": 0.2},
                                               index=["web", "code"])}
    monkeypatch.setattr(fit_module, "cross_validate", lambda regressor, *_, **__: (tables[type(regressor)], None))
    monkeypatch.setattr(fit_module, "extrapolation_scores", lambda regressor, *_, **__: tables[type(regressor)])
    observations = observed(30, 13)
    assert fit(observations, ["linear", "gp"], folds=3).name == "linear"
    assert fit(observations, ["linear", "gp"], folds=3, select="regret").name == "gp"
    assert fit(observations, ["linear", "gp"], folds=3, select="rmse").name == "linear"
    assert selection_score(tables[GPMixtureRegressor], None, "regret") == pytest.approx(-0.05)
    with pytest.raises(ValueError, match="unknown selection metric 'r2'"):
        fit(observations, ["linear"], folds=3, select="r2")


def test_the_study_folder_gives_its_one_csv_pair(tmp_path, capsys):
    """fit --study reads a folder's pair whatever corpus names the losses (collect's, a pipeline method's)."""
    study = tmp_path / "runs" / "default" / "regmix"
    with pytest.raises(ConfigError, match="regmix: no such folder of run CSVs"):
        find_csvs(study)
    study.mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"regmix: no train_mixture_<scale>\.csv \(`regmix collect --output"):
        find_csvs(study)
    observed(30, 1).save(study / mixture_csv_name("proxy"), study / loss_csv_name("default", "proxy"))
    assert find_csvs(study) == (study / "train_mixture_proxy.csv", study / "train_default_loss_proxy.csv")
    model = fit_module.main(["--study", str(study), "--model", "linear", "--folds", "1",
                             "--output", str(tmp_path / "m.npz")])
    assert model.targets == ("web", "code")
    observed(40, 2).save(study / mixture_csv_name("1m"), study / loss_csv_name("pile", "1m"))
    with pytest.raises(ConfigError, match=r"mixture CSVs of several scales \['1m', 'proxy'\]: choose one"):
        find_csvs(study)
    assert find_csvs(study, "1m") == (study / "train_mixture_1m.csv", study / "train_pile_loss_1m.csv")
    with pytest.raises(ConfigError, match=r"train_mixture_60m\.csv: file not found; the scales here: \['1m', 'proxy'"):
        find_csvs(study, "60m")
    (study / loss_csv_name("web", "1m")).write_bytes((study / loss_csv_name("pile", "1m")).read_bytes())
    with pytest.raises(ConfigError, match=r"one loss CSV train_<corpus>_loss_1m\.csv goes with train_mixture_1m\.csv, "
                                          r"found 2: train_pile_loss_1m\.csv, train_web_loss_1m\.csv"):
        fit_module.main(["--study", str(study), "--scale", "1m"])
    with pytest.raises(SystemExit):
        fit_module.main(["--mixtures", str(study / mixture_csv_name("1m"))])
    assert "--mixtures and --losses go together" in capsys.readouterr().err
