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
another mixture, schedule or settings is refused with one error; max_step and the evaluation and
checkpoint intervals may change (to continue a finished large run, say).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from regmix.config import RunConfig
from regmix.files import ConfigError
from regmix.schema import CHECKPOINT_NAME

CHECKPOINT_FORMAT = 2
CHANGEABLE = ("max_step", "eval_step_interval", "save_step_interval")


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
    found = []
    if saved.get("tokenizer", wanted.get("tokenizer")) != wanted.get("tokenizer"):
        found.append("another corpus tokenizer")
    requested = saved.get("requested", {})
    domains = set(requested) | set(wanted["requested"])
    if any(abs(requested.get(d, 0.0) - wanted["requested"].get(d, 0.0)) > 1e-9 for d in domains):
        found.append("another mixture")
    if saved.get("schedule") != wanted["schedule"]:
        found.append("another schedule")
    if saved.get("valid") != wanted["valid"]:
        found.append("other valid domains")
    changed = sorted(k for k, v in wanted["settings"].items() if saved.get("settings", {}).get(k, v) != v)
    if changed:
        found.append(f"other settings ({', '.join(changed)})")
    return found


def read_checkpoint(path: Path) -> dict[str, Any]:
    """A checkpoint's contents, memory-mapped; a damaged or foreign file is one error naming it."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # a damaged or crafted file raises almost anything while unpickling
        raise ConfigError(path, f"unreadable checkpoint ({type(exc).__name__}: {str(exc)[:200]}); "
                                "delete it to train the run from scratch") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(path, "not a checkpoint of this regmix version; delete it to train the run from scratch")
    return state


def check_resumable(path: Path, config: RunConfig, manifest: Any = None) -> dict[str, Any] | None:
    """The checkpoint at `path` (None without one), refused if it belongs to another run than `config`."""
    if not path.exists():
        return None
    state = read_checkpoint(path)
    found = differences(state["run"], config, manifest)
    if found:
        raise ConfigError(path, f"was trained with {' and '.join(found)} than {config.name}'s config holds now "
                                f"(configs written again?); move {path.parent} away to train it anew")
    return state


def checkpoint_step(run_dir: Path) -> int:
    """The step a run would resume from (0 without a checkpoint); cheap, the file is memory-mapped."""
    path = run_dir / CHECKPOINT_NAME
    return int(read_checkpoint(path)["step"]) if path.exists() else 0
