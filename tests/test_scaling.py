"""Runs that know their scale: the scaling law over mixture, parameters and tokens, model selection by
extrapolation to the largest scale, predictions at the large run's scale, and files without scale columns."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import spearmanr

from regmix.core.observations import Observations, read_csvs
from regmix.regression.fit import fit
from regmix.regression.model_file import load_model, save_model
from regmix.regression.predict import main as predict_main

DOMAINS = ("web", "code", "books", "math")
A = np.array([1.2, -0.8, 0.4, -0.6])  # the model-limited term: what helps a small model
B = np.array([-0.9, 0.9, 0.1, 0.3])  # the data-limited term: what is left once the model is large


def law(P: np.ndarray, params: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    return 2.0 + np.exp(0.3 + P @ A) * (params / 1e6) ** -0.35 + np.exp(0.1 + P @ B) * (tokens / 1e8) ** -0.3


def runs(seed: int) -> Observations:
    """Two proxy sizes, each evaluated at two token counts, on shared mixtures."""
    rng = np.random.default_rng(seed)
    P = rng.dirichlet(np.ones(len(DOMAINS)), 30)
    rows = [(P, n, d) for n in (2e5, 1e6) for d in (5e7, 1e8)]
    weights = np.vstack([p for p, _, _ in rows])
    scale = np.vstack([np.c_[np.full(len(p), n), np.full(len(p), d)] for p, n, d in rows])
    losses = law(weights, scale[:, 0], scale[:, 1]) + rng.normal(0, 0.003, len(weights))
    return Observations(DOMAINS, ("web",), tuple(range(len(weights))), weights, losses[:, None], scale)


def test_a_fit_over_two_scales_recovers_the_ranking_at_a_third(tmp_path, capsys):
    observations = runs(0)
    model = fit(observations, ["scaling", "lightgbm"], folds=3)
    assert model.name == "scaling" and model.scale == (1e6, 1e8)  # it predicts at the largest proxy scale
    said = capsys.readouterr().out
    assert "extrapolation CV: fit on the smaller scales, scored at the largest (1,000,000 params" in said
    fresh = np.random.default_rng(9).dirichlet(np.ones(len(DOMAINS)), 300)
    big = model.at_scale(1e9, 2e10)
    truth = law(fresh, np.full(300, 1e9), np.full(300, 2e10))
    assert spearmanr(truth, big.predict(fresh)[:, 0])[0] > 0.97
    proxy = law(fresh, np.full(300, 1e6), np.full(300, 1e8))  # the best a single-scale model could rank
    assert spearmanr(truth, proxy)[0] < 0.9
    assert truth[np.argmin(big.predict(fresh)[:, 0])] - truth.min() < 0.01  # regret@1 at the large scale
    loaded = load_model(save_model(big, tmp_path / "model.npz"))
    assert loaded.scale == (1e9, 2e10)
    np.testing.assert_allclose(loaded.predict(fresh), big.predict(fresh), rtol=1e-12)


def test_scale_columns_round_trip_and_files_without_them_still_fit(tmp_path):
    observations = runs(1)
    observations.save(tmp_path / "m.csv", tmp_path / "l.csv")
    assert (tmp_path / "m.csv").read_text().splitlines()[0].endswith(",params,tokens")
    read = read_csvs(tmp_path / "m.csv", tmp_path / "l.csv")
    np.testing.assert_array_equal(read.scale, observations.scale)
    plain = Observations(DOMAINS, ("web",), observations.index, observations.mixtures, observations.losses)
    plain.save(tmp_path / "m0.csv", tmp_path / "l0.csv")  # RegMix's layout: no scale columns
    assert read_csvs(tmp_path / "m0.csv", tmp_path / "l0.csv").scale is None
    assert fit(read_csvs(tmp_path / "m0.csv", tmp_path / "l0.csv"), ["linear"], folds=3).scale is None
    with pytest.raises(ValueError, match="scaling need each run's scale: params and tokens columns"):
        fit(plain, ["scaling"], folds=3)
    with pytest.raises(ValueError, match="predicts at its proxies' scale only"):
        fit(plain, ["linear"], folds=1).at_scale(1e9, 1e10)


def test_single_scale_regressors_learn_from_one_scale_and_are_scored_at_the_largest(capsys):
    model = fit(runs(2), ["linear"], folds=3)
    assert model.scale is None and len(model.out_of_fold.actual) == 30  # the 30 runs at 1M params, 1e8 tokens
    assert "scored at the largest" in capsys.readouterr().out


def test_predict_at_the_large_runs_scale_and_at_each_rows_own(tmp_path, capsys):
    observations = runs(3)
    observations.save(tmp_path / "m.csv", tmp_path / "l.csv")
    model = fit(observations, ["scaling"], folds=1)
    save_model(model, tmp_path / "model.npz")
    own = predict_main(["--model", str(tmp_path / "model.npz"), "--mixtures", str(tmp_path / "m.csv")])
    each = [model.at_scale(*scale).predict(w[None])[0, 0] for w, scale in zip(observations.mixtures,
                                                                             observations.scale)]
    np.testing.assert_allclose(own["metric/web_val_loss"], each)  # the model's own training rows, at their scale
    large = predict_main(["--model", str(tmp_path / "model.npz"), "--mixtures", str(tmp_path / "m.csv"),
                          "--params", "1e9", "--tokens", "2e10"])
    assert "scale: 1,000,000,000 params, 20,000,000,000 tokens" in capsys.readouterr().out
    assert (large["objective"] < own["objective"]).all()  # a larger model on more tokens: lower loss


def test_simulate_chooses_the_optimum_for_the_large_run_and_shows_the_proxies_beside_it(tmp_path, capsys):
    from regmix.regression.simulate import main as simulate_main
    from regmix.settings.run_config import load_run_config

    save_model(fit(runs(4), ["scaling"], folds=1), tmp_path / "model.npz")
    (tmp_path / "prior.yaml").write_text("train: {train_web: 4, train_code: 3, train_books: 2, train_math: 1}\n")
    common = ["--model", str(tmp_path / "model.npz"), "--prior", str(tmp_path / "prior.yaml"), "--num-candidates",
              "3000", "--top-k", "8", "--screen", "1", "--threads", "1", "--quiet"]
    simulate_main([*common, "--params", "1e9", "--tokens", "2e10", "--output", str(tmp_path / "big.yaml")])
    said = capsys.readouterr().out
    assert "scale-aware scaling: the optimum for 1,000,000,000 params and 20,000,000,000 tokens" in said
    assert "for the largest proxies (1,000,000 params, 100,000,000 tokens) it would be" in said
    written = load_run_config(tmp_path / "big.yaml").extra["predicted_at"]
    assert (written["params"], written["tokens"]) == (1e9, 2e10) and set(written["proxies_optimum"]) == set(DOMAINS)
    big, small = load_run_config(tmp_path / "big.yaml").train, written["proxies_optimum"]
    # the answer moves with scale: at the proxies' size math costs least in both terms together; at the large
    # run's the model-limited term has shrunk and the data-limited one, lowest with web, weighs more
    assert small["math"] > 0.8 and big["web"] > small["web"] + 0.2 and big["math"] < small["math"] - 0.2
    simulate_main([*common, "--output", str(tmp_path / "default.yaml")])  # --large-model's size and tokens
    assert load_run_config(tmp_path / "default.yaml").extra["predicted_at"]["params"] > 9e8  # TinyLlama 1.1B


def test_a_laws_loss_stays_above_zero_at_any_scale():
    from regmix.regression.scaling_law import ScalingMixingLaw

    rng = np.random.default_rng(3)
    P = rng.dirichlet(np.ones(len(DOMAINS)), 24)
    scale = np.r_[np.c_[np.full(24, 1e5), np.full(24, 2e5)], np.c_[np.full(24, 1e6), np.full(24, 2e5)]]
    weights = np.r_[P, P]
    # losses that fall steeply with size: a fit free to choose E puts it far below 0
    losses = 0.3 + np.exp(1.0 + weights @ A) * (scale[:, 0] / 1e5) ** -1.5 + rng.normal(0, 0.01, len(weights))
    law = ScalingMixingLaw().fit(np.c_[weights, scale], losses)
    assert law.E_[0] >= 0
    assert (law.predict(np.c_[P, np.full(24, 1e12), np.full(24, 1e12)]) >= 0).all()
