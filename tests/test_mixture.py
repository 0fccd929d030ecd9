"""Mixture and RunConfig: YAML round trip, RegMix compatibility, and one clear error per bad input."""

import math
from pathlib import Path

import numpy as np
import pytest

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture, load_distribution
from regmix.data.corpus import CorpusManifest, Shard, TokenizerInfo
from regmix.settings.run_config import RunConfig, load_run_config, run_config_paths, save_run_config
from regmix.settings.training import TrainingSettings

REGMIX_OWN_FILE = """\
train:
  train_the_pile_unzip_arxiv: 0.25
  train_the_pile_unzip_pile_cc: 0.75
valid:
  valid_the_pile_unzip_pile_cc: 1.0
model_name: tinyllama_1_1b
"""


def write(tmp_path: Path, text: str, name: str = "n1.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_round_trip_keeps_everything(tmp_path):
    config = RunConfig("n7", Mixture.from_dict({"a": 0.2, "b": 0.3, "c": 0.5}), ("a", "c"),
                       TrainingSettings(max_step=50, learning_rate=1e-3, lr_schedule="cosine"),
                       {"temperature": 0.5}, {"total_devices": 1})
    path = tmp_path / "n7.yaml"
    save_run_config(config, path)
    loaded = load_run_config(path)
    assert loaded.name == "n7"
    assert loaded.train.domains == ("a", "b", "c")
    np.testing.assert_array_equal(loaded.train.weights, config.train.weights)
    assert loaded.valid == ("a", "c")
    assert loaded.training == config.training
    assert loaded.sampling == {"temperature": 0.5}
    assert loaded.extra == {"total_devices": 1}
    text = path.read_text()
    assert "train_a: 0.2" in text and "valid_c: 1.0" in text


def test_reads_regmix_own_config(tmp_path):
    config = load_run_config(write(tmp_path, REGMIX_OWN_FILE, "regmix.yaml"))
    assert config.train.domains == ("the_pile_unzip_arxiv", "the_pile_unzip_pile_cc")
    assert config.train["the_pile_unzip_pile_cc"] == 0.75
    assert config.valid == ("the_pile_unzip_pile_cc",)
    assert config.training.model_name == "tinyllama_1_1b"


def test_reads_regmix_proxy_settings(tmp_path):
    text = REGMIX_OWN_FILE + "global_batch_size: 512\nmicro_batch_size: 16\nmax_step: 1001\nlearning_rate: 0.0004\n" \
                             "warmup_steps: 100\nnum_of_devices: 1\n"
    config = load_run_config(write(tmp_path, text))
    assert (config.training.global_batch_size, config.training.max_step) == (512, 1001)
    assert config.extra == {"num_of_devices": 1}


def test_a_misspelled_key_fails_with_the_closest_one_and_meta_keeps_anything(tmp_path):
    path = write(tmp_path, REGMIX_OWN_FILE + "max_steps: 5\n", "proxy.yaml")
    with pytest.raises(ConfigError, match=r"proxy.yaml: unknown key 'max_steps' \(did you mean 'max_step'\?\).*meta:"):
        load_run_config(path)
    kept = load_run_config(write(tmp_path, REGMIX_OWN_FILE + "meta:\n  owner: data team\n  ticket: 42\n", "m.yaml"))
    assert kept.extra == {"meta": {"owner": "data team", "ticket": 42}}


def test_an_edited_optimal_mixture_yaml_is_checked_before_the_large_run(tmp_path):
    from regmix.core.objective import Objective
    from regmix.regression.optimal_mixture import optimal_run_config

    config = optimal_run_config(Mixture.from_dict({"a": 0.4, "b": 0.6}), Objective({"a": 1.0}), 3.2, 0.01,
                                method="regmix", repetition_caps={"R": 4})
    path = tmp_path / "optimal_mixture.yaml"
    save_run_config(config, path)
    assert load_run_config(path).extra["predicted_loss"] == 3.2  # what regmix records reads back
    path.write_text(path.read_text().replace("learning_rate:", "learning_rte:"))
    with pytest.raises(ConfigError, match="unknown key 'learning_rte' \\(did you mean 'learning_rate'"):
        load_run_config(path)
    with pytest.raises(TypeError, match="comment"):
        optimal_run_config(Mixture.from_dict({"a": 1.0}), Objective({"a": 1.0}), 3.2, None, comment="x")


@pytest.mark.parametrize("weights, problem", [
    ("train_a: -0.1\n  train_b: 1.1", "must be finite and >= 0"),
    ("train_a: .nan\n  train_b: 1.0", "NaN"),
    ("train_a: 0.3\n  train_b: 0.3", "sum to 0.6"),
    ("train_a: lots\n  train_b: 1.0", "not a number"),
])
def test_bad_weights_name_the_file(tmp_path, weights, problem):
    path = write(tmp_path, f"train:\n  {weights}\nvalid:\n  valid_a: 1.0\n")
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert str(err.value).startswith(str(path))
    assert problem in str(err.value)


@pytest.mark.parametrize("text, problem", [
    ("train: {}\n", "has no domains"),
    ("valid:\n  valid_a: 1.0\n", "missing the 'train:' section"),
    ("train: [1, 2\n", "not valid YAML"),
    ("train:\n  train_a: 1.0\nglobal_batch_size: 10\nmicro_batch_size: 4\n", "must be a multiple of"),
    ("train:\n  train_a: 1.0\nmax_step: many\n", "max_step must be a whole number"),
    ("train:\n  train_a: 1.0\nmax_step: 1.5\n", "max_step must be a whole number"),
    ("train:\n  train_a: 1.0\nmax_step: true\n", "max_step must be a whole number"),
    ("train:\n  train_a: 1.0\nmodel_name: gpt5\n", "model_name must be a model preset"),
    ("train:\n  train_a: 1.0\nmodel_name: tinylama_1M\n",
     "(did you mean 'tinyllama_1M'?); `regmix models` lists them, got 'tinylama_1M'"),
    ("train:\n  train_a: 1.0\nlearning_rate: .nan\n", "learning_rate must be > 0 and finite"),
    ("train:\n  train_a: 1.0\nlr_schedule: cosine\nmin_lr: 0.1\n", "min_lr must be at most learning_rate"),
    ("train:\n  train_a: 1.0\nseed: -1\n", "seed must be in [0, 2**63)"),
    ("train:\n  train_../../x: 1.0\n", "domain '../../x' cannot name a file: it holds a path separator"),
    ("train:\n  train_.a: 1.0\n", "domain '.a' cannot name a file: it starts with a dot"),
    ("train:\n  train_: 1.0\n", "domain '' cannot name a file: it is empty"),
    ("train:\n  train_a: 1.0\nvalid:\n  valid_a/b: 1.0\n", "valid domain 'a/b' cannot name a file"),
    ("schedule:\n- {until_step: 5000, train: {train_a/b: 1.0}}\n", "domain 'a/b' cannot name a file"),
])
def test_bad_files_name_the_file(tmp_path, text, problem):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_run_config(path)
    assert str(err.value).startswith(str(path)) and problem in str(err.value)


def test_settings_read_from_files_as_their_type(tmp_path):
    config = load_run_config(write(tmp_path, "train: {train_a: 1.0}\nmax_step: 1e3\nlearning_rate: 4e-4\n"))
    assert config.training.max_step == 1000 and config.training.learning_rate == 4e-4


@pytest.mark.parametrize("name", ["..yaml", "...yaml", "a\x01.yaml", "x" * 130 + ".yaml"])
def test_a_config_name_must_name_a_run_folder(tmp_path, name):
    """A run trains into <output>/<file stem>/: `..yaml` would train into the output's parent."""
    path = write(tmp_path, REGMIX_OWN_FILE, name)
    with pytest.raises(ConfigError, match=r"run name .* cannot name a file") as err:
        load_run_config(path)
    assert str(err.value).startswith(str(path))
    if name.startswith("."):
        assert run_config_paths(tmp_path) == []  # hidden files are no configs of a sweep folder
    else:
        with pytest.raises(ConfigError, match="cannot name a file"):
            run_config_paths(tmp_path)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_run_config(tmp_path / "nope.yaml")


def _manifest(tmp_path: Path) -> CorpusManifest:
    tok = TokenizerInfo("t", "0" * 64, 256, 0, "t.json")
    shards = {"train": {"a": [Shard("train/a_0.bin", "a_0.jsonl", "x", 100, 1)],
                        "b": [Shard("train/b_0.bin", "b_0.jsonl", "x", 0, 0)]},
              "valid": {"a": [Shard("valid/a.bin", "a.jsonl", "x", 10, 1)]}}
    return CorpusManifest(tmp_path, "src", tok, "uint16", shards)


def test_unknown_and_empty_domains_against_the_corpus(tmp_path):
    manifest = _manifest(tmp_path)
    unknown = load_run_config(write(tmp_path, "train:\n  train_a: 0.5\n  train_z: 0.5\n"))
    with pytest.raises(ConfigError, match=r"unknown domains \['z'\]"):
        unknown.check_corpus(manifest, tmp_path / "n1.yaml")
    empty = load_run_config(write(tmp_path, "train:\n  train_a: 0.5\n  train_b: 0.5\n", "n2.yaml"))
    with pytest.raises(ConfigError, match=r"\['b'\] have weight but no tokens"):
        empty.check_corpus(manifest, tmp_path / "n2.yaml")
    bad_valid = load_run_config(write(tmp_path, "train:\n  train_a: 1.0\nvalid:\n  valid_q: 1.0\n", "n3.yaml"))
    with pytest.raises(ConfigError, match="unknown valid domains"):
        bad_valid.check_corpus(manifest, tmp_path / "n3.yaml")
    text = "train:\n  train_a: 1.0\n  train_b: 0.0\nvalid:\n  valid_a: 1.0\n"
    fine = load_run_config(write(tmp_path, text, "n4.yaml"))
    fine.check_corpus(manifest, tmp_path / "n4.yaml")


def test_vector_follows_the_requested_order():
    mixture = Mixture.from_dict({"a": 0.1, "b": 0.2, "c": 0.7})
    np.testing.assert_allclose(mixture.vector(["c", "a", "b", "d"]), [0.7, 0.1, 0.2, 0.0])
    with pytest.raises(ValueError, match="not in"):
        mixture.vector(["a", "b"])
    assert Mixture.from_dict({"a": 0.0, "b": 1.0}).active() == ("b",)


def test_distribution_accepts_counts_and_regmix_prior(tmp_path):
    flat, valid = load_distribution(write(tmp_path, "a: 30\nb: 10\n", "dist.yaml"))
    assert math.isclose(flat["a"], 0.75) and valid == ("a", "b")
    nested, valid = load_distribution(write(tmp_path, '{"train": {"train_a": 1, "train_b": 3}, '
                                                      '"valid": {"valid_b": 1}}', "dist.json"))
    assert nested.domains == ("a", "b") and math.isclose(nested["b"], 0.75) and valid == ("b",)


def test_sweep_folder_in_natural_order(tmp_path):
    for i in (10, 2, 1):
        write(tmp_path, REGMIX_OWN_FILE, f"n{i}.yaml")
    assert [p.stem for p in run_config_paths(tmp_path)] == ["n1", "n2", "n10"]
    with pytest.raises(ConfigError, match="not a folder"):
        run_config_paths(tmp_path / "n1.yaml")
