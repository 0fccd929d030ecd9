"""Model files that hold data only: a fitted regressor as NumPy arrays, JSON settings and LightGBM model text.

The pickles earlier versions wrote (joblib) run whatever code a crafted file names when loaded; an .npz read
with allow_pickle=False cannot. One file, written atomically by `save_model`:

- `settings`: UTF-8 JSON (as uint8): format and version, the regressor's name, domains, targets, CV and
  extrapolation scores, and the regressor as a tree of estimators, each with its class (one of the zoo's),
  constructor params and what fitting recorded besides arrays (feature count and names, single target);
- every other entry an array of that tree, by path (`regressor.members.1.models.0.booster`): float64
  parameters, the GPs' training data, each LightGBM booster as its own model text (uint8).

`load_model` reads exactly this, nothing else, and turns every problem into one `ConfigError` naming the file.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
from sklearn.base import clone
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.gaussian_process.kernels import RBF, ConstantKernel, Kernel, Product, Sum, WhiteKernel
from sklearn.linear_model import LinearRegression

from regmix.core.files import ConfigError, write_files
from regmix.regression.fitted import FittedModel
from regmix.regression.mixing_law import LogLinearMixingLaw
from regmix.regression.regressors import (
    REGRESSORS,
    EnsembleMixtureRegressor,
    GPMixtureRegressor,
    LawResidualMixtureRegressor,
    LightGBMMixtureRegressor,
    LinearMixtureRegressor,
    SaturatingMixingLaw,
)
from regmix.regression.scaling_law import PARAMETERS as SCALING_PARAMETERS
from regmix.regression.scaling_law import ScalingMixingLaw

FORMAT = "regmix model"
VERSION = 1
SETTINGS = "settings"
LEGACY = ("a model file of an earlier regmix (a pickle, which can run code when loaded); "
          "re-fit it: regmix fit ... --output model.npz")
_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
_ZIP = b"PK\x03\x04"  # an .npz is a zip archive of .npy files
_PICKLE = b"\x80"  # pickle protocol 2 and later, as joblib.dump writes it
_PICKLE_SUFFIXES = (".joblib", ".pkl", ".pickle")  # joblib's compressed pickles start otherwise
_RECORDED = ("n_features_in_", "feature_names_in_", "single_target_")  # set by fit, checked by predict

Arrays = dict[str, np.ndarray]


def save_model(model: FittedModel, path: str | os.PathLike) -> Path:
    """Write `model` to `path` (whole or not at all); `load_model` reads it back with identical predictions."""
    arrays: Arrays = {}
    settings = {"format": FORMAT, "version": VERSION, "name": model.name, "domains": list(model.domains),
                "targets": list(model.targets), "cv": model.cv, "extrapolation": model.extrapolation,
                "scale": None if model.scale is None else list(model.scale),
                "regressor": _state(model.regressor, "regressor", arrays)}
    arrays[SETTINGS] = _text_array(json.dumps(settings, default=_plain))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:  # np.savez_compressed's layout, but
        for name, array in arrays.items():  # with a fixed timestamp: the same model gives the same bytes
            with archive.open(zipfile.ZipInfo(f"{name}.npy", date_time=_EPOCH), "w", force_zip64=True) as entry:
                np.lib.format.write_array(entry, np.asanyarray(array), allow_pickle=False)
    path = Path(path)
    write_files({path: buffer.getvalue()})
    return path


def load_model(path: str | os.PathLike) -> FittedModel:
    """The model in a file `save_model` wrote; ConfigError for anything else (nothing is ever unpickled)."""

    path = Path(path)
    arrays = _read_arrays(path)
    settings = _settings(path, arrays)
    try:
        model = FittedModel(settings["name"], _estimator(settings["regressor"], "regressor", arrays),
                            tuple(settings["domains"]), tuple(settings["targets"]), settings["cv"],
                            settings["extrapolation"],
                            scale=None if settings.get("scale") is None else tuple(map(float, settings["scale"])))
        model.predict(np.full((1, len(model.domains)), 1.0 / len(model.domains)))  # parts that do not fit fail here
    except Exception as exc:  # a damaged tree can fail in any constructor or check it reaches
        raise _unreadable(path, exc) from None
    return model


def _read_arrays(path: Path) -> Arrays:
    """Every array of the .npz at `path`; a pickle (an earlier regmix's model file) is refused unread."""
    try:
        with open(path, "rb") as file:
            head = file.read(len(_ZIP))
    except FileNotFoundError:
        raise ConfigError(path, f"file not found (fit one: regmix fit ... --output {path})") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read: {exc.strerror or exc}") from None
    if not head:
        raise ConfigError(path, f"empty file; fit it again: regmix fit ... --output {path}")
    if head.startswith(_PICKLE) or (path.suffix in _PICKLE_SUFFIXES and not head.startswith(_ZIP)):
        raise ConfigError(path, LEGACY)
    if not head.startswith(_ZIP):
        raise ConfigError(path, "not a regmix model file (not an .npz archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except Exception as exc:  # a damaged zip raises BadZipFile, zlib.error, EOFError, ValueError (object arrays)...
        raise _unreadable(path, exc) from None
    not_arrays = [key for key, value in arrays.items() if not isinstance(value, np.ndarray)]
    if not_arrays:  # numpy hands out the bytes of a zip entry that is no .npy
        raise ConfigError(path, f"not a regmix model file ({not_arrays[0]!r} is not a NumPy array)")
    return arrays


def _settings(path: Path, arrays: Arrays) -> dict[str, Any]:
    if SETTINGS not in arrays:
        raise ConfigError(path, f"not a regmix model file (an .npz without {SETTINGS!r})")
    try:
        settings = json.loads(_text(arrays[SETTINGS]))
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _unreadable(path, exc) from None
    if not isinstance(settings, dict) or settings.get("format") != FORMAT:
        raise ConfigError(path, "not a regmix model file (no regmix settings)")
    if settings.get("version") != VERSION:
        raise ConfigError(path, f"model file format version {settings.get('version')!r}; this regmix reads version "
                                f"{VERSION} (re-fit it: regmix fit ... --output model.npz)")
    if settings.get("name") not in REGRESSORS:
        raise ConfigError(path, f"unknown regressor {settings.get('name')!r}; "
                                f"this regmix knows {', '.join(REGRESSORS)}")
    return settings


def _unreadable(path: Path, exc: Exception) -> ConfigError:
    """The error for a file that breaks while being read: what broke (never an empty reason) and what to do."""
    detail = f"{type(exc).__name__}: {exc}" if str(exc).strip() else type(exc).__name__
    return ConfigError(path, f"a damaged or foreign model file ({detail}); fit it again: regmix fit ... "
                             f"--output {path}")


def _plain(value: Any) -> Any:
    """numpy values as JSON's (scores, parameters, feature names: an object array of str)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"a model file cannot hold a {type(value).__name__}")


def _text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8)


def _text(array: np.ndarray) -> str:
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError(f"expected UTF-8 text as uint8, found {array.dtype} of shape {array.shape}")
    return array.tobytes().decode("utf-8")


def _floats(arrays: Arrays, key: str) -> np.ndarray:
    if arrays[key].dtype != np.float64:
        raise ValueError(f"{key} must be float64, found {arrays[key].dtype}")
    return arrays[key]


def _state(estimator: Any, key: str, arrays: Arrays) -> dict[str, Any]:
    """JSON for one fitted estimator of the zoo; its arrays go into `arrays` under `key`."""
    if type(estimator) not in _CODECS:
        raise TypeError(f"a model file cannot hold a {type(estimator).__name__}")
    to_state, _ = _CODECS[type(estimator)]
    recorded = {name: getattr(estimator, name) for name in _RECORDED if hasattr(estimator, name)}
    return {"class": type(estimator).__name__, "recorded": recorded, **to_state(estimator, key, arrays)}


def _estimator(state: dict[str, Any], key: str, arrays: Arrays) -> Any:
    """The fitted estimator `_state` described."""
    if state["class"] not in _CLASSES:
        raise ValueError(f"unknown regressor class {state['class']!r}")
    cls = _CLASSES[state["class"]]
    _, from_state = _CODECS[cls]
    estimator = from_state(cls, state, key, arrays)
    for name, value in state["recorded"].items():
        if name not in _RECORDED:
            raise ValueError(f"unknown fitted attribute {name!r}")
        # feature names as sklearn keeps them, so frames with these columns predict without a warning
        setattr(estimator, name, np.asarray(value, dtype=object) if name == "feature_names_in_" else value)
    return estimator


def _per_target_state(regressor: Any, key: str, arrays: Arrays) -> dict[str, Any]:
    to_state, _ = _TARGET_MODELS[type(regressor)]
    return {"params": regressor.get_params(deep=False),
            "models": [to_state(model, f"{key}.models.{j}", arrays) for j, model in enumerate(regressor.models_)]}


def _per_target(cls: type, state: dict[str, Any], key: str, arrays: Arrays) -> Any:
    _, from_state = _TARGET_MODELS[cls]
    regressor = cls(**state["params"])
    regressor.models_ = [from_state(model, f"{key}.models.{j}", arrays) for j, model in enumerate(state["models"])]
    return regressor


def _booster_state(booster: lgb.Booster, key: str, arrays: Arrays) -> dict[str, Any]:
    text = booster.model_to_string()
    arrays[f"{key}.booster"] = _text_array(text)
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}


def _booster(state: dict[str, Any], key: str, arrays: Arrays) -> lgb.Booster:
    """LightGBM's parser aborts the process on some malformed model texts (no Python error to catch), so a text
    that is not the one written (cut, edited) is refused before it reaches LightGBM. A text crafted together
    with its checksum can still abort it: a crash, never code run."""
    text = _text(arrays[f"{key}.booster"])
    if "sha256" in state and hashlib.sha256(text.encode("utf-8")).hexdigest() != state["sha256"]:
        raise ValueError(f"{key}: the LightGBM model text is not the one written (its sha256 differs): damaged or "
                         "edited; fit the model again")
    return lgb.Booster(model_str=text)


def _linear_state(model: LinearRegression, key: str, arrays: Arrays) -> dict[str, Any]:
    arrays[f"{key}.coef"] = np.asarray(model.coef_, dtype=np.float64)
    arrays[f"{key}.intercept"] = np.asarray(model.intercept_, dtype=np.float64)
    return {"n_features_in_": model.n_features_in_}


def _linear(state: dict[str, Any], key: str, arrays: Arrays) -> LinearRegression:
    model = LinearRegression()
    model.coef_, model.intercept_ = _floats(arrays, f"{key}.coef"), _floats(arrays, f"{key}.intercept")[()]
    model.n_features_in_ = int(state["n_features_in_"])
    return model


def _gp_state(model: dict[str, Any], key: str, arrays: Arrays) -> dict[str, Any]:
    gp = model["gp"]
    arrays[f"{key}.inv_length"] = np.asarray(model["inv_length"], dtype=np.float64)
    arrays[f"{key}.X_train"] = np.asarray(gp.X_train_, dtype=np.float64)
    arrays[f"{key}.y_train"] = np.asarray(gp.y_train_, dtype=np.float64)
    params = {name: value for name, value in gp.get_params(deep=False).items() if name not in ("kernel", "optimizer")}
    return {"mean": model["mean"], "scale": model["scale"], "amplitude": model["amplitude"], "params": params,
            "kernel": _kernel_state(gp.kernel_)}


def _gp(state: dict[str, Any], key: str, arrays: Arrays) -> dict[str, Any]:
    """A GP per-target model; the sklearn GP (for `predict_std`) re-fit with its fitted kernel, not optimized:
    the same kernel and training data give the same alpha_ and Cholesky factor."""
    gp = GaussianProcessRegressor(**{**state["params"], "kernel": _kernel(state["kernel"]), "optimizer": None})
    gp.fit(_floats(arrays, f"{key}.X_train"), _floats(arrays, f"{key}.y_train"))
    return {"gp": gp, "mean": float(state["mean"]), "scale": float(state["scale"]),
            "amplitude": float(state["amplitude"]), "inv_length": _floats(arrays, f"{key}.inv_length")}


def _saturating_state(model: dict[str, Any], key: str, arrays: Arrays) -> dict[str, Any]:
    for name in ("a", "b"):
        arrays[f"{key}.{name}"] = np.asarray(model[name], dtype=np.float64)
    return {"E": float(model["E"])}


def _saturating(state: dict[str, Any], key: str, arrays: Arrays) -> dict[str, Any]:
    return {"E": float(state["E"]), "a": _floats(arrays, f"{key}.a"), "b": _floats(arrays, f"{key}.b")}


_KERNELS = {cls.__name__: cls for cls in (Sum, Product, ConstantKernel, RBF, WhiteKernel)}


def _kernel_state(kernel: Kernel) -> dict[str, Any]:
    """A kernel as its class and constructor params (values, bounds; kernels of a sum or product likewise)."""
    if type(kernel).__name__ not in _KERNELS:
        raise TypeError(f"a model file cannot hold a {type(kernel).__name__} kernel")
    return {"class": type(kernel).__name__,
            "params": {name: _kernel_state(value) if isinstance(value, Kernel) else value
                       for name, value in kernel.get_params(deep=False).items()}}


def _kernel(state: dict[str, Any]) -> Kernel:
    def param(value: Any) -> Any:
        if isinstance(value, dict):
            return _kernel(value)
        return np.asarray(value, dtype=np.float64) if isinstance(value, list) else value

    return _KERNELS[state["class"]](**{name: param(value) for name, value in state["params"].items()})


def _law_state(law: LogLinearMixingLaw, key: str, arrays: Arrays) -> dict[str, Any]:
    for name in ("c_", "k_", "t_", "ceiling_"):
        arrays[f"{key}.{name}"] = np.asarray(getattr(law, name), dtype=np.float64)
    return {"params": law.get_params(deep=False)}


def _law(cls: type, state: dict[str, Any], key: str, arrays: Arrays) -> LogLinearMixingLaw:
    law = cls(**state["params"])
    law.c_, law.k_, law.t_ = (_floats(arrays, f"{key}.{name}") for name in ("c_", "k_", "t_"))
    if f"{key}.ceiling_" in arrays:  # model files before the ceiling predict uncapped, as they did
        law.ceiling_ = _floats(arrays, f"{key}.ceiling_")
    return law


def _scaling_state(law: ScalingMixingLaw, key: str, arrays: Arrays) -> dict[str, Any]:
    for name in SCALING_PARAMETERS:
        arrays[f"{key}.{name}"] = np.asarray(getattr(law, name), dtype=np.float64)
    return {"params": law.get_params(deep=False)}


def _scaling(cls: type, state: dict[str, Any], key: str, arrays: Arrays) -> ScalingMixingLaw:
    law = cls(**state["params"])
    for name in SCALING_PARAMETERS:
        setattr(law, name, _floats(arrays, f"{key}.{name}"))
    return law


def _ensemble_state(ensemble: EnsembleMixtureRegressor, key: str, arrays: Arrays) -> dict[str, Any]:
    return {"members": [[name, _state(member, f"{key}.members.{j}", arrays)]
                        for j, (name, member) in enumerate(ensemble.fitted_)]}


def _ensemble(cls: type, state: dict[str, Any], key: str, arrays: Arrays) -> EnsembleMixtureRegressor:
    """The fitted members; the unfitted ones (the params) are their clones, as `fit` clones them."""
    fitted = [(str(name), _estimator(member, f"{key}.members.{j}", arrays))
              for j, (name, member) in enumerate(state["members"])]
    ensemble = cls([(name, clone(member)) for name, member in fitted])
    ensemble.fitted_ = fitted
    return ensemble


def _law_residual_state(hybrid: LawResidualMixtureRegressor, key: str, arrays: Arrays) -> dict[str, Any]:
    return {part: _state(getattr(hybrid, f"{part}_"), f"{key}.{part}", arrays) for part in ("law", "residual")}


def _law_residual(cls: type, state: dict[str, Any], key: str, arrays: Arrays) -> LawResidualMixtureRegressor:
    law, residual = (_estimator(state[part], f"{key}.{part}", arrays) for part in ("law", "residual"))
    hybrid = cls(clone(law), clone(residual))
    hybrid.law_, hybrid.residual_ = law, residual
    return hybrid


_ToState = Callable[[Any, str, Arrays], dict[str, Any]]
_CODECS: dict[type, tuple[_ToState, Callable[[type, dict[str, Any], str, Arrays], Any]]] = {
    LightGBMMixtureRegressor: (_per_target_state, _per_target),
    LinearMixtureRegressor: (_per_target_state, _per_target),
    GPMixtureRegressor: (_per_target_state, _per_target),
    SaturatingMixingLaw: (_per_target_state, _per_target),
    LogLinearMixingLaw: (_law_state, _law),
    ScalingMixingLaw: (_scaling_state, _scaling),
    EnsembleMixtureRegressor: (_ensemble_state, _ensemble),
    LawResidualMixtureRegressor: (_law_residual_state, _law_residual),
}
_CLASSES = {cls.__name__: cls for cls in _CODECS}
_TARGET_MODELS: dict[type, tuple[_ToState, Callable[[dict[str, Any], str, Arrays], Any]]] = {
    LightGBMMixtureRegressor: (_booster_state, _booster),
    LinearMixtureRegressor: (_linear_state, _linear),
    GPMixtureRegressor: (_gp_state, _gp),
    SaturatingMixingLaw: (_saturating_state, _saturating),
}
