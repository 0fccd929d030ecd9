"""Model files: every regressor of the zoo round-trips exactly, and nothing but such a file loads (above all, no
pickle is ever unpickled)."""

from __future__ import annotations

import io
import json
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone

from regmix.core.files import ConfigError
from regmix.regression.fit import FittedModel
from regmix.regression.model_file import SETTINGS, load_model, save_model
from regmix.regression.regressors import REGRESSORS, SCALE_AWARE, LightGBMMixtureRegressor, make_regressor

DOMAINS = ("web", "code", "books", "math")
TARGETS = ("web", "code")


def synthetic(rows: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.ones(len(DOMAINS)), rows)
    losses = {"web": 3.0 - 0.4 * np.log(weights[:, 0] + 0.01) + rng.normal(0, 0.01, rows),
              "code": 3.5 - 0.5 * np.log(weights[:, 1] + 0.01) + 0.2 * weights[:, 2]}
    return pd.DataFrame(weights, columns=list(DOMAINS)), pd.DataFrame(losses)


def fitted(name: str) -> FittedModel:
    X, Y = synthetic(40, 0)
    scale = None
    if name in SCALE_AWARE:  # two proxy sizes; the model predicts at a third
        X = X.assign(params=np.where(np.arange(40) % 2, 1e6, 4e6), tokens=2e8)
        scale = (1.1e9, 2.6e10)
    regressor = LightGBMMixtureRegressor(n_estimators=50) if name == "lightgbm" else make_regressor(name)
    return FittedModel(name, regressor.fit(X, Y), DOMAINS, TARGETS, cv={"web": {"spearman": 97.5, "r2": float("nan")}},
                       extrapolation={"code": {"spearman": 80.0}}, scale=scale)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "pwned"


class Payload:
    """Unpickling this creates `path`: proof that a file was unpickled."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self) -> tuple:
        return open, (str(self.path), "w")


@pytest.mark.parametrize("name", REGRESSORS)
def test_every_regressor_round_trips(name, tmp_path):
    model = fitted(name)
    path = tmp_path / "model.npz"
    save_model(model, path)
    loaded = load_model(save_model(model, path))  # the second save replaces the first
    assert sorted(tmp_path.iterdir()) == [path]  # no temporary file left behind
    assert (loaded.name, loaded.domains, loaded.targets) == (name, DOMAINS, TARGETS)
    assert loaded.cv["web"]["spearman"] == 97.5 and np.isnan(loaded.cv["web"]["r2"])
    assert loaded.extrapolation == model.extrapolation and loaded.scale == model.scale
    assert repr(clone(loaded.regressor)) == repr(clone(model.regressor))  # constructor params too
    fresh, _ = synthetic(200, 1)
    np.testing.assert_allclose(loaded.predict(fresh.to_numpy()), model.predict(fresh.to_numpy()), rtol=1e-12)
    spread, loaded_spread = model.predict_spread(fresh.to_numpy()[:5]), loaded.predict_spread(fresh.to_numpy()[:5])
    assert (spread is None) == (loaded_spread is None)
    if spread is not None:
        np.testing.assert_allclose(loaded_spread, spread, rtol=1e-12)
    if name in SCALE_AWARE:
        fresh = fresh.assign(params=1e6, tokens=2e8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # feature names restored: a frame with the domains passes silently
        loaded.regressor.predict(fresh)
    with pytest.raises(ValueError):
        loaded.regressor.predict(fresh[list(reversed(fresh.columns))])  # another column order is refused


def test_the_gp_keeps_its_fitted_kernel_and_weights(tmp_path):
    model = fitted("gp")
    loaded = load_model(save_model(model, tmp_path / "gp.npz"))
    for before, after in zip(model.regressor.models_, loaded.regressor.models_):
        np.testing.assert_array_equal(after["gp"].kernel_.theta, before["gp"].kernel_.theta)
        np.testing.assert_allclose(after["gp"].alpha_, before["gp"].alpha_, rtol=1e-12)


def test_a_selected_model_round_trips(tmp_path):
    model = fitted("ensemble").select(["code"])
    loaded = load_model(save_model(model, tmp_path / "code.npz"))
    fresh, _ = synthetic(50, 2)
    np.testing.assert_allclose(loaded.predict(fresh.to_numpy()), model.predict(fresh.to_numpy()), rtol=1e-12)


@pytest.mark.parametrize("file_name", ["model.npz", "model.joblib"])
def test_a_pickle_is_refused_unread(file_name, tmp_path, marker):
    path = tmp_path / file_name
    path.write_bytes(pickle.dumps(Payload(marker), protocol=pickle.HIGHEST_PROTOCOL))
    with pytest.raises(ConfigError, match=f"{file_name}: a model file of an earlier regmix .*re-fit it"):
        load_model(path)
    assert not marker.exists()


def test_object_arrays_in_an_npz_are_refused_unread(tmp_path, marker):
    path = tmp_path / "model.npz"
    np.savez(path, **{SETTINGS: np.array([Payload(marker)], dtype=object)})  # numpy pickles object arrays
    with pytest.raises(ConfigError, match="model.npz: .*allow_pickle"):
        load_model(path)
    assert not marker.exists()


def test_damaged_and_foreign_files_are_refused(tmp_path):
    whole = save_model(fitted("linear"), tmp_path / "whole.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(whole[:len(whole) // 2])
    (tmp_path / "text.npz").write_text("web,code\n0.5,0.5\n")
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    np.savez(tmp_path / "floats.npz", **{SETTINGS: np.ones(3)})
    cases = {"missing.npz": "file not found", "truncated.npz": "damaged", "text.npz": "not an .npz",
             "other.npz": "without 'settings'", "floats.npz": "expected UTF-8 text"}
    for name, reason in cases.items():
        with pytest.raises(ConfigError, match=f"{name}: .*{reason}"):
            load_model(tmp_path / name)


def rewritten(source: Path, target: Path, change) -> Path:
    """A copy of a model file with its settings changed by `change(settings)`."""
    with np.load(source, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    settings = json.loads(arrays[SETTINGS].tobytes())
    change(settings)
    arrays[SETTINGS] = np.frombuffer(json.dumps(settings).encode(), dtype=np.uint8)
    np.savez(target, **arrays)
    return target


def test_settings_this_regmix_does_not_know_are_refused(tmp_path):
    source = save_model(fitted("law_gp"), tmp_path / "model.npz")
    cases = {"version": (lambda s: s.update(version=2), "format version 2"),
             "name": (lambda s: s.update(name="xgboost"), "unknown regressor 'xgboost'"),
             "class": (lambda s: s["regressor"]["law"].update({"class": "Popen"}), "unknown regressor class 'Popen'"),
             "attribute": (lambda s: s["regressor"]["law"]["recorded"].update(predict=1), "unknown fitted attribute"),
             "format": (lambda s: s.update(format="other"), "not a regmix model file"),
             "targets": (lambda s: s.update(targets=["web"]), "damaged"),  # two targets' models, one name
             "array": (lambda s: s["regressor"].update(law=s["regressor"]["residual"]), "damaged")}
    for case, (change, reason) in cases.items():
        with pytest.raises(ConfigError, match=f"{case}.npz: .*{reason}") as error:
            load_model(rewritten(source, tmp_path / f"{case}.npz", change))
        assert error.value.problem


def test_a_zip_that_is_no_npz_is_refused(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("settings.npy", b"not an array")
    (tmp_path / "model.npz").write_bytes(buffer.getvalue())
    with pytest.raises(ConfigError, match="model.npz: not a regmix model file \\('settings' is not a NumPy array"):
        load_model(tmp_path / "model.npz")


def test_a_file_cut_anywhere_is_refused_with_a_reason(tmp_path):
    whole = save_model(fitted("linear"), tmp_path / "whole.npz").read_bytes()
    for size in (0, 1, 3, 4, 30, 200, len(whole) // 2, len(whole) - 22, len(whole) - 1):
        path = tmp_path / f"cut_{size}.npz"
        path.write_bytes(whole[:size])
        with pytest.raises(ConfigError, match=f"cut_{size}.npz: ") as error:
            load_model(path)
        problem = error.value.problem
        assert problem and "()" not in problem and not problem.rstrip().endswith(":"), problem


def test_a_cut_or_edited_booster_text_is_refused_before_lightgbm_parses_it(tmp_path):
    """LightGBM aborts the whole process on some malformed texts: the checksum refuses them first."""
    path = save_model(fitted("lightgbm"), tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    key = next(k for k in arrays if k.endswith(".booster"))
    for label, text in (("cut", arrays[key][: len(arrays[key]) // 2]),
                        ("edited", np.frombuffer(arrays[key].tobytes().replace(b"num_leaves=", b"num_leaves=9"),
                                                 dtype=np.uint8))):
        np.savez(tmp_path / f"{label}.npz", **{**arrays, key: text})
        with pytest.raises(ConfigError, match=f"{label}.npz: .*not the one written"):
            load_model(tmp_path / f"{label}.npz")
