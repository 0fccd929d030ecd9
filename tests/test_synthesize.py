"""Mixture synthesis: determinism, every published bound, statistics, files RegMix can read."""

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import spearmanr

from regmix.cli import run_command
from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.space import usage_bounds
from regmix.search.synthesize import SynthesisSettings, load_prior, main, synthesize, tempered_prior
from regmix.settings.run_config import load_run_config, run_config_paths


@pytest.fixture(scope="module")
def pile():
    return load_prior("the_pile")


@pytest.fixture(scope="module")
def pile_512(pile):
    return np.stack([m.weights for m in synthesize(pile[0], 512)])


def test_the_pile_preset(pile):
    natural, valid = pile
    assert len(natural.domains) == 17 and len(valid) == 17
    assert "the_pile_pile_cc" in natural.domains
    assert natural.weights.sum() == pytest.approx(1.0)


def test_deterministic_for_a_seed(pile, pile_512):
    again = np.stack([m.weights for m in synthesize(pile[0], 512)])
    np.testing.assert_array_equal(pile_512, again)
    other = np.stack([m.weights for m in synthesize(pile[0], 512, SynthesisSettings(seed=7))])
    assert not np.array_equal(pile_512, other)


def test_respects_every_bound(pile, pile_512):
    s = SynthesisSettings()
    assert pile_512.shape == (512, 17)
    np.testing.assert_allclose(pile_512.sum(axis=1), 1.0, atol=1e-9)
    units = pile_512 / s.minimum
    np.testing.assert_allclose(units, np.rint(units), atol=1e-6)
    assert (pile_512[pile_512 > 0] >= s.minimum - 1e-12).all()
    assert (pile_512 <= usage_bounds(pile[0].weights, s.maximum_usage) + 1e-9).all()
    assert len(np.unique(np.rint(units), axis=0)) == 512


def test_statistics_follow_the_tempered_prior(pile, pile_512):
    prior = tempered_prior(pile[0].weights, SynthesisSettings().temperature)
    rho = spearmanr(pile_512.mean(axis=0), prior).statistic
    assert rho > 0.9
    assert (pile_512 == 0).mean() > 0.2, "low Dirichlet strengths should give sparse mixtures"


def test_tight_bound_is_enforced_and_impossible_bound_explained():
    natural = Mixture.from_dict({"a": 0.5, "b": 0.3, "c": 0.2})
    weights = np.stack([m.weights for m in synthesize(natural, 32, SynthesisSettings(maximum_usage=1.6))])
    assert (weights <= usage_bounds(natural.weights, 1.6) + 1e-9).all()
    with pytest.raises(ValueError, match="distinct mixtures pass the bounds"):
        synthesize(natural, 32, SynthesisSettings(maximum_usage=1.0001, sample_multiplier=2))


def test_cli_writes_regmix_configs_and_plot(tmp_path):
    out = tmp_path / "configs"
    main(["--prior", "the_pile", "--output", str(out), "--num-configs", "8", "--plot",
          "--max-step", "20", "--model-name", "tinyllama_demo"])
    paths = run_config_paths(out)
    assert [p.name for p in paths] == [f"n{i}.yaml" for i in range(1, 9)]
    config = load_run_config(paths[0])
    assert config.training.max_step == 20 and config.training.model_name == "tinyllama_demo"
    assert config.sampling["temperature"] == 0.5 and config.sampling["maximum_usage"] == 15.0
    assert len(config.valid) == 17
    assert (out / "weights.png").read_bytes()[:4] == b"\x89PNG"

    with pytest.raises(ConfigError, match="already holds 8 configs"):
        main(["--prior", "the_pile", "--output", str(out), "--num-configs", "4"])
    main(["--prior", "the_pile", "--output", str(out), "--num-configs", "4", "--replace"])
    assert [p.name for p in run_config_paths(out)] == [f"n{i}.yaml" for i in range(1, 5)]  # no n5..n8 left over


def test_minimum_must_keep_the_weights_summing_to_one():
    """Weights are multiples of minimum summing to 1: 1/minimum whole, and at least the number of domains."""
    natural = Mixture.from_dict({"a": 0.5, "b": 0.3, "c": 0.2})
    for minimum in (0.7, 0.3, 0.0003, 0.0):
        assert "minimum must be 1/k" in " ".join(SynthesisSettings(minimum=minimum).problems())
    with pytest.raises(ValueError, match="minimum must be at most 1/3 for 3 domains"):
        synthesize(natural, 2, SynthesisSettings(minimum=0.5))
    weights = np.stack([m.weights for m in synthesize(natural, 4, SynthesisSettings(minimum=0.25))])
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert (weights >= 0).all() and np.allclose(weights * 4, np.rint(weights * 4))


def test_cli_help():
    result = subprocess.run([sys.executable, "-m", "regmix.synthesize", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--maximum-usage" in result.stdout and "--temperature" in result.stdout


def test_cli_bad_prior_is_one_clear_error(tmp_path):
    bad = tmp_path / "prior.yaml"
    bad.write_text("train:\n  train_a: -1\n")
    result = subprocess.run([sys.executable, "-m", "regmix.search.synthesize", "--prior", str(bad), "--output",
                             str(tmp_path / "o")], capture_output=True, text=True)
    assert result.returncode == 2
    expected = f"error: {bad}: weight of domain 'a' is -1.0, must be finite and >= 0"
    assert result.stderr.strip().splitlines() == [expected]


def test_a_misspelled_preset_is_named_with_the_presets(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"^thepile: no such file or folder, nor a preset \(did you mean "
                                          r"'the_pile'\?\); presets: the_pile$"):
        load_prior("thepile")
    with pytest.raises(ConfigError, match=r"^nothing\.yaml: no such file or folder, nor a preset; presets: the_pile$"):
        load_prior("nothing.yaml")  # nothing near a preset: no guess
    assert run_command(main, ["--prior", "thepile", "--output", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: thepile: no such file or folder, nor a preset (did you mean 'the_pile'?); presets: the_pile"]
    assert not (tmp_path / "o").exists()


def test_a_prior_in_yaml_1_2_floats_is_read_as_numbers(tmp_path):
    prior = tmp_path / "prior.yaml"
    prior.write_text("train:\n  train_web: 800e9\n  train_code: 2e11\nvalid:\n  valid_web: 1\n")
    natural, valid = load_prior(str(prior))  # PyYAML alone reads 800e9 as the text "800e9"
    assert natural.to_dict() == pytest.approx({"web": 0.8, "code": 0.2}) and valid == ("web",)
