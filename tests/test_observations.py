"""RegMix's CSV pair and the schema's names: reading and writing Observations, the spellings of a domain."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from regmix.core.files import ConfigError
from regmix.core.observations import Observations, read_csvs
from regmix.core.schema import (
    achieved_column,
    achieved_domain,
    as_valid_domain,
    loss_column,
    loss_csv_name,
    loss_domain,
    mixture_csv_name,
    run_index,
    train_domain,
    train_key,
)


def test_read_csvs_refuses_bad_files_naming_them(tmp_path):
    mixtures, losses = tmp_path / "mixtures.csv", tmp_path / "losses.csv"
    pd.DataFrame({"index": [1, 2], "train_a": [1.0, 0.0], "train_b": [0.0, 1.0]}).to_csv(mixtures, index=False)
    pd.DataFrame({"index": [2, 3], "metric/a_val_loss": [1.0, 2.0]}).to_csv(losses, index=False)
    with pytest.raises(ConfigError, match="only in mixtures \\[1\\]"):
        read_csvs(mixtures, losses)
    pd.DataFrame({"index": [2, 1], "metric/a_val_loss": [2.0, 1.0]}).to_csv(losses, index=False)
    observations = read_csvs(mixtures, losses)
    assert observations.index == (1, 2) and observations.losses[:, 0].tolist() == [1.0, 2.0]
    assert observations.domains == ("a", "b") and observations.targets == ("a",)
    pd.DataFrame({"index": [2, 1], "metric/a_val_loss": ["abc", 1.0]}).to_csv(losses, index=False)
    with pytest.raises(ConfigError, match="losses.csv: 1 values are not finite numbers, first in row 2"):
        read_csvs(mixtures, losses)
    pd.DataFrame({"index": [1, 1], "metric/a_val_loss": [1.0, 2.0]}).to_csv(losses, index=False)
    with pytest.raises(ConfigError, match="losses.csv: duplicated index values \\[1\\]"):
        read_csvs(mixtures, losses)
    pd.DataFrame({"index": [1, 2], "a_loss": [1.0, 2.0]}).to_csv(losses, index=False)
    with pytest.raises(ConfigError, match="losses.csv: columns \\['a_loss'\\] are not metric/<domain>_val_loss"):
        read_csvs(mixtures, losses)
    pd.DataFrame({"index": [1, 2], "a": [1.0, 0.0]}).to_csv(mixtures, index=False)
    with pytest.raises(ConfigError, match="mixtures.csv: columns \\['a'\\] are not train_<domain>"):
        read_csvs(mixtures, losses)
    pd.DataFrame({"run": [1, 2], "train_a": [1.0, 0.0]}).to_csv(mixtures, index=False)
    with pytest.raises(ConfigError, match="mixtures.csv: no 'index' column"):
        read_csvs(mixtures, losses)
    with pytest.raises(ConfigError, match="nowhere.csv: file not found"):
        read_csvs(tmp_path / "nowhere.csv", losses)


def test_observations_round_trip_through_the_two_csvs(tmp_path):
    rng = np.random.default_rng(3)
    domains, targets = ("zeta", "alpha", "mid/dle", "b_val_loss"), ("web", "a/b_val_loss", "code")
    observations = Observations(domains, targets, (7, 2, 30), rng.dirichlet(np.ones(4), 3), rng.random((3, 3)) + 2)
    mixture_csv, loss_csv = observations.save(tmp_path / mixture_csv_name("1m"), tmp_path / loss_csv_name("pile", "1m"))
    assert mixture_csv.name == "train_mixture_1m.csv" and loss_csv.name == "train_pile_loss_1m.csv"
    assert mixture_csv.read_text().splitlines()[0] == "index,train_zeta,train_alpha,train_mid/dle,train_b_val_loss"
    assert loss_csv.read_text().splitlines()[0] == \
        "index,metric/web_val_loss,metric/a/b_val_loss_val_loss,metric/code_val_loss"
    back = read_csvs(mixture_csv, loss_csv)
    assert (back.domains, back.targets, back.index) == (domains, targets, (7, 2, 30))  # order kept, never sorted
    np.testing.assert_array_equal(back.mixtures, observations.mixtures)
    np.testing.assert_array_equal(back.losses, observations.losses)
    code = back.select(["metric/code_val_loss", "web"])
    assert code.targets == ("code", "web") and code.losses[:, 0].tolist() == observations.losses[:, 2].tolist()
    with pytest.raises(ValueError, match="not observed"):
        back.select(["arxiv"])
    moved = back.on_domains(["alpha", "zeta", "mid/dle", "b_val_loss", "new"])
    assert list(moved.mixture_frame().columns) == ["alpha", "zeta", "mid/dle", "b_val_loss", "new"]
    np.testing.assert_array_equal(moved.mixtures[:, 1], observations.mixtures[:, 0])
    assert (moved.mixtures[:, 4] == 0).all()
    with pytest.raises(ValueError, match="weight on domains \\['zeta'\\]"):
        back.on_domains(["alpha", "mid/dle", "b_val_loss"])
    with pytest.raises(ValueError, match="shape"):
        Observations(domains, targets, (1,), observations.mixtures, observations.losses)
    with pytest.raises(ValueError, match="duplicate index"):
        Observations(domains, targets, (1, 1, 2), observations.mixtures, observations.losses)


@pytest.mark.parametrize("domain", ["web", "the_pile_pile_cc", "a/b", "x_val_loss", "metric/y_val_loss", "val_loss"])
def test_schema_names_are_inverse(domain):
    assert loss_domain(loss_column(domain)) == domain
    assert as_valid_domain(loss_column(domain)) == domain
    assert train_domain(train_key(domain)) == domain
    assert achieved_domain(achieved_column(domain)) == domain
    assert loss_column(loss_domain(loss_column(domain))) == loss_column(domain)


def test_schema_refuses_other_names():
    assert loss_domain("metric/train_loss") is None and loss_domain("metric/web_val_ppl") is None
    assert loss_domain("web_val_loss") is None and loss_domain("metric/_val_loss") is None
    assert train_domain("web") is None and train_domain("train_") is None
    assert achieved_domain("mixture/web") is None
    assert as_valid_domain("web") == "web"
    assert run_index("n12") == 12 and run_index("n12b") == "n12b" and run_index("12") == "12"
