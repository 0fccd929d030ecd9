"""The log-linear mixing law: recovering a known law, robustness, degenerate data, its exact optimum."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regmix.core.observations import Observations
from regmix.regression.fit import FittedModel, cross_validate, fit
from regmix.regression.mixing_law import LogLinearMixingLaw, minimize_law
from regmix.regression.model_file import load_model, save_model
from regmix.regression.regressors import make_regressor

C = np.array([2.0, 3.0])
K = np.array([0.5, 1.2])
T = {3: np.array([[-2.0, 0.5, 1.0], [1.0, -2.5, 0.0]]),
     5: np.array([[-2.0, 0.5, 1.0, 0.0, -1.0], [1.0, -2.5, 0.0, 0.7, 0.3]])}


def law_of(X: np.ndarray, t: np.ndarray) -> np.ndarray:
    return C + K * np.exp(X @ t.T)


def mixtures(rows: int, m: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(m), rows)


def fitted(m: int = 3, rows: int = 60) -> LogLinearMixingLaw:
    return LogLinearMixingLaw().fit(mixtures(rows, m, 0), law_of(mixtures(rows, m, 0), T[m]))


@pytest.mark.parametrize("m", [3, 5])
def test_recovers_a_known_law_and_predicts_new_mixtures(m):
    law = fitted(m)
    # on the simplex only t - mean(t) is identified; its mean moves into k
    t = T[m] - T[m].mean(axis=1, keepdims=True)
    np.testing.assert_allclose(law.t_, t, atol=1e-6)
    np.testing.assert_allclose(law.k_, K * np.exp(T[m].mean(axis=1)), rtol=1e-6)
    np.testing.assert_allclose(law.c_, C, atol=1e-6)
    fresh = mixtures(200, m, 1)
    np.testing.assert_allclose(law.predict(fresh), law_of(fresh, T[m]), atol=1e-8)
    one = LogLinearMixingLaw().fit(mixtures(60, m, 0), law_of(mixtures(60, m, 0), T[m])[:, 0])
    assert one.predict(fresh).shape == (200,) and one.gradient(fresh).shape == (200, m)


def test_gradient_matches_finite_differences_along_the_simplex():
    law, p, h = fitted(), np.array([[0.2, 0.5, 0.3]]), 1e-6
    for d in (np.array([1.0, -1.0, 0.0]), np.array([0.5, 0.5, -1.0])):
        numeric = (law.predict(p + h * d) - law.predict(p - h * d)) / (2 * h)
        np.testing.assert_allclose(law.gradient(p)[0] @ d, numeric[0], rtol=1e-6)


def test_a_few_broken_runs_do_not_bend_the_law():
    X = mixtures(80, 3, 2)
    y = law_of(X, T[3])[:, 0]
    y[::16] += 2.0  # 5 runs with a loss far off the law
    fresh, truth = mixtures(100, 3, 3), law_of(mixtures(100, 3, 3), T[3])[:, 0]
    robust = np.abs(LogLinearMixingLaw().fit(X, y).predict(fresh) - truth).max()
    plain = np.abs(LogLinearMixingLaw(loss="linear").fit(X, y).predict(fresh) - truth).max()
    assert robust < 2e-3 and plain > 0.1  # soft_l1 bounds each run's pull; squared error follows them


def test_degenerate_data():
    X = mixtures(10, 4, 4)
    constant = LogLinearMixingLaw().fit(X, np.full(10, 2.5)).predict(mixtures(20, 4, 5))
    np.testing.assert_array_equal(constant, 2.5)
    with pytest.raises(ValueError, match=r"at least m \+ 1 = 5 runs for 4 domains"):
        LogLinearMixingLaw().fit(X[:4], np.arange(4.0))
    with pytest.raises(ValueError, match=">= 0"):
        LogLinearMixingLaw().fit(X - 0.5, np.arange(10.0))
    with pytest.raises(ValueError, match="loss must be"):
        LogLinearMixingLaw(loss="l2").fit(X, np.arange(10.0))
    # domains no run uses: the data say nothing of their exponents, which stay 0 (no invented effect)
    used = mixtures(10, 3, 4)
    law = LogLinearMixingLaw().fit(np.c_[used, np.zeros((10, 2))], law_of(used, T[3])[:, 0])
    assert (law.t_[0, 3:] == 0).all()
    np.testing.assert_allclose(law.predict(np.c_[used, np.zeros((10, 2))]), law_of(used, T[3])[:, 0], atol=1e-6)
    assert np.isfinite(law.predict(np.eye(5))).all()


def test_minimum_matches_a_brute_force_search_and_respects_bounds():
    law, v = fitted(), np.array([0.5, 0.5])
    P = np.random.default_rng(6).dirichlet(np.ones(3), 400_000)
    values = law.predict(P) @ v
    p = minimize_law(law, v)
    assert p.sum() == pytest.approx(1.0, abs=1e-12) and (p > 0).all()
    assert law.predict(p[None]) @ v <= values.min() + 1e-12
    np.testing.assert_allclose(p, P[np.argmin(values)], atol=0.01)
    # a cap below the free optimum binds; the best is then on its face, which a fine grid covers
    assert p[1] > 0.35
    capped = minimize_law(law, v, 0.0, [1.0, 0.3, 1.0])
    assert capped.sum() == pytest.approx(1.0, abs=1e-12) and capped[1] == pytest.approx(0.3, abs=1e-12)
    face = np.c_[np.linspace(0, 0.7, 70_001), np.full(70_001, 0.3), 0.7 - np.linspace(0, 0.7, 70_001)]
    face_values = law.predict(face) @ v
    assert law.predict(capped[None]) @ v <= face_values.min() + 1e-12
    np.testing.assert_allclose(capped, face[np.argmin(face_values)], atol=1e-4)
    fixed = minimize_law(law, v, [0.0, 0.2, 0.0], [1.0, 0.2, 0.0])
    np.testing.assert_allclose(fixed, [0.8, 0.2, 0.0], atol=1e-12)


def test_kl_pulls_toward_the_prior():
    law, prior = fitted(), np.array([0.6, 0.2, 0.2])

    def divergence(p: np.ndarray) -> float:
        return float(np.sum(p * np.log(np.maximum(p, 1e-300) / prior)))

    free = minimize_law(law, [0.5, 0.5], prior=prior)
    pulled = [minimize_law(law, [0.5, 0.5], prior=prior, kl=kl) for kl in (0.05, 0.5, 50.0)]
    distances = [divergence(p) for p in (free, *pulled)]
    assert distances == sorted(distances, reverse=True) and distances[0] > distances[1]
    np.testing.assert_allclose(pulled[-1], prior, atol=0.02)


def test_guard_keeps_every_guarded_target_within_its_limit():
    law, natural = fitted(), np.array([0.4, 0.3, 0.3])
    at_natural = law.predict(natural[None])[0]
    free = minimize_law(law, [1.0, 0.0])
    assert law.predict(free[None])[0, 1] > at_natural[1] + 0.05  # alone, target 0 sacrifices target 1
    P = np.random.default_rng(8).dirichlet(np.ones(3), 400_000)
    losses = law.predict(P)
    for margin in (0.0, 0.05):
        guard = at_natural + margin
        p = minimize_law(law, [1.0, 0.0], guard=guard)
        assert p.sum() == pytest.approx(1.0, abs=1e-12)
        assert (law.predict(p[None])[0] <= guard + 1e-9).all()
        kept = (losses <= guard).all(axis=1)
        assert law.predict(p[None])[0, 0] <= losses[kept, 0].min() + 1e-12  # the best of what keeps the guard
        assert np.abs(p - free).max() > 0.05
    only_one = minimize_law(law, [1.0, 0.0], guard=[np.inf, at_natural[1]])  # inf: that target is not guarded
    np.testing.assert_allclose(only_one, minimize_law(law, [1.0, 0.0], guard=at_natural), atol=1e-6)
    np.testing.assert_allclose(minimize_law(law, [1.0, 0.0], guard=[np.inf, np.inf]), free, atol=1e-9)


def test_a_guard_no_mixture_within_the_bounds_meets_is_refused():
    law, natural = fitted(), np.array([0.4, 0.3, 0.3])
    guard = law.predict(natural[None])[0]
    with pytest.raises(ValueError, match="the bounds \\(caps\\) and the guard cannot both hold"):
        minimize_law(law, [1.0, 0.0], upper=[1.0, 0.05, 1.0], guard=guard)  # target 1 needs domain 1
    with pytest.raises(ValueError, match="guard must be 2 limits"):
        minimize_law(law, [1.0, 0.0], guard=[1.0, np.nan])


def test_bad_bounds_and_weights_are_refused():
    law = fitted()
    with pytest.raises(ValueError, match="no mixture fits the bounds"):
        minimize_law(law, [1, 1], lower=[0.5, 0.4, 0.2])
    with pytest.raises(ValueError, match="no mixture fits the bounds"):
        minimize_law(law, [1, 1], upper=0.3)
    with pytest.raises(ValueError, match="objective weights"):
        minimize_law(law, [1, -1])
    with pytest.raises(ValueError, match="prior must be > 0"):
        minimize_law(law, [1, 1], prior=[0.5, 0.5, 0.0], kl=0.1)


def test_in_the_zoo_cv_and_model_files(tmp_path):
    rng = np.random.default_rng(7)
    X = mixtures(60, 3, 7)
    losses = law_of(X, T[3]) + rng.normal(0, 0.01, (60, 2))
    observations = Observations(("web", "code", "books"), ("web", "code"), tuple(range(60)), X, losses)
    table, _ = cross_validate(make_regressor("loglinear"), observations.mixture_frame(), observations.loss_frame(), 3)
    assert (table["spearman"] > 90).all()
    model = fit(observations, ["loglinear", "linear"], folds=3)
    assert model.name == "loglinear" and model.predict_spread(X) is None
    loaded = load_model(save_model(model, tmp_path / "law.npz"))
    assert isinstance(loaded, FittedModel)
    np.testing.assert_array_equal(loaded.predict(X), model.predict(X))
    frame = pd.DataFrame(X, columns=["web", "code", "books"])
    with pytest.raises(ValueError):
        loaded.regressor.predict(frame[["code", "web", "books"]])  # another domain order is refused


def test_few_runs_over_many_sparse_domains_never_predict_inf_or_nan(tmp_path):
    """Olmix's reuse swarm shape (64 runs, 22 sparse domains, noisy): the exponents are barely determined and
    unseen mixtures were once predicted at 1e36, or NaN; predictions stay within 4x the largest training excess."""
    rng = np.random.default_rng(3)
    m, rows = 22, 51  # a 5-fold training split of 64 runs
    X = np.zeros((rows, m))
    for i in range(rows):  # each run mixes a few domains, as Olmix's swarms do
        picked = rng.choice(m, size=4, replace=False)
        X[i, picked] = rng.dirichlet(np.ones(4))
    y = 1.6 + 0.02 * rng.normal(size=rows)  # noise alone: the uncapped law predicted 1.5e44 at a vertex
    law = LogLinearMixingLaw().fit(X, y)
    unseen = np.eye(m)  # every vertex: mixtures no run was near
    predicted = law.predict(unseen)
    assert np.isfinite(predicted).all()
    excess = law.predict(X) - law.c_[0]
    assert (predicted - law.c_[0]).max() <= 4 * excess.max() * (1 + 1e-9)
    model = FittedModel("loglinear", law, tuple(f"d{j}" for j in range(m)), ("y",))
    again = load_model(save_model(model, tmp_path / "law.npz"))  # the ceiling travels with the model file
    assert np.allclose(again.regressor.predict(unseen), predicted)
