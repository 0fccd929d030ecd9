"""A study's state file, `study.json`: the proposer's state and every run, each a small state machine

    proposed -> training -> trained -> recorded      (any of the first three -> failed)

written atomically after every change, so a study killed at any moment continues where it stopped, with the
proposals it had drawn. This is the one resume rule of every method: a state of another identity (corpus,
objective, space, proxy settings, method or its settings) is refused on resume with one error naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regmix.core.files import ConfigError, read_yaml, write_atomic
from regmix.core.schema import run_index, safe_name
from regmix.search.proposer import Proposer

STATE_NAME = "study.json"
STATE_VERSION = 1
EDGES = {"proposed": ("training", "failed"), "training": ("trained", "failed"), "trained": ("recorded", "failed"),
         "recorded": (), "failed": ()}


@dataclass
class Trial:
    """One proxy run of the search; `losses` by valid domain, `achieved` the shares it drew."""

    name: str
    requested: dict[str, float]
    round: int
    status: str = "proposed"
    achieved: dict[str, float] | None = None
    losses: dict[str, float] | None = None
    source: str = "method"  # proposed by the method; "anchor", "verify", or the file it was imported from
    error: str | None = None
    policy: dict[str, Any] | None = None  # an online schedule
    keep_checkpoint: bool = False
    valid: list[str] | None = None  # validation domains (None: every valid domain)
    seed: int | None = None  # None: the proxies' seed
    tokens: int = 0  # trained, from the run's result
    seconds: float = 0.0
    history: list[list] = field(default_factory=list)  # [[status, unix time], ...]

    def __post_init__(self) -> None:
        if self.status not in EDGES:
            raise ValueError(f"trial {self.name}: unknown status {self.status!r}")

    def mark(self, status: str, **values: Any) -> None:
        """Move along one edge of the state machine (no-op if already there); illegal edges are bugs."""
        if status == self.status:
            return
        if status not in EDGES[self.status]:
            raise RuntimeError(f"trial {self.name}: no transition {self.status} -> {status}")
        for key, value in values.items():
            setattr(self, key, value)
        self.status = status
        self.history.append([status, round(time.time(), 3)])

    @property
    def pending(self) -> bool:
        return self.status in ("proposed", "training", "trained")


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


class StudyState:
    """The state file of one study: its identity, runs and the proposer, saved after every change."""

    def __init__(self, path: Path, proposer: Proposer, identity: dict[str, Any]):
        self.path, self.proposer, self.identity = path, proposer, identity
        self.trials: list[Trial] = []
        self.rounds: list[dict[str, Any]] = []  # per finished round: runs, recommendation
        self.wandb_id: str | None = None
        self.logged = 0  # recorded trials already in the wandb run

    def save(self) -> None:
        write_atomic(self.path, json.dumps({
            "version": STATE_VERSION, "identity": self.identity, "trials": [dataclasses.asdict(t) for t in self.trials],
            "rounds": self.rounds, "proposer": self.proposer.state_dict(), "wandb_id": self.wandb_id,
            "logged": self.logged}, indent=1))

    def load(self) -> None:
        """Restore from the state file; another method, space, objective or proxy setting is refused."""
        data = read_yaml(self.path)
        try:
            if data.get("version") != STATE_VERSION:
                raise ConfigError(self.path, f"study state version {data.get('version')!r}, this regmix reads "
                                             f"{STATE_VERSION}")
            old = data["identity"]
            changed = sorted(k for k in set(old) | set(self.identity) if old.get(k) != self.identity.get(k))
            if changed:
                shown = "; ".join(f"{k}: {_short(old.get(k))} -> {_short(self.identity.get(k))}" for k in changed)
                raise ConfigError(self.path, f"a study with other {', '.join(changed)} than the experiment holds now "
                                             f"({shown}); use a new experiment name, or delete {self.path.parent} "
                                             "to start over")
            for trial in data["trials"]:  # a trial's name becomes a config file and a run folder
                safe_name(trial.get("name"), "trial name", self.path)
            self.trials = [Trial(**t) for t in data["trials"]]
            self.rounds, self.wandb_id, self.logged = data["rounds"], data["wandb_id"], int(data["logged"])
            self.proposer.load_state_dict(data["proposer"])
        except ConfigError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(self.path, f"unreadable study state: {exc}") from None

    def next_names(self, n: int, prefix: str = "") -> list[str]:
        """`n` new run names `<prefix>n<i>` after the highest one so far."""
        used = [run_index(t.name[len(prefix):]) for t in self.trials if t.name.startswith(prefix)]
        start = max([i for i in used if isinstance(i, int)], default=0) + 1
        return [f"{prefix}n{i}" for i in range(start, start + n)]

    def recorded(self, *sources: str) -> list[Trial]:
        """Runs told to the proposer; of the given sources only ("method", "anchor", ...), if any."""
        return [t for t in self.trials if t.status == "recorded" and (not sources or t.source in sources)]
