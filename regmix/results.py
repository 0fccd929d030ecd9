"""The result of one proxy run, as written by the trainer and read by collection.

A sweep's output folder holds one folder per run, named after the config:
`<runs>/<name>/result.json` (final, written atomically, its presence means "done"),
`<runs>/<name>/metrics.jsonl` (history, one JSON object per evaluation) and the run's checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regmix.mixture import ConfigError, Mixture, read_json_in, write_atomic

RESULT_NAME = "result.json"
HISTORY_NAME = "metrics.jsonl"
STATUSES = ("finished", "failed")


def metric_name(valid_domain: str) -> str:
    """RegMix's wandb / CSV column for a validation domain's loss."""
    return f"metric/{valid_domain}_val_loss"


def evaluation_row(step: int, tokens: int, train_loss: float, seconds: float,
                   valid_losses: dict[str, float]) -> dict[str, Any]:
    """One logged evaluation, under RegMix's wandb names (also a line of metrics.jsonl)."""
    row = {"trainer/global_step": step, "tokens": tokens, "metric/train_loss": train_loss,
           "seconds": round(seconds, 3)}
    for domain, value in valid_losses.items():
        row[metric_name(domain)] = value
        row[f"metric/{domain}_val_ppl"] = math.exp(min(value, 80.0))
    return row


@dataclass
class RunResult:
    """Final state of one proxy run: its mixture and the validation loss on every valid domain."""

    name: str
    status: str
    mixture: Mixture
    valid_losses: dict[str, float]
    step: int
    tokens: int
    seconds: float = 0.0
    error: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "finished" and all(math.isfinite(v) for v in self.valid_losses.values())

    def metrics(self) -> dict[str, float]:
        return {metric_name(d): v for d, v in self.valid_losses.items()}

    def to_json(self) -> str:
        return json.dumps({
            "name": self.name, "status": self.status, "mixture": self.mixture.to_dict(),
            "valid_losses": self.valid_losses, "step": self.step, "tokens": self.tokens,
            "seconds": self.seconds, "error": self.error, "settings": self.settings,
        }, indent=1)


def save_result(result: RunResult, run_dir: str | os.PathLike) -> Path:
    path = Path(run_dir) / RESULT_NAME
    write_atomic(path, result.to_json())
    return path


def load_result(path: str | os.PathLike) -> RunResult:
    """Read `result.json` (or the run folder holding it)."""
    path, data = read_json_in(path, RESULT_NAME, "no run result here")
    try:
        if data["status"] not in STATUSES:
            raise ValueError(f"unknown status {data['status']!r}")
        return RunResult(
            name=data["name"], status=data["status"],
            mixture=Mixture.from_dict(data["mixture"], path),
            valid_losses={k: float(v) for k, v in data["valid_losses"].items()},
            step=int(data["step"]), tokens=int(data["tokens"]), seconds=float(data.get("seconds", 0.0)),
            error=data.get("error"), settings=data.get("settings", {}),
        )
    except ConfigError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(path, f"unreadable run result: {exc}") from None
