"""Simulation: the screening fast path, top-k and bounds, objectives, and the optimal-mixture YAML."""

from __future__ import annotations

import numpy as np
import pytest

from regmix.core.mixture import Mixture
from regmix.core.observations import Observations
from regmix.core.space import usage_bounds
from regmix.regression import simulate as simulate_module
from regmix.regression.fit import FittedModel
from regmix.regression.model_file import save_model
from regmix.regression.regressors import make_regressor
from regmix.regression.simulate import objective_weights, optimal_config, simulate
from regmix.regression.surrogate import Surrogate
from regmix.search.synthesize import SynthesisSettings
from regmix.settings.run_config import load_run_config

DOMAINS = ("web", "code", "books", "math", "chat")
NATURAL = Mixture(DOMAINS, np.array([0.4, 0.3, 0.15, 0.1, 0.05]))
TARGETS = ("web", "code")


def true_losses(weights: np.ndarray) -> np.ndarray:
    """Known losses: web wants web and a little chat, code wants code and math."""
    web = 3.0 - 0.5 * np.log(weights[:, 0] + 0.01) - 0.2 * np.log(weights[:, 4] + 0.01)
    code = 3.5 - 0.5 * np.log(weights[:, 1] + 0.01) - 0.1 * np.log(weights[:, 3] + 0.01)
    return np.c_[web, code]


@pytest.fixture(scope="module")
def lightgbm_model() -> FittedModel:
    rng = np.random.default_rng(0)
    weights = rng.dirichlet(np.full(len(DOMAINS), 0.8), 200)
    observations = Observations(DOMAINS, TARGETS, tuple(range(200)), weights, true_losses(weights))
    regressor = make_regressor("lightgbm").set_params(n_estimators=200, learning_rate=0.05, num_threads=1)
    return FittedModel("lightgbm", regressor.fit(observations.mixture_frame(), observations.loss_frame()),
                       observations.domains, observations.targets)


def test_compiled_surrogate_equals_lightgbm_predict():
    rng = np.random.default_rng(1)
    weights = rng.dirichlet(np.full(len(DOMAINS), 0.5), 5000)
    weights[:100, 2] = 0.0  # exact zeros and threshold ties are where compiled trees go wrong
    surrogate = Surrogate(weights, true_losses(weights)[:, 0])
    np.testing.assert_allclose(surrogate.predict(weights), surrogate.booster.predict(weights), rtol=0, atol=1e-9)
    fresh = rng.dirichlet(np.ones(len(DOMAINS)), 2000)
    np.testing.assert_allclose(surrogate.predict(fresh), surrogate.booster.predict(fresh), rtol=0, atol=1e-9)


def test_top_k_bounds_and_screening_against_exact_scoring(lightgbm_model):
    settings = SynthesisSettings(maximum_usage=3.0)
    exact = simulate(lightgbm_model, NATURAL, {"web": 1.0}, 60_000, 32, settings, screen=1.0, progress=False)
    fast = simulate(lightgbm_model, NATURAL, {"web": 1.0}, 60_000, 32, settings, screen=0.05, progress=False)
    assert exact.scored == 60_000 and fast.scored < 0.1 * 60_000
    # the fast path scores its survivors with the model itself: exactly plain predict
    np.testing.assert_allclose(fast.top_scores, lightgbm_model.predict(fast.top_weights)[:, 0], rtol=0, atol=1e-9)
    default = simulate(lightgbm_model, NATURAL, None, 2_000, 8, settings, progress=False)
    # the default objective, every command's: the mean over the model's targets
    np.testing.assert_allclose(default.top_scores, lightgbm_model.predict(default.top_weights).mean(axis=1),
                               atol=1e-9)
    assert np.all(np.diff(exact.top_scores) >= 0) and len(exact.top_scores) == 32
    # same candidates (same seeds), and the screen keeps the exact top 32
    np.testing.assert_allclose(np.sort(fast.top_scores), np.sort(exact.top_scores), atol=1e-9)
    np.testing.assert_allclose(fast.mixture.weights, exact.mixture.weights, atol=1e-9)
    bounds = usage_bounds(NATURAL.weights, settings.maximum_usage)
    assert (exact.top_weights <= bounds + 1e-12).all() and (exact.mixture.weights <= bounds + 1e-12).all()
    assert exact.mixture.weights.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(exact.mixture.weights, exact.top_weights.mean(axis=0))
    assert exact.mixture["web"] > NATURAL["web"]  # the optimum for web loss moves weight to web


def test_same_answer_whatever_the_thread_count(lightgbm_model):
    one = simulate(lightgbm_model, NATURAL, None, 20_000, 16, threads=1, progress=False)
    two = simulate(lightgbm_model, NATURAL, None, 20_000, 16, threads=2, progress=False)
    np.testing.assert_array_equal(one.mixture.weights, two.mixture.weights)


def test_weighted_objective_and_refinement(lightgbm_model):
    weights = objective_weights(lightgbm_model, {"web": 1.0, "metric/code_val_loss": 3.0})
    np.testing.assert_allclose(weights, [0.25, 0.75])
    with pytest.raises(ValueError, match="were not fitted"):
        objective_weights(lightgbm_model, {"arxiv": 1.0})
    result = simulate(lightgbm_model, NATURAL, {"web": 0.25, "code": 0.75}, 20_000, 16, refine=20_000,
                      progress=False)
    expected = lightgbm_model.predict(result.top_weights) @ weights
    np.testing.assert_allclose(result.top_scores, expected, atol=1e-9)
    assert result.candidates == 40_000
    assert result.mixture["code"] > NATURAL["code"]


def test_yaml_and_plot_from_the_cli(lightgbm_model, tmp_path, capsys):
    save_model(lightgbm_model, tmp_path / "model.npz")
    (tmp_path / "prior.yaml").write_text(
        "train:\n" + "".join(f"  train_{d}: {w}\n" for d, w in NATURAL.to_dict().items()))
    out = tmp_path / "optimal_mixture.yaml"
    simulate_module.main(["--model", str(tmp_path / "model.npz"), "--prior", str(tmp_path / "prior.yaml"),
                          "--target", "web=1", "code=1", "--num-candidates", "20000", "--top-k", "16",
                          "--output", str(out), "--quiet"])
    config = load_run_config(out)
    assert config.train.domains == DOMAINS and config.valid == ("web", "code")
    assert config.training.model_name == "tinyllama_1_1b"
    assert config.extra["objective"] == {"metric/web_val_loss": 0.5, "metric/code_val_loss": 0.5}
    assert config.extra["predicted_loss"] > 0 and config.extra["top_k"] == 16
    assert out.with_suffix(".png").stat().st_size > 0
    assert "predicted loss" in capsys.readouterr().out


def test_optimal_config_keeps_the_spread(lightgbm_model):
    result = simulate(lightgbm_model, NATURAL, None, 5_000, 8, screen=1.0, progress=False)
    result.spread = 0.01
    config = optimal_config(result, lightgbm_model, {"web": 1.0})
    assert config.extra["predicted_loss_spread"] == 0.01 and config.valid == ("web",)


class ConfidentNearA:
    """Loss falls toward domain a, but the two members disagree more and more there (spread 2 a^2)."""

    def member_predictions(self, frame):
        a = frame["a"].to_numpy()
        return np.stack([3.0 - 0.5 * a - 2 * a ** 2, 3.0 - 0.5 * a + 2 * a ** 2])

    def predict(self, frame):
        return self.member_predictions(frame).mean(axis=0)

    def predict_spread(self, frame):
        return self.member_predictions(frame).std(axis=0)


def test_pessimistic_choice_trades_predicted_gain_for_certainty():
    model = FittedModel("ensemble", ConfidentNearA(), ("a", "b"), ("x",))
    natural = Mixture.from_dict({"a": 0.5, "b": 0.5})
    settings = SynthesisSettings(maximum_usage=100.0)
    plain = simulate(model, natural, None, 20_000, 32, settings, screen=1.0, progress=False)
    careful = simulate(model, natural, None, 20_000, 32, settings, screen=1.0, progress=False, uncertainty=1.0)
    # prediction + 1 x spread = 3 - 0.5 a + 2 a^2: lowest at a = 0.125, not at a = 1
    assert plain.mixture["a"] > 0.9 and abs(careful.mixture["a"] - 0.125) < 0.1
    assert careful.predicted_loss > plain.predicted_loss and careful.spread < plain.spread
    with pytest.raises(ValueError, match="uncertainty must be >= 0"):
        simulate(model, natural, None, 100, 8, settings, progress=False, uncertainty=-1.0)


def test_fit_then_simulate_with_their_defaults_optimize_the_mean_over_every_target(tmp_path, capsys):
    from regmix.regression import fit as fit_module

    rng = np.random.default_rng(1)
    weights = rng.dirichlet(np.full(len(DOMAINS), 0.8), 60)
    Observations(DOMAINS, TARGETS, tuple(range(60)), weights, true_losses(weights)).save(
        tmp_path / "mixtures.csv", tmp_path / "losses.csv")
    fit_module.main(["--mixtures", str(tmp_path / "mixtures.csv"), "--losses", str(tmp_path / "losses.csv"),
                     "--model", "lightgbm", "--folds", "1", "--output", str(tmp_path / "model.npz")])
    (tmp_path / "prior.yaml").write_text(
        "train:\n" + "".join(f"  train_{d}: {w}\n" for d, w in NATURAL.to_dict().items()))
    simulate_module.main(["--model", str(tmp_path / "model.npz"), "--prior", str(tmp_path / "prior.yaml"),
                          "--num-candidates", "2000", "--top-k", "8", "--output", str(tmp_path / "opt.yaml"),
                          "--quiet"])
    assert "objective: mean validation loss of web, code" in capsys.readouterr().out
    assert load_run_config(tmp_path / "opt.yaml").extra["objective"] == {"metric/web_val_loss": 0.5,
                                                                         "metric/code_val_loss": 0.5}
