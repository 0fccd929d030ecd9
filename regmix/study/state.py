"""A study's state file, `study.json`: the proposer's state and every run, each a small state machine

    proposed -> training -> trained -> recorded      (any of the first three -> failed)

written atomically after every change, so a study killed at any moment continues where it stopped, with the
proposals it had drawn. This is the one resume rule of every method: a state of another identity (corpus,
objective, space, proxy settings, method or its settings) is refused on resume with one error naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from regmix.core.files import ConfigError, read_yaml, write_atomic
from regmix.core.mixture import Mixture
from regmix.core.schema import run_index, safe_name
from regmix.search.proposer import Proposer

STATE_NAME = "study.json"
STATE_VERSION = 1
EDGES = {"proposed": ("training", "failed"), "training": ("trained", "failed"), "trained": ("recorded", "failed"),
         "recorded": (), "failed": ()}


ANCHOR = "anchor_"  # run name prefix of the natural and uniform runs with seeds


def anchor_name(mixture: str, k: int) -> str:
    """The run of the natural or uniform mixture with the k-th seed (shared by every method of an experiment)."""
    return f"{ANCHOR}{mixture}_s{k}"


def anchor_of(run: str) -> str | None:
    """The anchor mixture (natural, uniform) a run name is a seed of; None for any other run."""
    match = re.fullmatch(rf"{ANCHOR}(natural|uniform)_s\d+", run)
    return match.group(1) if match else None


@dataclass
class Trial:
    """One proxy run of the search; `losses` by valid domain (the held-out part, what it is scored on),
    `probe_losses` on the part methods measure, `achieved` the shares it drew."""

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
    probe_losses: dict[str, float] | None = None
    scale: str | None = None  # "larger", "larger2", ...: trained at that `larger:` scale (Experiment.scales)

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


def _change(key: str, old: Any, new: Any) -> str:
    """How one identity entry changed; of a mapping only the keys that differ (`proxy.max_step: 30 -> 40`)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "; ".join(f"{key}.{k}: {_short(old.get(k))} -> {_short(new.get(k))}" for k in keys)
    return f"{key}: {_short(old)} -> {_short(new)}"


def _check_trial(trial: Trial) -> None:
    """A trial as the runner wrote it: a mixture asked for, and finite losses once trained (a hand edit may not be)."""
    try:
        Mixture.from_dict(trial.requested, "", normalize=True)
    except ConfigError as exc:
        raise ValueError(f"trial {trial.name}: requested {exc.problem}") from None
    for field_name in ("achieved", "losses", "probe_losses"):
        values = getattr(trial, field_name)
        if values is not None and (not isinstance(values, dict) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values.values())):
            raise ValueError(f"trial {trial.name}: {field_name} must map domains to finite numbers, got {values!r}")
    if trial.losses is not None and any(v < 0 for v in trial.losses.values()):
        raise ValueError(f"trial {trial.name}: a loss below 0 in {trial.losses}")


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

    def load(self) -> bool:
        """Restore from the state file; False (nothing restored) for a state of another identity that trained
        nothing of its method (a setting fixed after it failed its checks); one of another identity that did is
        refused."""
        data = read_yaml(self.path)
        try:
            version = data.get("version") if isinstance(data, dict) else None
            if version != STATE_VERSION:
                raise ConfigError(self.path, f"study state version {version!r}, this regmix reads {STATE_VERSION}")
            old = data["identity"]
            changed = sorted(k for k in set(old) | set(self.identity) if old.get(k) != self.identity.get(k))
            if changed:
                trained = [t for t in data["trials"] if t["source"] != "anchor" and t["status"] not in ("proposed",
                                                                                                        "failed")]
                if not trained:
                    return False
                shown = "; ".join(_change(k, old.get(k), self.identity.get(k)) for k in changed)
                raise ConfigError(self.path, f"a study with other {', '.join(changed)} than the experiment holds now "
                                             f"({shown}); use a new experiment name, or delete {self.path.parent} "
                                             "to start over")
            for trial in data["trials"]:  # a trial's name becomes a config file and a run folder
                safe_name(trial.get("name"), "trial name", self.path)
            self.trials = [Trial(**t) for t in data["trials"]]
            for trial in self.trials:
                _check_trial(trial)
            self.rounds, self.wandb_id, self.logged = data["rounds"], data["wandb_id"], int(data["logged"])
            self.proposer.load_state_dict(data["proposer"])
        except ConfigError:
            raise
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(self.path, f"unreadable study state ({type(exc).__name__}: {exc}); delete it to start "
                                         "over (finished runs are not trained again)") from None
        return True

    def next_names(self, n: int, prefix: str = "") -> list[str]:
        """`n` new run names `<prefix>n<i>` after the highest one so far."""
        used = [run_index(t.name[len(prefix):]) for t in self.trials if t.name.startswith(prefix)]
        start = max([i for i in used if isinstance(i, int)], default=0) + 1
        return [f"{prefix}n{i}" for i in range(start, start + n)]

    def recorded(self, *sources: str) -> list[Trial]:
        """Runs told to the proposer; of the given sources only ("method", "anchor", ...), if any."""
        return [t for t in self.trials if t.status == "recorded" and (not sources or t.source in sources)]
