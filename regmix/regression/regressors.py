"""The regressor zoo: mixture weights -> validation loss per target, each a scikit-learn estimator.

By name (`make_regressor`): the published LightGBM, `lightgbm_es` (LightGBM stopped early on an inner split of
the training runs, as RegMix's notebook stops it, but never on the runs it is scored on), the linear baseline,
a Gaussian process on log weights, Ye et al.'s log-linear mixing law (`regmix.regression.mixing_law`),
`ensemble` (GP + LightGBM averaged, their disagreement as the spread), which wins on cross-validation, the
hybrids `law_gp` / `law_lightgbm` (the law plus a GP or LightGBM on what it leaves), `saturating`, a law of
diminishing returns in each domain's share, and the scale-aware `scaling` / `scaling_lightgbm`, whose inputs are the
mixture and the run's parameters and tokens (`regmix.regression.scaling_law`). Every regressor fits one model per
target column. Choosing among them is `regmix.regression.fit`'s job.
"""

from __future__ import annotations

import copy
import warnings
from typing import Any, Sequence

import lightgbm as lgb
import numpy as np
from scipy.optimize import least_squares, nnls
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, WhiteKernel
from sklearn.linear_model import LinearRegression
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from regmix.regression.mixing_law import LogLinearMixingLaw
from regmix.regression.scaling_law import ScalingMixingLaw

REGRESSORS = ("lightgbm", "lightgbm_es", "linear", "gp", "loglinear", "ensemble", "law_gp", "law_lightgbm",
              "saturating", "scaling", "scaling_lightgbm")
SCALE_AWARE = ("scaling", "scaling_lightgbm")  # inputs: the mixture, then the run's params and tokens
BEST = "ensemble"
MIN_RUNS = 4
LAWS = ("loglinear", "law_gp", "law_lightgbm")


def minimum_runs(name: str, domains: int) -> int:
    """Runs a regressor needs to be fit at all: a log-linear law m + 1 (c, k and m - 1 free exponents per target),
    the saturating law 2m + 1 (E and a scale and an exponent per domain), the rest MIN_RUNS."""
    if name == "saturating":
        return max(MIN_RUNS, 2 * domains + 1)
    if name in SCALE_AWARE:  # E, two levels, two exponents and 2 (m - 1) mixture exponents
        return max(MIN_RUNS, 2 * domains + 3)
    return max(MIN_RUNS, domains + 1) if name in LAWS else MIN_RUNS


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
    """Gradient-boosted trees; the defaults are RegMix's published hyperparameters (1000 rounds, lr 0.01).

    `num_threads` is for prediction (millions of candidates); training runs on one thread.
    `max_child_fraction` caps min_child_samples at that share of the rows: with a few dozen proxies the
    published 20 leaves trees with one split or none (a constant model); at RegMix's 512 it changes nothing.

    `early_stopping_rounds` > 0 stops as RegMix's notebook does (patience 3 on l1 and l2, whichever stalls
    first), on a seeded inner split of `validation_fraction` of the training rows. Deviations, stated: the
    notebook stops on its test set, the runs it then reports Spearman on (optimistic; we must not); and the
    booster is then refit on every row for the rounds found, so no run is left out of the model.
    """

    def __init__(self, n_estimators: int = 1000, learning_rate: float = 0.01, num_leaves: int = 31,
                 min_child_samples: int = 20, subsample: float = 1.0, colsample_bytree: float = 1.0,
                 seed: int = 42, num_threads: int = 2, max_child_fraction: float = 1.0,
                 early_stopping_rounds: int = 0, validation_fraction: float = 0.2):
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_child_samples = min_child_samples
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.seed = seed
        self.num_threads = num_threads
        self.max_child_fraction = max_child_fraction
        self.early_stopping_rounds = early_stopping_rounds
        self.validation_fraction = validation_fraction

    def _params(self, rows: int) -> dict[str, Any]:
        min_child = min(self.min_child_samples, max(2, int(rows * self.max_child_fraction)))
        return {"boosting_type": "gbdt", "objective": "regression", "learning_rate": self.learning_rate,
                "num_leaves": self.num_leaves, "min_child_samples": min_child,
                "bagging_fraction": self.subsample, "bagging_freq": int(self.subsample < 1.0),
                "feature_fraction": self.colsample_bytree, "seed": self.seed,
                # a few hundred rows: threads only add synchronisation (and stall on a busy machine)
                "num_threads": 1, "force_col_wise": True, "verbose": -1}

    def _rounds(self, X: np.ndarray, y: np.ndarray) -> int:
        """Boosting rounds: all of them, or where the inner split's l1 or l2 stopped improving."""
        held = int(round(len(X) * self.validation_fraction))
        if self.early_stopping_rounds <= 0 or held < 2 or len(X) - held < 2:
            return self.n_estimators
        order = np.random.default_rng(self.seed).permutation(len(X))
        inner, stop = order[held:], order[:held]
        params = {**self._params(len(inner)), "metric": ["l1", "l2"]}
        booster = lgb.train(params, lgb.Dataset(X[inner], y[inner]), num_boost_round=self.n_estimators,
                            valid_sets=[lgb.Dataset(X[stop], y[stop])],
                            callbacks=[lgb.early_stopping(self.early_stopping_rounds, verbose=False)])
        return max(booster.best_iteration, 1)

    def _fit_one(self, X: np.ndarray, y: np.ndarray) -> lgb.Booster:
        return lgb.train(self._params(len(X)), lgb.Dataset(X, y), num_boost_round=self._rounds(X, y))

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


class SaturatingMixingLaw(_PerTarget):
    """Diminishing returns in each domain: L(p) = E + sum_j a_j ((p_j + eps)^(-b_j) - 1) / b_j, a_j >= 0, 0 < b_j <= 3.

    Each domain's share lowers the loss less the more of it there is (a power law in the share, as BiMix and
    ADO fit per domain; b -> 0 is -a log(p + eps)); a domain that does not help gets a = 0, and on the simplex
    its share still costs the others'. Convex, bounded at p_j = 0 by eps, so unlike the log-linear law it cannot
    run away outside the runs. It needs no target-domain pairing, so it fits downstream metrics too. Fit on
    proportions, standardized targets, by robust least squares from three non-negative least-squares starts
    (b = 0.1, 0.5, 1 for every domain). `eps` sets where returns start to diminish (1e-3: from 0.1% of the mix).
    """

    def __init__(self, eps: float = 1e-3, loss: str = "soft_l1"):
        self.eps = eps
        self.loss = loss

    def _terms(self, P: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The per-domain terms ((p + eps)^-b - 1) / b and their derivative in b, both (rows, m)."""
        u = np.log(P + self.eps)
        power = np.exp(-b * u)
        terms = np.expm1(-b * u) / b
        return terms, (-u * power * b - np.expm1(-b * u)) / b ** 2

    def _fit_one(self, X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        if not 0.0 < self.eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        P = X / np.maximum(X.sum(axis=1, keepdims=True), 1e-300)
        m = P.shape[1]
        loc, scale = float(np.median(y)), float(y.std()) or 1.0
        z = (y - loc) / scale

        def residuals(theta: np.ndarray) -> np.ndarray:
            return theta[0] + self._terms(P, theta[1 + m:])[0] @ theta[1:1 + m] - z

        def jacobian(theta: np.ndarray) -> np.ndarray:
            terms, d_terms = self._terms(P, theta[1 + m:])
            return np.column_stack([np.ones(len(P)), terms, d_terms * theta[1:1 + m]])

        starts = []
        for b0 in (0.1, 0.5, 1.0):
            terms = self._terms(P, np.full(m, b0))[0]
            coef = nnls(np.column_stack([np.ones(len(P)), -np.ones(len(P)), terms]), z)[0]
            starts.append(np.r_[coef[0] - coef[1], coef[2:], np.full(m, b0)])
        lower, upper = np.r_[-np.inf, np.zeros(m), np.full(m, 1e-3)], np.r_[np.inf, np.full(m, np.inf), np.full(m, 3.0)]
        best = min((least_squares(residuals, theta, jac=jacobian, bounds=(lower, upper), loss=self.loss,
                                  f_scale=0.5, x_scale="jac") for theta in starts), key=lambda r: r.cost)
        return {"E": loc + scale * best.x[0], "a": scale * best.x[1:1 + m], "b": best.x[1 + m:]}

    def _predict_one(self, model: dict[str, Any], X: np.ndarray) -> np.ndarray:
        P = X / np.maximum(X.sum(axis=1, keepdims=True), 1e-300)
        return model["E"] + self._terms(P, model["b"])[0] @ model["a"]


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


def select_targets(regressor: Any, columns: Sequence[int]) -> Any:
    """A copy of a fitted zoo regressor that predicts only these target columns (as a multi-target model).

    Why: a search on an objective of one target need not evaluate the other targets' models (13 boosters of
    1000 trees on RegMix's data: 13x the prediction time).
    """
    columns = list(columns)
    out = copy.copy(regressor)
    if isinstance(regressor, _PerTarget):
        out.models_ = [regressor.models_[j] for j in columns]
    elif isinstance(regressor, LogLinearMixingLaw):
        out.c_, out.k_, out.t_ = regressor.c_[columns], regressor.k_[columns], regressor.t_[columns]
        if hasattr(regressor, "ceiling_"):
            out.ceiling_ = regressor.ceiling_[columns]
    elif isinstance(regressor, ScalingMixingLaw):
        for name in ("E_", "a0_", "a_", "alpha_", "b0_", "b_", "beta_"):
            setattr(out, name, getattr(regressor, name)[columns])
    elif isinstance(regressor, EnsembleMixtureRegressor):
        out.fitted_ = [(name, select_targets(m, columns)) for name, m in regressor.fitted_]
    elif isinstance(regressor, LawResidualMixtureRegressor):
        out.law_, out.residual_ = select_targets(regressor.law_, columns), select_targets(regressor.residual_, columns)
    else:
        raise TypeError(f"cannot select targets of {type(regressor).__name__}")
    if hasattr(out, "single_target_"):
        out.single_target_ = False
    return out


def _small_data_lightgbm(num_threads: int) -> LightGBMMixtureRegressor:
    """LightGBM for a few dozen to a few hundred runs: bagged, and leaves may hold 10% of the rows."""
    return LightGBMMixtureRegressor(subsample=0.8, colsample_bytree=0.7, num_threads=num_threads,
                                    max_child_fraction=0.1)


def make_regressor(name: str, num_threads: int = 2) -> Any:
    """A fresh regressor of the zoo by name: lightgbm (published), lightgbm_es (stopped early on an inner split),
    linear, gp, loglinear, ensemble (best by CV),
    law_gp and law_lightgbm (the log-linear law plus a GP or small-data LightGBM on its residuals), saturating,
    and the scale-aware scaling (regmix.regression.scaling_law) and scaling_lightgbm (it plus LightGBM on its
    residuals, which sees the scale columns too)."""
    if name == "lightgbm":
        return LightGBMMixtureRegressor(num_threads=num_threads)
    if name == "lightgbm_es":
        return LightGBMMixtureRegressor(num_threads=num_threads, early_stopping_rounds=3)
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
    if name == "saturating":
        return SaturatingMixingLaw()
    if name == "scaling":
        return ScalingMixingLaw()
    if name == "scaling_lightgbm":
        return LawResidualMixtureRegressor(ScalingMixingLaw(), _small_data_lightgbm(num_threads))
    raise ValueError(f"unknown regressor {name!r}; choose from {REGRESSORS}")
