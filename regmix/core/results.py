"""The result of one run, as written by the training loop and read by collection.

A sweep's output folder holds one folder per run, named after the config:
`<runs>/<name>/result.json` (final, written atomically, its presence means "done"),
`<runs>/<name>/metrics.jsonl` (history, one JSON object per evaluation) and the run's checkpoint.
A result keeps the mixture asked for (`requested`), the one actually sampled (`achieved`: shares of
the sequences drawn per domain) and, when the mixture changed during the run, its `trajectory`.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from regmix.core.files import ConfigError, read_json_in, write_atomic
from regmix.core.mixture import Mixture
from regmix.core.schema import (
    PARAMS_SETTING,
    RESULT_NAME,
    STEP,
    TOKENS_PER_STEP_SETTING,
    TRAIN_LOSS,
    achieved_column,
    loss_column,
    perplexity_column,
    probe_column,
    weight_column,
)

STATUSES = ("finished", "failed")


def evaluation_row(step: int, tokens: int, train_loss: float, seconds: float, valid_losses: Mapping[str, float],
                   achieved: Mixture | None = None, weights: Mixture | None = None,
                   probe_losses: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One logged evaluation, under RegMix's wandb names (also a line of metrics.jsonl).

    `achieved` (shares drawn so far), `weights` (the mixture in force) and the probe part's losses are logged
    when given.
    """
    row = {STEP: step, "tokens": tokens, TRAIN_LOSS: train_loss, "seconds": round(seconds, 3)}
    for domain, value in valid_losses.items():
        row[loss_column(domain)] = value
        row[perplexity_column(domain)] = math.exp(min(value, 80.0))
    row.update({probe_column(d): v for d, v in (probe_losses or {}).items()})
    for mixture, column in ((achieved, achieved_column), (weights, weight_column)):
        if mixture is not None:
            row.update({column(d): round(w, 6) for d, w in mixture.to_dict().items()})
    return row


@dataclass
class RunResult:
    """Final state of one run: its mixtures and the validation loss on every valid domain.

    `valid_losses` are on the held-out part of each valid domain (what the run is scored on), `probe_losses`
    on the part methods may measure ({} for runs without the split: regmix.data.validation).
    """

    name: str
    status: str
    requested: Mixture
    valid_losses: dict[str, float]
    step: int
    tokens: int
    seconds: float = 0.0
    error: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)
    achieved: Mixture | None = None
    trajectory: list[dict[str, Any]] = field(default_factory=list)  # [{"step": s, "mixture": {domain: w}}]
    probe_losses: dict[str, float] = field(default_factory=dict)

    @property
    def measured_losses(self) -> dict[str, float]:
        """What a method may learn from: the probe part's losses, or the valid losses of a run without the split."""
        return self.probe_losses or self.valid_losses

    @property
    def ok(self) -> bool:
        return self.status == "finished" and all(math.isfinite(v) for v in self.valid_losses.values())

    @property
    def mixture(self) -> Mixture:
        """The mixture the run's losses belong to: the achieved one, the requested one before any draw."""
        return self.achieved or self.requested

    def to_json(self) -> str:
        return json.dumps({
            "name": self.name, "status": self.status, "requested": self.requested.to_dict(),
            "achieved": None if self.achieved is None else self.achieved.to_dict(),
            "valid_losses": self.valid_losses, "step": self.step, "tokens": self.tokens,
            "seconds": self.seconds, "error": self.error, "settings": self.settings, "trajectory": self.trajectory,
            "probe_losses": self.probe_losses,
        }, indent=1)


def save_result(result: RunResult, run_dir: str | os.PathLike) -> Path:
    path = Path(run_dir) / RESULT_NAME
    write_atomic(path, result.to_json())
    return path


def load_result(path: str | os.PathLike) -> RunResult:
    """Read `result.json` (or the run folder holding it); results of older versions keep `mixture` only."""
    path, data = read_json_in(path, RESULT_NAME, "no run result here")
    try:
        if data["status"] not in STATUSES:
            raise ValueError(f"unknown status {data['status']!r}")
        requested = Mixture.from_dict(data["requested"] if "requested" in data else data["mixture"], path)
        achieved = data.get("achieved")
        return RunResult(
            name=data["name"], status=data["status"], requested=requested,
            valid_losses={k: float(v) for k, v in data["valid_losses"].items()},
            step=int(data["step"]), tokens=int(data["tokens"]), seconds=float(data.get("seconds", 0.0)),
            error=data.get("error"), settings=data.get("settings", {}),
            achieved=None if achieved is None else Mixture.from_dict(achieved, path, normalize=True),
            trajectory=list(data.get("trajectory", [])),
            probe_losses={k: float(v) for k, v in data.get("probe_losses", {}).items()},
        )
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(path, f"unreadable run result: {exc}") from None


def recorded_scale(settings: Mapping[str, Any], step: int | None) -> tuple[float, float] | None:
    """(non-embedding parameters, tokens trained by `step`) from the settings a run recorded (result.json's, its
    wandb config); None where it recorded no size."""
    params, per_step = settings.get(PARAMS_SETTING), settings.get(TOKENS_PER_STEP_SETTING)
    if not all(isinstance(v, (int, float)) and v > 0 for v in (params, per_step)) or not step:
        return None
    return float(params), float(per_step) * step


def run_scale(result: RunResult) -> tuple[float, float] | None:
    """A finished run's (non-embedding parameters, tokens trained), as it recorded them."""
    return recorded_scale(result.settings, result.step)
