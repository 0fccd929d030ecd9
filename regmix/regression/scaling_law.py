"""A law over mixture and scale, to rank mixtures for the large run from proxies of several sizes.

Per target, over proportions p, non-embedding parameters N and training tokens D:

    L(p, N, D) = E + exp(a0 + a . p) (N / N0)^-alpha + exp(b0 + b . p) (D / D0)^-beta

(N0, D0: the geometric means of the training runs' scales, so the coefficients stay O(1)). At one mixture it is
Chinchilla's L = E + A / N^alpha + B / D^beta with A and B set by the mixture; at one scale it is a sum of two
log-linear mixing laws (Ye et al. 2024's form). Why this form: the ranking of mixtures must be able to change with
scale, or a scale-aware law can never disagree with the proxies. Here it does, through the two terms: the model-
limited term (a) shrinks as N grows, the data-limited one (b) as D grows, so a mixture that helps a small model
(low a . p) can lose to one whose data term is lower once N is large. This is the capacity-aware idea of
"Explaining Data Mixing Scaling Laws" (2026; per-domain capacity allocation, A_i (D h_i)^-a_i) reduced to one
model-limited and one data-limited term, so it fits from two proxy scales and a few dozen runs.

Against the authors' nested pipeline (yegcjs/mixinglaws, pipeline/run.sh: steplaw.py, sizelaw.py, mixlaw.py),
read for this: they train one fixed set of mixtures at every size (70M-410M), fit per size, mixture and domain a
power law in steps, then per mixture and domain a power law in size with one exponent shared by all (LBFGS on a
Huber loss from grid starts), predict each mixture's loss at the target size and steps, and only then fit the
mixing law on those predictions. Deviations, and why: one joint fit instead of three nested ones (the nesting
needs the same mixtures at every scale and 3+ sizes; a regmix study has many mixtures at the small scale and a
few at the larger); the mixture enters the scale terms' coefficients directly (their mixing law is fit after
the extrapolation, ours is what extrapolates); exponents per target rather than one shared across domains and
mixtures; scipy's least squares with a soft-L1 loss instead of LBFGS on Huber.

E is kept >= 0 when every observed value is (a loss: its irreducible part cannot be negative), so no scale drives
the law's loss below 0.

Identifiability: alpha needs runs at two or more N, beta at two or more D (evaluations at intermediate token
counts give those). An exponent is pulled toward `prior_exponent` (0.3, near Chinchilla's 0.34 / 0.28) by a
small penalty that only decides it where the runs cannot; its term then acts as a mixture-dependent offset.
Inputs: the mixture's domain columns followed by the two scale columns (`regmix.core.schema.SCALE_COLUMNS`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import least_squares
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from regmix.core.schema import SCALE_COLUMNS
from regmix.regression.mixing_law import varied_directions

SCALES = len(SCALE_COLUMNS)  # trailing input columns: parameters, tokens
_EXPONENT_CAP = 50.0
PARAMETERS = ("E_", "a0_", "a_", "alpha_", "b0_", "b_", "beta_", "scale_ref_")


class ScalingMixingLaw(RegressorMixin, BaseEstimator):
    """The law of the module docstring, one per target, by robust least squares from a few starts."""

    def __init__(self, prior_exponent: float = 0.3, exponent_penalty: float = 0.1, loss: str = "soft_l1"):
        self.prior_exponent = prior_exponent
        self.exponent_penalty = exponent_penalty
        self.loss = loss

    def fit(self, X: Any, y: Any) -> ScalingMixingLaw:
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        names = list(getattr(self, "feature_names_in_", []))
        if names and names[-SCALES:] != list(SCALE_COLUMNS):  # two domains would silently be read as the scale
            raise ValueError(f"the scaling law's last columns must be {list(SCALE_COLUMNS)}, got {names[-SCALES:]}")
        P, logs = self._split(X)
        if P.shape[1] < 2:
            raise ValueError("a mixing law needs at least 2 domains (and the params and tokens columns)")
        self.scale_ref_ = logs.mean(axis=0)
        center, basis = varied_directions(P)
        D = (P - center) @ basis
        S = logs - self.scale_ref_
        Y = y.reshape(len(y), -1)
        fits = [self._fit_one(D, S, Y[:, j]) for j in range(Y.shape[1])]
        self.E_ = np.array([f["E"] for f in fits])
        self.alpha_ = np.array([f["alpha"] for f in fits])
        self.beta_ = np.array([f["beta"] for f in fits])
        self.a_ = np.array([basis @ f["a"] for f in fits])
        self.b_ = np.array([basis @ f["b"] for f in fits])
        self.a0_ = np.array([f["a0"] for f in fits]) - self.a_ @ center
        self.b0_ = np.array([f["b0"] for f in fits]) - self.b_ @ center
        self.single_target_ = y.ndim == 1
        return self

    def _split(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Proportions and log scales of the rows (both scale columns must be > 0)."""
        if X.shape[1] < SCALES + 1:
            raise ValueError("the scaling law takes the domain weights followed by the params and tokens columns")
        W, scales = X[:, :-SCALES], X[:, -SCALES:]
        if (W < 0).any() or (W.sum(axis=1) <= 0).any():
            raise ValueError("mixture weights must be >= 0 with a positive total")
        if not (scales > 0).all():
            raise ValueError("params and tokens must be > 0 (the scaling law needs every run's scale)")
        return W / W.sum(axis=1, keepdims=True), np.log(scales)

    def _fit_one(self, D: np.ndarray, S: np.ndarray, y: np.ndarray) -> dict[str, Any]:
        loc, unit = float(np.median(y)), float(y.std()) or 1.0
        z = (y - loc) / unit
        r = D.shape[1]
        penalty = np.sqrt(self.exponent_penalty)

        def unpack(theta: np.ndarray) -> tuple:
            return theta[0], theta[1], theta[2:2 + r], theta[2 + r], theta[3 + r], theta[4 + r:4 + 2 * r], theta[-1]

        def terms(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            _, a0, a, alpha, b0, b, beta = unpack(theta)
            g1 = np.exp(np.minimum(a0 + D @ a - alpha * S[:, 0], _EXPONENT_CAP))
            g2 = np.exp(np.minimum(b0 + D @ b - beta * S[:, 1], _EXPONENT_CAP))
            return g1, g2

        def residuals(theta: np.ndarray) -> np.ndarray:
            g1, g2 = terms(theta)
            pull = penalty * (np.array([theta[2 + r], theta[-1]]) - self.prior_exponent)
            return np.r_[theta[0] + g1 + g2 - z, pull]

        def jacobian(theta: np.ndarray) -> np.ndarray:
            g1, g2 = terms(theta)
            rows = np.column_stack([np.ones_like(g1), g1, g1[:, None] * D, -g1 * S[:, 0],
                                    g2, g2[:, None] * D, -g2 * S[:, 1]])
            pull = np.zeros((2, rows.shape[1]))
            pull[0, 2 + r], pull[1, -1] = penalty, penalty
            return np.vstack([rows, pull])

        # a loss (every y >= 0) has an irreducible part E >= 0: unbounded, E can sink far below every run where the
        # runs barely fix it, and the law then predicts negative losses for a large run
        least_E = -loc / unit if (y >= 0).all() else -np.inf
        floor = max(z.min() - 0.5 * np.ptp(z) - 0.1, least_E)
        level = np.log(max(float(np.mean(z - floor)) / 2, 1e-3))
        s = np.linalg.lstsq(D, np.log(np.maximum(z - floor, 1e-6)) - np.log(np.maximum(z - floor, 1e-6)).mean(),
                            rcond=None)[0]
        p0 = self.prior_exponent
        starts = [np.r_[floor, level, np.zeros(r), p0, level, np.zeros(r), p0],
                  np.r_[floor, level, s, p0, level, s, p0],
                  np.r_[floor, level, s, p0, level, np.zeros(r), p0],
                  np.r_[floor, level, np.zeros(r), p0, level, s, p0]]
        lower = np.r_[least_E, -np.inf, np.full(r, -np.inf), 0.0, -np.inf, np.full(r, -np.inf), 0.0]
        upper = np.r_[np.inf, np.inf, np.full(r, np.inf), 2.0, np.inf, np.full(r, np.inf), 2.0]
        best = min((least_squares(residuals, theta, jac=jacobian, bounds=(lower, upper), loss=self.loss,
                                  f_scale=0.5, x_scale="jac") for theta in starts), key=lambda fit: fit.cost)
        E, a0, a, alpha, b0, b, beta = unpack(best.x)
        log_unit = np.log(unit)  # unit x exp(u) = exp(u + log unit): the coefficients in the target's own units
        E = max(loc + unit * E, 0.0) if np.isfinite(least_E) else loc + unit * E  # the bound, not a rounding below it
        return {"E": E, "a0": a0 + log_unit, "a": a, "alpha": alpha, "b0": b0 + log_unit, "b": b,
                "beta": beta}

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "E_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        P, logs = self._split(X)
        S = logs - self.scale_ref_
        model = np.exp(np.minimum(self.a0_ + P @ self.a_.T - S[:, :1] * self.alpha_, _EXPONENT_CAP))
        data = np.exp(np.minimum(self.b0_ + P @ self.b_.T - S[:, 1:] * self.beta_, _EXPONENT_CAP))
        out = self.E_ + model + data
        return out[:, 0] if self.single_target_ else out
