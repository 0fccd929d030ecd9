"""The log-linear data mixing law (Ye et al. 2024) and its exact optimum (as Olmix solves it).

Per target i, L_i(p) = c_i + k_i * exp(t_i . p) over the mixture proportions p. With k_i >= 0 the law
is convex in p, so the mixture minimizing a weighted sum of targets (plus a KL pull toward a prior)
is a convex program: `minimize_law` solves it exactly instead of scoring random candidates. A guard
(L_i(p) <= limit_i, e.g. no target worse than at the natural mixture) keeps it convex: each L_i is.

On mixtures (rows sum to 1) k_i and the mean of t_i are one parameter, and t_i moves no prediction
along directions in which the training mixtures never vary. So rows are normalized to proportions and
t_i is kept to the directions the (centred) training mixtures span: unique parameters, c_i, k_i and at
most m - 1 exponents, hence at least m + 1 runs for m domains.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import least_squares, minimize
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from regmix.core.mixture import project_onto_simplex

LOSSES = ("linear", "soft_l1", "huber", "cauchy", "arctan")
_MAX_EXPONENT = 300.0  # exp(300) ~ 1e130: predictions stay finite whatever the weights
_FIT_EXPONENT = 50.0  # in standardized loss units no useful fit gets near this; caps wild trial steps
EXTRAPOLATION = float(np.log(4.0))  # predict: at most 4x the largest exp term of the training runs
_LOG_STARTS = (0.1, 0.5, 2.0)  # c0 = min(y) - this * range(y) for the log-linear starts
GUARD_TOLERANCE = 1e-9  # predicted loss a guarded target may exceed its limit by (the solver's rounding)


def _proportions(X: np.ndarray) -> np.ndarray:
    """Rows as proportions; the law is defined on the simplex (RegMix's CSVs sum to 0.996..1.003)."""
    if (X < 0).any():
        raise ValueError("mixture weights must be >= 0")
    totals = X.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise ValueError("every mixture needs a positive total weight")
    return X / totals


def varied_directions(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The runs' mean proportions and an orthonormal basis (m, r) of the directions they vary in: exponents along
    any other direction move no prediction of the runs, so a law keeps its exponents in this basis (unique fits)."""
    center = P.mean(axis=0)
    _, singular, vt = np.linalg.svd(P - center, full_matrices=False)
    return center, vt[singular > 1e-9 * max(singular[0], 1e-300)].T


def _scaled_exp(P: np.ndarray, k: np.ndarray, t: np.ndarray, ceiling: Any = _MAX_EXPONENT) -> np.ndarray:
    """k_i exp(t_i . p) (rows, targets), in log space and capped at exp(ceiling): finite for any law and any rows
    (k = 0 gives 0; a huge k never meets an underflowing exp as inf x 0)."""
    with np.errstate(divide="ignore"):
        log_k = np.log(k)
    return np.exp(np.minimum(log_k + P @ t.T, ceiling))


def _law(P: np.ndarray, c: np.ndarray, k: np.ndarray, t: np.ndarray, ceiling: Any = _MAX_EXPONENT) -> np.ndarray:
    """L (rows, targets) at proportions P (rows, m)."""
    return c + _scaled_exp(P, k, t, ceiling)


def _law_gradient(P: np.ndarray, k: np.ndarray, t: np.ndarray) -> np.ndarray:
    """dL/dp (rows, targets, m): k_i exp(t_i . p) t_i."""
    return _scaled_exp(P, k, t)[:, :, None] * t[None, :, :]


def _robust_scale(y: np.ndarray) -> float:
    """Interquartile range as a standard deviation (outlying runs must not set the units), else the std."""
    q1, q3 = np.percentile(y, [25, 75])
    return float(q3 - q1) / 1.349 or float(y.std())


class LogLinearMixingLaw(RegressorMixin, BaseEstimator):
    """L_i(p) = c_i + k_i exp(t_i . p), k_i >= 0, fit per target by robust nonlinear least squares.

    Each target is fit from `starts` points (Ye et al.'s k=1, t=-1; log-linear fits of y - c0 for c0
    below min(y); random exponents drawn with `seed`), the best is kept and refit with the robust
    `loss` scaled to its own residuals, so a few broken runs cannot bend the law.
    Fitted: `c_`, `k_` (targets,), `t_` (targets, m), in the gauge where t_i has no component outside
    the directions the training mixtures vary in (on the simplex: t_i sums to 0); `ceiling_` (targets,): `predict`
    keeps k exp(t . p) within 4x its largest value over the training runs. With few runs per domain (Olmix's
    reuse swarm: 64 runs, 22 domains) the exponents are barely determined and unseen mixtures were predicted
    at 1e36; the exact optimum (`minimize_law`) uses the law itself, convex and uncapped.
    """

    def __init__(self, starts: int = 8, seed: int = 0, loss: str = "soft_l1"):
        self.starts = starts
        self.seed = seed
        self.loss = loss

    def fit(self, X: Any, y: Any) -> LogLinearMixingLaw:
        X, y = validate_data(self, X, y, multi_output=True, y_numeric=True, dtype=np.float64)
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not (isinstance(self.starts, int) and self.starts >= 1):
            raise ValueError(f"starts must be an integer >= 1, got {self.starts!r}")
        P = _proportions(X)
        runs, m = P.shape
        if m < 2:
            raise ValueError("a mixing law needs at least 2 domains")
        if runs < m + 1:
            raise ValueError(f"the log-linear mixing law needs at least m + 1 = {m + 1} runs for {m} domains "
                             f"(c, k and {m - 1} free exponents per target), got {runs}")
        center, basis = varied_directions(P)
        D = (P - center) @ basis
        Y = y.reshape(runs, -1)
        fits = [self._fit_one(D, Y[:, j]) for j in range(Y.shape[1])]
        t = np.array([basis @ s for _, _, s in fits])
        self.c_ = np.array([c for c, _, _ in fits])
        with np.errstate(divide="ignore"):  # k = 0: a flat target
            log_k = np.log(np.array([k for _, k, _ in fits])) - t @ center
        self.k_ = np.exp(np.minimum(log_k, _MAX_EXPONENT))  # finite even for a law of wild exponents
        self.ceiling_ = np.minimum(np.log(np.maximum(self.k_, 1e-300)) + (P @ t.T).max(axis=0) + EXTRAPOLATION,
                                   _MAX_EXPONENT)
        self.t_ = t
        self.single_target_ = y.ndim == 1
        return self

    def _fit_one(self, D: np.ndarray, y: np.ndarray) -> tuple[float, float, np.ndarray]:
        """(c, k, s) with y ~ c + k exp(D s) on the centred coordinates D; the same fit whatever other targets."""
        r = D.shape[1]
        if np.ptp(y) <= 1e-12 * max(1.0, float(np.abs(y).max())):
            return float(y.mean()), 0.0, np.zeros(r)
        loc, scale = float(np.median(y)), _robust_scale(y)
        z = (y - loc) / scale

        def residuals(theta: np.ndarray) -> np.ndarray:
            return theta[0] + theta[1] * np.exp(np.minimum(D @ theta[2:], _FIT_EXPONENT)) - z

        def jacobian(theta: np.ndarray) -> np.ndarray:
            e = np.exp(np.minimum(D @ theta[2:], _FIT_EXPONENT))
            return np.column_stack([np.ones_like(e), e, (theta[1] * e)[:, None] * D])

        def solve(theta: np.ndarray, f_scale: float) -> Any:
            return least_squares(residuals, theta, jac=jacobian, bounds=(lower, np.inf), loss=self.loss,
                                 f_scale=f_scale, x_scale="jac")

        lower = np.r_[-np.inf, 0.0, np.full(r, -np.inf)]
        starts = self._starts(D, z, np.random.default_rng(self.seed))
        best = min((solve(theta, 0.1) for theta in starts), key=lambda result: result.cost)
        if self.loss != "linear":  # rescale the robust loss to the inliers' spread, then polish
            spread = 1.4826 * float(np.median(np.abs(best.fun - np.median(best.fun))))
            best = solve(best.x, max(1.5 * spread, 1e-6))
        c, k, s = best.x[0], best.x[1], best.x[2:]
        return loc + scale * c, scale * k, s

    def _starts(self, D: np.ndarray, z: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        """Ye et al.'s init (k=1, t=-1: flat on the simplex), log-linear fits of z - c0, random exponents."""
        r = D.shape[1]
        starts = [np.r_[z.mean() - 1.0, 1.0, np.zeros(r)]]
        for offset in _LOG_STARTS:
            c0 = z.min() - offset * np.ptp(z)
            w = np.log(z - c0)
            s = np.linalg.lstsq(D, w - w.mean(), rcond=None)[0]
            starts.append(np.r_[c0, np.exp(w.mean()), s])
        spread = D.std(axis=0) * np.sqrt(r)  # random exponents move the exponent by about 1 over the runs
        while len(starts) < self.starts:
            s = rng.normal(size=r) / np.maximum(spread, 1e-12)
            e = np.exp(np.minimum(D @ s, _FIT_EXPONENT))
            k = max(float(np.cov(e, z)[0, 1] / max(e.var(ddof=1), 1e-300)), 1e-3)  # least squares, k >= 0
            starts.append(np.r_[z.mean() - k * e.mean(), k, s])
        return starts[:self.starts]

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self, "t_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = _law(_proportions(X), self.c_, self.k_, self.t_, getattr(self, "ceiling_", _MAX_EXPONENT))
        return out[:, 0] if self.single_target_ else out

    def gradient(self, X: Any) -> np.ndarray:
        """dL/dp at the rows' proportions: (rows, m), or (rows, targets, m) for several targets.

        The law's gradient in its own variables; along the simplex only its part orthogonal to 1 matters.
        """
        check_is_fitted(self, "t_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        out = _law_gradient(_proportions(X), self.k_, self.t_)
        return out[:, 0] if self.single_target_ else out


def _bounds(value: Any, m: int, name: str) -> np.ndarray:
    out = np.broadcast_to(np.asarray(value, dtype=np.float64), (m,)).copy()
    if not np.isfinite(out).all() or (out < 0).any() or (out > 1).any():
        raise ValueError(f"{name} bounds must be finite and within [0, 1]")
    return out


def minimize_law(law: LogLinearMixingLaw, objective_weights: Any, lower: Any = 0.0, upper: Any = 1.0,
                 prior: Any = None, kl: float = 0.0, samples: int = 256, seed: int = 0,
                 guard: Any = None) -> np.ndarray:
    """The mixture (law's domain order) minimizing sum_i v_i L_i(p) + kl * KL(p || prior).

    Subject to lower <= p <= upper (scalars or one per domain) and sum p = 1. Convex (v >= 0, k >= 0),
    so SLSQP with analytic gradients finds the optimum; it starts from the uniform mixture, the prior
    and the best of the vertices and `samples` Dirichlet points, each projected into the bounds, and
    the best feasible point wins. `prior` defaults to uniform (then the KL term is negative entropy).
    `guard` (one limit per target, inf for none) adds L_i(p) <= guard_i, convex constraints with analytic
    Jacobians; the point of least violation is found first, so a guard no mixture within the bounds meets
    raises ValueError instead of returning an answer that breaks it.
    """
    check_is_fitted(law, "t_")
    m = law.t_.shape[1]
    v = np.asarray(objective_weights, dtype=np.float64).reshape(-1)
    if v.shape != law.c_.shape or not np.isfinite(v).all() or (v < 0).any():
        raise ValueError(f"objective weights must be {len(law.c_)} finite values >= 0 (one per target)")
    if not (np.isfinite(kl) and kl >= 0):
        raise ValueError(f"kl must be >= 0, got {kl}")
    lower, upper = _bounds(lower, m, "lower"), _bounds(upper, m, "upper")
    if (lower > upper).any() or lower.sum() > 1.0 + 1e-12 or upper.sum() < 1.0 - 1e-12:
        raise ValueError(f"no mixture fits the bounds: need lower <= upper and sum(lower) = {lower.sum():.6g} "
                         f"<= 1 <= sum(upper) = {upper.sum():.6g}")
    prior = np.full(m, 1.0 / m) if prior is None else np.asarray(prior, dtype=np.float64).reshape(-1)
    if prior.shape != (m,) or not np.isfinite(prior).all() or (prior < 0).any() or prior.sum() <= 0:
        raise ValueError(f"prior must be {m} finite weights >= 0, not all 0")
    prior = prior / prior.sum()
    if kl > 0 and ((prior == 0) & (upper > 0)).any():
        raise ValueError("with kl > 0 the prior must be > 0 on every domain the bounds allow")
    pulled = prior > 0  # domains outside the prior are fixed at 0 by their bounds
    log_prior = np.log(prior[pulled])
    weighted_k = v * law.k_

    def value(P: np.ndarray) -> np.ndarray:
        out = np.exp(np.minimum(P @ law.t_.T, _MAX_EXPONENT)) @ weighted_k
        if kl > 0:
            Q = np.maximum(P[:, pulled], 1e-300)
            out += kl * (Q * (np.log(Q) - log_prior)).sum(axis=1)
        return out

    def objective(p: np.ndarray) -> tuple[float, np.ndarray]:
        grad = (weighted_k * np.exp(np.minimum(law.t_ @ p, _MAX_EXPONENT))) @ law.t_
        if kl > 0:
            grad[pulled] += kl * (np.log(np.maximum(p[pulled], 1e-300)) - log_prior + 1.0)
        return float(value(p[None])[0]), grad

    rng = np.random.default_rng(seed)
    candidates = project_onto_simplex(np.vstack([np.eye(m), rng.dirichlet(np.ones(m), samples)]), lower, upper)
    starts = np.vstack([project_onto_simplex(np.vstack([np.full(m, 1.0 / m), prior]), lower, upper),
                        candidates[np.argmin(value(candidates))]])
    box = list(zip(lower, upper))
    constraints = [{"type": "eq", "fun": lambda p: p.sum() - 1.0, "jac": lambda p: np.ones(m)}]
    limits = _guard(guard, len(law.c_))
    if limits is not None:
        guard_constraint = _GuardConstraint(law, limits)
        starts = np.vstack([starts, guard_constraint.least_violation(np.vstack([starts, candidates]), lower, upper)])
        constraints.append({"type": "ineq", "fun": guard_constraint.slack, "jac": guard_constraint.jacobian})
    solutions = [minimize(objective, start, jac=True, method="SLSQP", bounds=box, constraints=constraints,
                          options={"ftol": 1e-12, "maxiter": 1000}).x for start in starts]
    finalists = np.vstack([starts, project_onto_simplex(np.array(solutions), lower, upper)])  # never worse than a start
    scores = value(finalists)
    if limits is not None:  # the least-violation start is feasible, so some finalist always is
        scores[guard_constraint.excess(finalists) > GUARD_TOLERANCE] = np.inf
    return finalists[np.argmin(scores)]


def _guard(guard: Any, targets: int) -> np.ndarray | None:
    """Validated per-target limits; None when there are none (no guard, or every limit inf)."""
    if guard is None:
        return None
    limits = np.asarray(guard, dtype=np.float64).reshape(-1)
    if limits.shape != (targets,) or np.isnan(limits).any() or (limits == -np.inf).any():
        raise ValueError(f"guard must be {targets} limits on the predicted loss (one per target, inf for none)")
    return limits if np.isfinite(limits).any() else None


class _GuardConstraint:
    """L_i(p) <= limit_i for the targets with a finite limit, as SLSQP's `fun(p) >= 0` with its Jacobian."""

    def __init__(self, law: LogLinearMixingLaw, limits: np.ndarray):
        kept = np.isfinite(limits)
        self.c, self.k, self.t, self.limits = law.c_[kept], law.k_[kept], law.t_[kept], limits[kept]
        self.targets = np.flatnonzero(kept)

    def slack(self, p: np.ndarray) -> np.ndarray:
        return self.limits - _law(p[None], self.c, self.k, self.t)[0]

    def jacobian(self, p: np.ndarray) -> np.ndarray:
        return -_law_gradient(p[None], self.k, self.t)[0]

    def excess(self, P: np.ndarray) -> np.ndarray:
        """How far each row's worst guarded target is above its limit (<= 0: the guard holds)."""
        return (_law(P, self.c, self.k, self.t) - self.limits).max(axis=1)

    def least_violation(self, starts: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
        """The mixture within the bounds minimizing the worst excess (a convex program in (p, s): min s,
        L_i(p) - limit_i <= s), from the best of `starts`; ValueError when even that breaks the guard."""
        m = len(lower)
        start = starts[np.argmin(self.excess(starts))]
        constraints = [{"type": "eq", "fun": lambda x: x[:m].sum() - 1.0, "jac": lambda x: np.r_[np.ones(m), 0.0]},
                       {"type": "ineq", "fun": lambda x: x[m] + self.slack(x[:m]),
                        "jac": lambda x: np.column_stack([self.jacobian(x[:m]), np.ones(len(self.limits))])}]
        result = minimize(lambda x: (x[m], np.r_[np.zeros(m), 1.0]), np.r_[start, self.excess(start[None])[0]],
                          jac=True, method="SLSQP", bounds=list(zip(lower, upper)) + [(None, None)],
                          constraints=constraints, options={"ftol": 1e-12, "maxiter": 1000})
        finalists = project_onto_simplex(np.vstack([start, result.x[:m]]), lower, upper)
        best = finalists[np.argmin(self.excess(finalists))]
        if self.excess(best[None])[0] > GUARD_TOLERANCE:
            worst = np.argmin(self.slack(best))
            raise ValueError(f"the bounds (caps) and the guard cannot both hold: the mixture within the bounds "
                             f"closest to meeting the guard still predicts target {self.targets[worst]}'s loss "
                             f"{-self.slack(best)[worst]:.4g} above its limit")
        return best
