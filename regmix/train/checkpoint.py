"""The one checkpoint schema of every run, proxies and the large run alike.

`<run>/checkpoint.pt` holds what resuming needs and what it must match:

    format     CHECKPOINT_FORMAT
    run        the run's identity: requested mixture, schedule, valid domains and settings
    step       optimizer steps done;  seconds: training time so far
    model      the model's litgpt state_dict;  optimizer: its AdamW state_dict
    sampler    the sampler's position, weights and counts per domain
    schedule   the mixture schedule's state (an online policy's included)
    log        wandb run id and the train-loss rows not yet sent to wandb

It is read with `torch.load(weights_only=True)`: a checkpoint never runs code. A checkpoint of
another model, mixture, schedule or settings, or whose weights have other shapes than the config's
model, is refused with one error naming the file, before any tensor is loaded; max_step and the
evaluation and checkpoint intervals may change (to continue a finished large run, say).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from regmix.core.files import ConfigError
from regmix.core.schema import CHECKPOINT_NAME
from regmix.settings.run_config import RunConfig
from regmix.train.models import build_model

CHECKPOINT_FORMAT = 2
CHANGEABLE = ("max_step", "eval_step_interval", "save_step_interval")
MODEL_SETTINGS = ("model_name", "block_size")  # with the corpus' vocabulary: the shapes of the weights


def run_identity(config: RunConfig, manifest: Any = None) -> dict[str, Any]:
    """What a checkpoint must agree with to be resumed by `config` on the corpus of `manifest`."""
    settings = {k: v for k, v in dataclasses.asdict(config.training).items() if k not in CHANGEABLE}
    schedule = config.to_yaml_dict().get("schedule")
    identity = {"requested": config.train.to_dict(), "schedule": schedule, "valid": list(config.valid),
                "settings": settings}
    if manifest is not None:
        identity["tokenizer"] = manifest.tokenizer.sha256
    return identity


def differences(saved: dict[str, Any], config: RunConfig, manifest: Any = None) -> list[str]:
    """What differs between a run's saved identity and `config`'s, in words (empty: the same run)."""
    wanted = run_identity(config, manifest)
    settings = saved.get("settings", {})
    found = []
    if saved.get("tokenizer", wanted.get("tokenizer")) != wanted.get("tokenizer"):
        found.append("another corpus tokenizer")
    model = {k: settings.get(k, wanted["settings"][k]) for k in MODEL_SETTINGS}
    if model != {k: wanted["settings"][k] for k in MODEL_SETTINGS}:
        found.append(f"another model ({_model_words(model)}, the config: {_model_words(wanted['settings'])})")
    requested, asked = saved.get("requested", {}), wanted["requested"]
    moved = [f"{d} {requested.get(d, 0.0):.4g} -> {asked.get(d, 0.0):.4g}" for d in dict.fromkeys([*requested, *asked])
             if abs(requested.get(d, 0.0) - asked.get(d, 0.0)) > 1e-9]
    if moved:
        found.append(f"another mixture ({', '.join(moved[:3])}{', ...' if len(moved) > 3 else ''})")
    if saved.get("schedule") != wanted["schedule"]:
        found.append("another schedule")
    if saved.get("valid") != wanted["valid"]:
        found.append("other valid domains")
    changed = sorted(k for k, v in wanted["settings"].items() if k not in MODEL_SETTINGS and settings.get(k, v) != v)
    if changed:
        found.append(f"other settings ({', '.join(changed)})")
    return found


def _model_words(settings: dict[str, Any]) -> str:
    return f"{settings['model_name']} with block_size {settings['block_size']}"


def model_mismatch(weights: dict[str, Any], config: RunConfig, vocab_size: int) -> str | None:
    """How saved model weights differ in names or shapes from the model `config` builds; None if they fit.

    Read from the memory-mapped checkpoint before any tensor is loaded, so a model of another size is one
    error naming the file rather than a size-mismatch traceback from load_state_dict.
    """
    with torch.device("meta"):  # shapes only: no memory, even for the 1.1B model
        model = build_model(config.training.model_name, vocab_size, config.training.block_size)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    found = {name: tuple(getattr(tensor, "shape", ())) for name, tensor in weights.items()}
    if found == expected:
        return None
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing or extra:
        return f"{len(missing)} weights missing, {len(extra)} unexpected, e.g. {(missing or extra)[0]}"
    name = next(n for n in expected if expected[n] != found[n])
    return f"{name} is {list(found[name])}, the config's {config.training.model_name} needs {list(expected[name])}"


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, memory-mapped; a damaged or foreign file is one error naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a damaged or crafted file raises almost anything while unpickling
        raise ConfigError(path, f"unreadable checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
                                "delete it to train the run from scratch") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(path, "not a checkpoint of this regmix version; delete it to train the run from scratch")
    if not all(isinstance(state.get(key), dict) for key in ("run", "model")) or not isinstance(state.get("step"), int):
        raise ConfigError(path, "damaged checkpoint (no run, step or model); delete it to train the run from scratch")
    return state


def check_resumable(path: Path, config: RunConfig, manifest: Any = None) -> dict[str, Any] | None:
    """The checkpoint at `path` (None without one), refused before any tensor loads if it belongs to another
    run than `config`: another model, mixture, schedule or settings, or weights of other shapes."""
    if not path.exists():
        return None
    state = read_checkpoint(path)
    found = differences(state["run"], config, manifest)
    if not found and manifest is not None:
        mismatch = model_mismatch(state["model"], config, manifest.tokenizer.vocab_size)
        found = [f"a model of other shapes ({mismatch})"] if mismatch else []
    if found:
        raise ConfigError(path, f"was trained with {' and '.join(found)} than {config.name}'s config asks for, so "
                                f"it cannot be resumed; move {path.parent} away to train the run anew")
    return state


def checkpoint_step(run_dir: Path) -> int:
    """The step a run would resume from (0 without a checkpoint); cheap, the file is memory-mapped."""
    path = run_dir / CHECKPOINT_NAME
    return int(read_checkpoint(path)["step"]) if path.exists() else 0
