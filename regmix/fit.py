"""Fit the mixture -> validation-loss regressor, score it on the training runs, save it.

A small, named model zoo (`make_regressor`): the published LightGBM, the linear baseline, a Gaussian
process on log weights, Ye et al.'s log-linear mixing law (`regmix.mixing_law`), `ensemble` (GP +
LightGBM averaged, their disagreement as the spread), which wins on cross-validation, and the hybrids
`law_gp` / `law_lightgbm` (the law plus a GP or LightGBM on what it leaves). Every regressor is a
scikit-learn estimator fitting one model per target column.

Each candidate gets two scores, both from the training runs only (held-out data is never seen): K-fold CV
(fit at the proxy scale) and extrapolation CV (fit on the runs near the centre of the mixtures, rank the
farthest ones: a stand-in for the large run's mixture, which lies outside the proxies' mass).
"""

from __future__ import annotations

import argparse
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.stats import pearsonr, spearmanr
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from regmix.files import ConfigError
from regmix.mixing_law import LogLinearMixingLaw
from regmix.observations import Observations, read_csvs
from regmix.schema import as_valid_domain

REGRESSORS = ("lightgbm", "linear", "gp", "loglinear", "ensemble", "law_gp", "law_lightgbm")
BEST = "ensemble"
MIN_EXTRAPOLATION_RUNS = 3  # a Spearman over fewer held-out runs says nothing


class _PerTarget(RegressorMixin, BaseEstimator):
    """Validated input (finite, non-negative weights; y 1-D or one column per target), one model per target."""

    def fit(self, X: Any, y: Any) -> _PerTarget:
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        if (X < 0).any():
            raise ValueError("mixture weights must be >= 0")
        Y = y.reshape(len(y), -1)
        self.single_target_ = y.ndim == 1
        self.models_ = [self._fit_one(X, Y[:, j]) for j in range(Y.shape[1])]
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "models_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = np.column_stack([self._predict_one(m, X) for m in self.models_])
        return out[:, 0] if self.single_target_ else out

    def _fit_one(self, X: np.ndarray, y: np.ndarray) -> Any:
        raise NotImplementedError

    def _predict_one(self, model: Any, X: np.ndarray) -> np.ndarray:
        return model.predict(X)


class LinearMixtureRegressor(_PerTarget):
    """RegMix's baseline: ordinary least squares on the raw weights."""

    def _fit_one(self, X: np.ndarray, y: np.ndarray) -> LinearRegression:
        return LinearRegression().fit(X, y)


class LightGBMMixtureRegressor(_PerTarget):
    """Gradient-boosted trees; the defaults are RegMix's published setting (no early stopping).

    `num_threads` is for prediction (millions of candidates); training runs on one thread.
    `max_child_fraction` caps min_child_samples at that share of the rows: with a few dozen proxies the
    published 20 leaves trees with one split or none (a constant model); at RegMix's 512 it changes nothing.
    """

    def __init__(self, n_estimators: int = 1000, learning_rate: float = 0.01, num_leaves: int = 31,
                 min_child_samples: int = 20, subsample: float = 1.0, colsample_bytree: float = 1.0,
                 seed: int = 42, num_threads: int = 2, max_child_fraction: float = 1.0):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.seed = seed
        self.num_threads = num_threads
        self.max_child_fraction = max_child_fraction

    def _fit_one(self, X: np.ndarray, y: np.ndarray) -> lgb.Booster:
        min_child = min(self.min_child_samples, max(2, int(len(X) * self.max_child_fraction)))
        params = {"boosting_type": "gbdt", "objective": "regression", "learning_rate": self.learning_rate,
                  "num_leaves": self.num_leaves, "min_child_samples": min_child,
                  "bagging_fraction": self.subsample, "bagging_freq": int(self.subsample < 1.0),
                  "feature_fraction": self.colsample_bytree, "seed": self.seed,
                  # a few hundred rows: threads only add synchronisation (and stall on a busy machine)
                  "num_threads": 1, "force_col_wise": True, "verbose": -1}
        return lgb.train(params, lgb.Dataset(X, y), num_boost_round=self.n_estimators)

    def _predict_one(self, model: lgb.Booster, X: np.ndarray) -> np.ndarray:
        return model.predict(X, num_threads=self.num_threads)


class GPMixtureRegressor(_PerTarget):
    """Gaussian process, ARD RBF kernel on log(weight + eps): smooth, and loss is roughly log-linear in weight.

    Prediction is a closed form (kernel rows times the dual coefficients), evaluated with one matrix
    product per chunk, so scoring millions of candidates stays cheap.
    """

    def __init__(self, eps: float = 1e-3, noise: float = 1e-3, seed: int = 0):
        self.eps = eps
        self.noise = noise
        self.seed = seed

    def _features(self, X: np.ndarray) -> np.ndarray:
        return np.log(X + self.eps)

    def _fit_one(self, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        mean, scale = float(y.mean()), float(y.std()) or 1.0
        kernel = (ConstantKernel(1.0, (1e-3, 1e3)) * RBF(np.ones(X.shape[1]), (1e-3, 1e3))
                  + WhiteKernel(self.noise, (1e-8, 1.0)))
        gp = GaussianProcessRegressor(kernel, random_state=self.seed)
        with warnings.catch_warnings():
            # ARD switches off domains that do not matter by pushing their length scale to the bound.
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(self._features(X), (y - mean) / scale)
        signal = gp.kernel_.k1
        return {"gp": gp, "mean": mean, "scale": scale, "amplitude": float(signal.k1.constant_value),
                "inv_length": 1.0 / np.asarray(signal.k2.length_scale, dtype=np.float64)
                * np.ones(X.shape[1])}

    def _predict_one(self, model: dict[str, Any], X: np.ndarray) -> np.ndarray:
        train = model["gp"].X_train_ * model["inv_length"]
        train_sq = (train ** 2).sum(axis=1)
        out = np.empty(len(X))
        for start in range(0, len(X), 65536):
            z = self._features(X[start:start + 65536]) * model["inv_length"]
            d2 = np.maximum((z ** 2).sum(axis=1)[:, None] + train_sq[None, :] - 2.0 * z @ train.T, 0.0)
            out[start:start + len(z)] = (np.exp(-0.5 * d2) @ model["gp"].alpha_) * model["amplitude"]
        return out * model["scale"] + model["mean"]

    def predict_std(self, X: Any) -> np.ndarray:
        """The GP's own predictive standard deviation (slow: for a few rows such as the top-k)."""
        check_is_fitted(self, "models_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = np.column_stack([m["gp"].predict(self._features(X), return_std=True)[1] * m["scale"]
                               for m in self.models_])
        return out[:, 0] if self.single_target_ else out


class EnsembleMixtureRegressor(RegressorMixin, BaseEstimator):
    """Mean of several regressors; `predict_spread` is their standard deviation (how much they disagree)."""

    def __init__(self, members: Sequence[tuple[str, Any]] = ()):
        self.members = members

    def fit(self, X: Any, y: Any) -> EnsembleMixtureRegressor:
        if not self.members:
            raise ValueError("an ensemble needs at least one member")
        self.fitted_ = [(name, clone(m).fit(X, y)) for name, m in self.members]
        return self

    def member_predictions(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "fitted_")
        return np.stack([m.predict(X) for _, m in self.fitted_])

    def predict(self, X: Any) -> np.ndarray:
        return self.member_predictions(X).mean(axis=0)

    def predict_spread(self, X: Any) -> np.ndarray:
        return self.member_predictions(X).std(axis=0)


class LawResidualMixtureRegressor(RegressorMixin, BaseEstimator):
    """A mixing law plus a model of what it leaves: prediction = law(X) + residual(X), residual fit on y - law(X).

    The law carries the trend where no run was made (it extrapolates by its form); the residual model adds
    the local structure the law's shape cannot make. Both are scikit-learn regressors, cloned when fit.
    """

    def __init__(self, law: Any, residual: Any):
        self.law = law
        self.residual = residual

    def fit(self, X: Any, y: Any) -> LawResidualMixtureRegressor:
        self.law_ = clone(self.law).fit(X, y)
        self.residual_ = clone(self.residual).fit(X, np.asarray(y, dtype=np.float64) - self.law_.predict(X))
        return self

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "residual_")
        return self.law_.predict(X) + self.residual_.predict(X)

    def _residual_has_std(self) -> bool:
        return hasattr(self.residual, "predict_std")

    @available_if(_residual_has_std)
    def predict_std(self, X: Any) -> np.ndarray:
        """The residual model's predictive std (the law's own parameter uncertainty is not in it)."""
        check_is_fitted(self, "residual_")
        return self.residual_.predict_std(X)


def _small_data_lightgbm(num_threads: int) -> LightGBMMixtureRegressor:
    """LightGBM for a few dozen to a few hundred runs: bagged, and leaves may hold 10% of the rows."""
    return LightGBMMixtureRegressor(subsample=0.8, colsample_bytree=0.7, num_threads=num_threads,
                                    max_child_fraction=0.1)


def make_regressor(name: str, num_threads: int = 2) -> Any:
    """A fresh regressor of the zoo by name: lightgbm (published), linear, gp, loglinear, ensemble (best by CV),
    law_gp and law_lightgbm (the log-linear law plus a GP or small-data LightGBM on its residuals)."""
    if name == "lightgbm":
        return LightGBMMixtureRegressor(num_threads=num_threads)
    if name == "linear":
        return LinearMixtureRegressor()
    if name == "gp":
        return GPMixtureRegressor()
    if name == "loglinear":
        return LogLinearMixingLaw()
    if name == "ensemble":
        return EnsembleMixtureRegressor([("gp", GPMixtureRegressor()), ("lightgbm", _small_data_lightgbm(num_threads))])
    if name == "law_gp":
        return LawResidualMixtureRegressor(LogLinearMixingLaw(), GPMixtureRegressor())
    if name == "law_lightgbm":
        return LawResidualMixtureRegressor(LogLinearMixingLaw(), _small_data_lightgbm(num_threads))
    raise ValueError(f"unknown regressor {name!r}; choose from {REGRESSORS}")


def evaluate(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Spearman and Pearson (in %, as RegMix reports them), MSE and R2 of one target."""
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    residual = ((y_true - y_pred) ** 2).sum()
    total = ((y_true - y_true.mean()) ** 2).sum()
    return {"spearman": 100 * float(spearmanr(y_true, y_pred)[0]),
            "pearson": 100 * float(pearsonr(y_true, y_pred)[0]),
            "mse": float(residual / len(y_true)), "r2": float(1 - residual / total) if total else float("nan")}


def cross_validate(regressor: Any, X: pd.DataFrame, Y: pd.DataFrame, folds: int = 5, seed: int = 0
                   ) -> pd.DataFrame:
    """Out-of-fold scores per target (rows: targets, columns: metrics), from the rows given only."""
    predictions = np.zeros(Y.shape)
    for train, test in KFold(folds, shuffle=True, random_state=seed).split(X):
        model = clone(regressor).fit(X.iloc[train], Y.iloc[train])
        predictions[test] = np.asarray(model.predict(X.iloc[test])).reshape(len(test), -1)
    return _score_table(Y, predictions)


def _score_table(Y: pd.DataFrame, predictions: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({c: evaluate(Y[c].to_numpy(), predictions[:, j]) for j, c in enumerate(Y.columns)}).T


def _extreme_count(rows: int, fraction: float) -> int:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the extrapolation fraction must be in (0, 1), got {fraction}")
    return int(round(fraction * rows))


def farthest_runs(X: pd.DataFrame, fraction: float = 0.2, eps: float = 1e-3) -> np.ndarray:
    """Positions of the `fraction` of runs farthest from the centre of all runs, farthest first.

    Distance is Aitchison's (Euclidean on centred log-ratios of proportions + eps): the geometry of the
    simplex, in which going from 1% to 0.1% of a domain is as far as from 10% to 1%.
    """
    count = _extreme_count(len(X), fraction)
    if count < MIN_EXTRAPOLATION_RUNS:
        raise ValueError(f"a fraction of {fraction} of {len(X)} runs holds out {count}; "
                         f"extrapolation needs at least {MIN_EXTRAPOLATION_RUNS}")
    W = X.to_numpy(dtype=np.float64)
    logs = np.log(W / W.sum(axis=1, keepdims=True) + eps)
    clr = logs - logs.mean(axis=1, keepdims=True)
    distance = np.linalg.norm(clr - clr.mean(axis=0), axis=1)
    return np.argsort(-distance, kind="stable")[:count]


def extrapolation_scores(regressor: Any, X: pd.DataFrame, Y: pd.DataFrame, fraction: float = 0.2) -> pd.DataFrame:
    """Scores per target (as `cross_validate`'s) on the `farthest_runs`, of a fit on all the other rows.

    A check of ranking beyond the runs' mass without a larger run: the mixture a large run gets is an
    optimum, usually at the edge of (or outside) what the proxies covered.
    """
    held_out = farthest_runs(X, fraction)
    train = np.setdiff1d(np.arange(len(X)), held_out)
    model = clone(regressor).fit(X.iloc[train], Y.iloc[train])
    predictions = np.asarray(model.predict(X.iloc[held_out])).reshape(len(held_out), -1)
    return _score_table(Y.iloc[held_out], predictions)


def selection_score(cv: pd.DataFrame | None, extrapolation: pd.DataFrame | None) -> float:
    """What `fit` ranks candidates by: the mean over targets of the mean of CV and extrapolation Spearman.

    Spearman, because the simulation only needs the order of mixtures; both halves, because a model that
    fits the proxies well but ranks badly outside their mass picks a poor mixture for the large run. A
    Spearman left undefined by a constant prediction counts as 0 (no ranking); a missing table is left out.
    """
    tables = [table["spearman"].fillna(0.0).mean() for table in (cv, extrapolation) if table is not None]
    return float(np.mean(tables)) if tables else 0.0


@dataclass
class FittedModel:
    """What the simulator loads: the regressor with the domain and target (valid domain) order it was fit on."""

    name: str
    regressor: Any
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    cv: dict[str, dict[str, float]] = field(default_factory=dict)
    extrapolation: dict[str, dict[str, float]] = field(default_factory=dict)

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Predicted losses, shape (rows, targets), for weights in `self.domains` order."""
        frame = pd.DataFrame(np.asarray(weights, dtype=np.float64), columns=list(self.domains))
        return np.asarray(self.regressor.predict(frame)).reshape(len(frame), len(self.targets))

    def predict_spread(self, weights: np.ndarray) -> np.ndarray | None:
        """Ensemble disagreement (or GP std) per target; None for models without one."""
        frame = pd.DataFrame(np.asarray(weights, dtype=np.float64), columns=list(self.domains))
        for method in ("predict_spread", "predict_std"):
            if hasattr(self.regressor, method):
                return np.asarray(getattr(self.regressor, method)(frame)).reshape(len(frame), len(self.targets))
        return None

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        joblib.dump(self, path)
        return path


def load_model(path: str | os.PathLike) -> FittedModel:
    """A model file written by `FittedModel.save` (only load files you trust: it is a pickle)."""
    try:
        model = joblib.load(path)
    except Exception as exc:  # unpickling a foreign or damaged file can raise almost anything
        raise ConfigError(path, f"cannot load model: {exc}") from None
    if not isinstance(model, FittedModel):
        raise ConfigError(path, f"not a regmix model file (found {type(model).__name__})")
    # files of earlier versions name their targets by loss column
    model.targets = tuple(as_valid_domain(t) for t in model.targets)
    model.cv = {as_valid_domain(t): scores for t, scores in model.cv.items()}
    model.extrapolation = {as_valid_domain(t): scores for t, scores in getattr(model, "extrapolation", {}).items()}
    return model


def fit(observations: Observations, models: Sequence[str] = (BEST,), targets: Sequence[str] | None = None,
        folds: int = 5, num_threads: int = 2, extrapolation: float = 0.2) -> FittedModel:
    """Score each named regressor by K-fold CV and extrapolation CV, keep the best, refit it on all rows.

    The best is the highest `selection_score` (CV and extrapolation Spearman averaged), so that the kept
    model ranks mixtures well beyond the proxies' mass too, not only among them. `folds`=1 skips both
    scores (the first model named is kept); extrapolation is skipped when `extrapolation` (the share of
    runs held out) leaves fewer than 3 runs. `targets`: valid domains (or their loss columns) to model,
    all observed ones by default.
    """
    observations = observations.select(targets or observations.targets)
    X, Y = observations.mixture_frame(), observations.loss_frame()
    rows_per_fold = len(observations) * (folds - 1) // folds if folds > 1 else len(observations)
    if "lightgbm" in models and rows_per_fold < 2 * LightGBMMixtureRegressor().min_child_samples:
        print(f"note: lightgbm keeps RegMix's published min_child_samples=20, so on {rows_per_fold} training rows "
              "its trees barely split (expect a near-constant model); the ensemble adapts it to few rows")
    extrapolate = folds > 1 and _extreme_count(len(X), extrapolation) >= MIN_EXTRAPOLATION_RUNS
    if folds > 1 and not extrapolate:
        print(f"note: {extrapolation:.0%} of {len(X)} runs is under {MIN_EXTRAPOLATION_RUNS}: no extrapolation CV")
    cv: dict[str, pd.DataFrame | None] = {}
    extrapolated: dict[str, pd.DataFrame | None] = {}
    for name in models:
        cv[name] = cross_validate(make_regressor(name, num_threads), X, Y, folds) if folds > 1 else None
        extrapolated[name] = (extrapolation_scores(make_regressor(name, num_threads), X, Y, extrapolation)
                              if extrapolate else None)
        if cv[name] is not None:
            print(f"{name}: {folds}-fold CV\n{cv[name].round(4).to_string()}")
        if extrapolated[name] is not None:
            print(f"{name}: extrapolation CV (fit on the {1 - extrapolation:.0%} of runs nearest the centre, "
                  f"scored on the {extrapolation:.0%} farthest)\n{extrapolated[name].round(4).to_string()}")
        if folds > 1:
            print(f"{name}: selection score {selection_score(cv[name], extrapolated[name]):.2f} "
                  "(mean Spearman of CV and extrapolation)")
    best = max(models, key=lambda n: selection_score(cv[n], extrapolated[n]))
    regressor = make_regressor(best, num_threads).fit(X, Y)
    return FittedModel(best, regressor, observations.domains, observations.targets, _as_dict(cv[best]),
                       _as_dict(extrapolated[best]))


def _as_dict(table: pd.DataFrame | None) -> dict[str, dict[str, float]]:
    return table.to_dict(orient="index") if table is not None else {}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m regmix.fit", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mixtures", type=Path, default=Path("data/train_mixture_1m.csv"),
                   help="mixture CSV (index, train_<domain>...)")
    p.add_argument("--losses", type=Path, default=Path("data/train_pile_loss_1m.csv"),
                   help="loss CSV (index, metric/<domain>_val_loss...)")
    p.add_argument("--model", nargs="+", default=[BEST], choices=REGRESSORS,
                   help=f"regressor(s); with several, the best by mean CV and extrapolation Spearman is kept "
                        f"(default: {BEST})")
    p.add_argument("--target", nargs="+", help="loss column(s) or valid domain(s) to model (default: all)")
    p.add_argument("--folds", type=int, default=5,
                   help="K of K-fold CV on the training rows (1: skip CV and extrapolation CV)")
    p.add_argument("--extrapolation", type=float, default=0.2,
                   help="share of runs, the farthest from the centre, held out for extrapolation CV")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="LightGBM threads (default: all cores)")
    p.add_argument("--output", type=Path, default=Path("model.joblib"), help="model file for regmix.simulate")
    return p


def main(argv: Sequence[str] | None = None) -> FittedModel:
    args = _parser().parse_args(argv)
    try:
        model = fit(read_csvs(args.mixtures, args.losses), args.model, args.target, args.folds, args.threads,
                    args.extrapolation)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    path = model.save(args.output)
    print(f"kept {model.name} ({len(model.targets)} targets, {len(model.domains)} domains) -> {path}")
    return model


if __name__ == "__main__":
    # Run through the importable module so pickled models name `regmix.fit.*`, not `__main__.*`.
    from regmix.fit import main as module_main

    module_main()
