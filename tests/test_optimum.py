"""The large run's repetition caps and the exact optimum within them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linprog

from regmix.core.mixture import Mixture
from regmix.regression.fit import FittedModel
from regmix.regression.mixing_law import LogLinearMixingLaw, minimize_law
from regmix.regression.optimal_mixture import large_run_settings
from regmix.regression.optimum import epochs, exact_optimum, large_run_tokens, repetition_caps
from regmix.regression.regressors import make_regressor
from regmix.regression.simulate import exact_simulation, simulate
from regmix.search.synthesize import SynthesisSettings

DOMAINS = ("web", "code", "books", "math")
TOKENS = {"web": 10_000_000, "code": 4_000_000, "books": 1_000_000, "math": 100_000}


def law_model() -> FittedModel:
    """A log-linear law with known parameters, fitted on its own exact values (so it is that law)."""
    rng = np.random.default_rng(0)
    X = rng.dirichlet(np.ones(4), 60)
    t = np.array([[-2.0, 0.5, 0.3, -1.0], [0.4, -2.5, 0.2, -1.5]])
    y = np.column_stack([2.0 + 1.0 * np.exp(X @ t[0]), 2.5 + 0.8 * np.exp(X @ t[1])])
    return FittedModel("loglinear", LogLinearMixingLaw().fit(pd.DataFrame(X, columns=DOMAINS), y), DOMAINS,
                       ("web", "code"))


def linear_model() -> FittedModel:
    """Loss = 3 - w . slope exactly: its optimum on a capped simplex fills the best domains up to their caps."""
    rng = np.random.default_rng(1)
    X = rng.dirichlet(np.ones(4), 80)
    slope = np.array([0.5, 1.0, 2.0, 3.0])
    return FittedModel("linear", make_regressor("linear").fit(pd.DataFrame(X, columns=DOMAINS), 3.0 - X @ slope),
                       DOMAINS, ("web",))


def test_caps_are_tokens_times_repetitions_over_the_large_run():
    caps = repetition_caps(TOKENS, DOMAINS, target_tokens=20_000_000, repetitions=4)
    np.testing.assert_allclose(caps.caps, [1.0, 0.8, 0.2, 0.02])
    assert caps.limit == 4 and caps.binding(np.array([0.0, 0.78, 0.2, 0.02])) == ["books", "math"]
    assert epochs({"web": 0.5, "math": 0.02}, TOKENS, 20_000_000) == pytest.approx({"web": 1.0, "math": 4.0})
    assert large_run_tokens(large_run_settings()) == 25_000 * 512 * 2048


def test_a_corpus_too_small_for_the_run_gets_r_times_its_average_epochs():
    caps = repetition_caps(TOKENS, DOMAINS, target_tokens=1_000_000_000, repetitions=4)
    average = 1_000_000_000 / sum(TOKENS.values())
    shares = np.array([TOKENS[d] for d in DOMAINS]) / sum(TOKENS.values())
    assert caps.limit == pytest.approx(4 * average)
    np.testing.assert_allclose(caps.caps, np.minimum(4 * shares, 1.0))  # 4 x the natural share
    with pytest.raises(ValueError, match="must be > 0"):
        repetition_caps(TOKENS, DOMAINS, 1000, repetitions=0)


def test_exact_optimum_of_the_law_is_its_convex_minimum_within_the_caps():
    model = law_model()
    caps = repetition_caps(TOKENS, DOMAINS, 20_000_000).caps
    target = np.array([0.5, 0.5])
    weights = exact_optimum(model, target, caps, np.full(4, 0.25))
    assert weights.sum() == pytest.approx(1.0) and (weights <= caps + 1e-9).all()
    np.testing.assert_allclose(weights, minimize_law(model.regressor, target, 0.0, caps), atol=1e-9)
    free = exact_optimum(model, target, np.ones(4), np.full(4, 0.25))
    assert free[3] > caps[3]  # the cap on math binds: without it the optimum wants more
    value = lambda W: model.predict(W) @ target  # noqa: E731
    samples = np.random.default_rng(2).dirichlet(np.ones(4), 100_000)
    feasible = samples[(samples <= caps).all(axis=1)]
    assert value(weights[None])[0] <= value(feasible).min() + 1e-9


def test_exact_optimum_of_a_black_box_model_fills_the_best_domains_up_to_their_caps():
    model = linear_model()
    caps = np.array([1.0, 0.5, 0.3, 0.1])
    weights = exact_optimum(model, np.ones(1), caps, np.full(4, 0.25))
    np.testing.assert_allclose(weights, [0.1, 0.5, 0.3, 0.1], atol=2e-3)  # math, books, code full; web the rest
    pulled = exact_optimum(model, np.ones(1), caps, np.full(4, 0.25), kl=5.0)
    assert np.abs(pulled - 0.25).sum() < np.abs(weights - 0.25).sum()  # the KL term pulls toward the prior


def two_linear_targets() -> FittedModel:
    """web = 3 - w . (0.5, 1, 2, 3) wants math; code = 3 - w . (3, 0.5, 0.2, 0.1) wants the web domain."""
    X = np.random.default_rng(1).dirichlet(np.ones(4), 80)
    slopes = np.array([[0.5, 1.0, 2.0, 3.0], [3.0, 0.5, 0.2, 0.1]])
    return FittedModel("linear", make_regressor("linear").fit(pd.DataFrame(X, columns=DOMAINS), 3.0 - X @ slopes.T),
                       DOMAINS, ("web", "code"))


NATURAL = np.array([0.4, 0.3, 0.2, 0.1])


def test_the_guard_keeps_every_target_near_natural_on_the_law():
    model = law_model()
    caps = repetition_caps(TOKENS, DOMAINS, 20_000_000).caps
    at_natural = model.predict(NATURAL[None])[0]
    free = exact_optimum(model, np.array([1.0, 0.0]), caps, NATURAL)
    assert model.predict(free[None])[0, 1] > at_natural[1] + 0.05  # the code target pays for the web target
    for margin in (0.0, 0.05):
        guarded = exact_optimum(model, np.array([1.0, 0.0]), caps, NATURAL, guard_margin=margin)
        assert (guarded <= caps + 1e-9).all() and guarded.sum() == pytest.approx(1.0)
        assert (model.predict(guarded[None])[0] <= at_natural + margin + 1e-9).all()
        assert np.abs(guarded - free).max() > 0.05  # the guard binds, so the answer moves
        assert model.predict(guarded[None])[0, 0] < at_natural[0]  # and still improves on natural


def test_the_black_box_search_keeps_the_guard():
    model, caps, margin = two_linear_targets(), np.array([1.0, 0.5, 0.3, 0.1]), 0.1
    at_natural = model.predict(NATURAL[None])[0]
    guarded = exact_optimum(model, np.array([1.0, 0.0]), caps, NATURAL, guard_margin=margin)
    assert (model.predict(guarded[None])[0] <= at_natural + margin + 1e-9).all()
    # linear losses (their values at the vertices): the guarded optimum is a linear program's
    vertices = model.predict(np.eye(4))
    program = linprog(vertices[:, 0], A_ub=[vertices[:, 1]], b_ub=[at_natural[1] + margin], A_eq=[np.ones(4)],
                      b_eq=[1.0], bounds=list(zip(np.zeros(4), caps)))
    assert model.predict(guarded[None])[0, 0] <= program.fun + 1e-4
    free = exact_optimum(model, np.array([1.0, 0.0]), caps, NATURAL)
    assert model.predict(free[None])[0, 1] > at_natural[1] + margin  # without the guard it is broken


def test_caps_the_guard_cannot_live_with_are_refused():
    caps = np.array([1.0, 0.05, 0.05, 0.01])  # below natural on the domains the code target needs
    for model in (law_model(), two_linear_targets()):
        with pytest.raises(ValueError, match="the bounds \\(caps\\) and the guard cannot both hold"):
            exact_optimum(model, np.array([1.0, 0.0]), caps, NATURAL, guard_margin=0.0)
        assert exact_optimum(model, np.array([1.0, 0.0]), caps, NATURAL).sum() == pytest.approx(1.0)


def test_simulation_candidates_and_the_exact_answer_respect_the_caps():
    model = law_model()
    natural = Mixture(DOMAINS, np.array([0.4, 0.3, 0.2, 0.1]))
    caps = repetition_caps(TOKENS, DOMAINS, 20_000_000)
    settings = SynthesisSettings(maximum_usage=15)
    result = simulate(model, natural, {"web": 1.0, "code": 1.0}, 20_000, 32, settings, progress=False,
                      caps=caps.caps)
    assert (result.top_weights <= caps.caps + 1e-9).all() and (result.mixture.weights <= caps.caps + 1e-9).all()
    exact = exact_simulation(result, model, {"web": 1.0, "code": 1.0}, natural, settings, caps.caps)
    assert (exact.mixture.weights <= caps.caps + 1e-9).all()
    assert exact.predicted_loss <= result.predicted_loss + 1e-9
    guarded = exact_simulation(result, model, {"web": 1.0}, natural, settings, caps.caps, guard_margin=0.0)
    assert (model.predict(guarded.mixture.weights[None]) <= model.predict(natural.weights[None]) + 1e-9).all()


def test_the_large_runs_tokens_set_its_steps_and_scale_its_warmup():
    large = large_run_settings("tinyllama_1M", 1e9)
    assert large.max_step == round(1e9 / (512 * 2048)) == 954
    assert large.warmup_steps == round(2000 * 954 / 25_000) and large.eval_step_interval <= 954
    assert large.model_name == "tinyllama_1M" and large_run_tokens(large) == 954 * 512 * 2048
