"""Where a run's metrics go: metrics.jsonl always, wandb (online or offline files) unless off.

wandb gets RegMix's metric names (`metric/<domain>_val_loss`). A run logs to wandb as it trains
(`live`), or, where one process trains K runs at once (wandb allows one run per process at a time),
keeps its train-loss rows in the checkpoint and replays its history as its own wandb run at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import netrc
import os
import sys
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from regmix.core.files import ConfigError, write_atomic
from regmix.core.schema import HISTORY_NAME, LEARNING_RATE, STEP, TRAIN_LOSS, weight_column
from regmix.settings.run_config import RunConfig

WANDB_MODES = ("auto", "online", "offline", "off")


def resolve_wandb_mode(mode: str) -> str:
    """`auto`: WANDB_MODE if set, else online with a wandb login (API key or netrc), else offline."""
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {WANDB_MODES}, not {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("disabled", "off"):
        return "off"
    if env in ("offline", "dryrun", "online", "run"):
        return "online" if env in ("online", "run") else "offline"
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        return "online" if netrc.netrc(os.environ.get("NETRC")).authenticators(host) else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


def train_row(step: int, loss: float, lr: float, weights: Mapping[str, float] | None) -> dict[str, Any]:
    return {STEP: step, TRAIN_LOSS: loss, LEARNING_RATE: lr,
            **{weight_column(d): round(w, 6) for d, w in (weights or {}).items()}}


def wandb_error(mode: str, exc: Exception) -> ConfigError:
    return ConfigError(f"--wandb {mode}", f"wandb cannot log: {exc} (check WANDB_API_KEY or `wandb login`, or use "
                                          "--wandb offline)")


def check_wandb(mode: str) -> None:
    """Before any run: online logging that cannot work (no or a malformed API key) is one error, not a failed
    run each. Checked locally (no server is contacted)."""
    if resolve_wandb_mode(mode) != "online":
        return
    import wandb

    try:
        with contextlib.redirect_stderr(io.StringIO()):  # wandb's "credentials loaded" notes
            wandb.login(verify=False)
    except wandb.errors.Error as exc:
        raise wandb_error(mode, exc) from None


class RunLog:
    """A run's metrics.jsonl and wandb run. `enabled=False` (other Fabric ranks) logs nothing."""

    def __init__(self, config: RunConfig, run_dir: Path, mode: str, extra: dict[str, Any], project: str,
                 group: str | None, live: bool = True, enabled: bool = True):
        self.config, self.run_dir, self.extra = config, run_dir, extra
        self.mode = resolve_wandb_mode(mode) if enabled else "off"
        self.project, self.group, self.live, self.enabled = project, group, live, enabled
        self.history_path = run_dir / HISTORY_NAME
        self.wandb: Any = None
        self.run_id: str | None = None
        self.train_rows: list[list[Any]] = []  # [step, loss, lr, weights] not yet in wandb (deferred logging)

    def start(self, saved: dict[str, Any] | None) -> list[dict[str, Any]]:
        """Open wandb (resuming its run id from a checkpoint's `log`); the evaluations kept so far."""
        if saved:
            self.run_id, self.train_rows = saved.get("wandb_id"), [list(r) for r in saved.get("train_rows", [])]
        if self.live and self.mode != "off":
            self._open()
        return self._history(int(saved["step"]) if saved else 0)

    def _open(self) -> None:
        import wandb

        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False,
                                  disable_git=True, x_save_requirements=False)
        try:
            self.wandb = wandb.init(project=self.project, group=self.group, name=self.config.name, id=self.run_id,
                                    resume="allow", dir=self.run_dir, mode=self.mode,
                                    config={**self.config.to_yaml_dict(), **self.extra}, reinit="finish_previous",
                                    settings=settings)
        except wandb.errors.Error as exc:  # a bad API key, no server: the user's to fix, not a crash
            raise wandb_error(self.mode, exc) from None
        self.run_id = self.wandb.id
        self.wandb.define_metric(STEP)
        self.wandb.define_metric("metric/*", step_metric=STEP)

    def _history(self, up_to_step: int) -> list[dict[str, Any]]:
        """Evaluations logged so far, dropping any logged after the checkpoint we resume from."""
        if not self.enabled or not self.history_path.exists():
            return []
        lines = self.history_path.read_text(encoding="utf-8", errors="replace").splitlines()
        rows = []
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or not isinstance(row.get(STEP), int):
                    raise ValueError("not an evaluation row")
            except ValueError:  # json's errors are ValueErrors too
                if line.strip() and number < len(lines):  # a cut-off last line is what a crash leaves: no news
                    print(f"warning: {self.history_path}:{number}: damaged line skipped, the rows around it kept",
                          file=sys.stderr)
                continue
            rows.append(row)
        kept = [r for r in rows if r[STEP] <= up_to_step]
        if len(kept) != len(lines):
            write_atomic(self.history_path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def state(self, step: int) -> dict[str, Any]:
        """What the checkpoint keeps of the log."""
        return {"wandb_id": self.run_id, "train_rows": [r for r in self.train_rows if r[0] <= step]}

    def train(self, step: int, loss: float, lr: float, weights: Mapping[str, float] | None = None) -> None:
        """A step's train loss and learning rate; `weights`: the mixture of the step, where it changed."""
        if self.wandb is not None:
            self.wandb.log(train_row(step, loss, lr, weights))
        elif self.mode != "off":
            self.train_rows.append([step, loss, lr, dict(weights or {})])

    def evaluation(self, row: dict[str, Any]) -> None:
        if not self.enabled:
            return
        # appended (a crash cuts at most the last line), never through a symbolic link to a file elsewhere
        fd = os.open(self.history_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o666)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.wandb is not None:
            self.wandb.log(row)

    def finish(self, failed: bool) -> None:
        if self.mode == "off":
            return
        if self.wandb is None:
            self._replay()
        sync_file, offline = self.wandb.settings.sync_file, self.wandb.settings.mode == "offline"
        self.wandb.finish(exit_code=1 if failed else 0)
        if offline:
            from regmix.train.wandb_runs import wait_until_complete  # wandb's protobufs, imported with wandb

            wait_until_complete(sync_file)

    def _replay(self) -> None:
        """Send a deferred run's train rows and evaluations to a wandb run of its own, in step order."""
        self._open()
        evaluations = {row[STEP]: row for row in self._history(10**18)}
        for step, loss, lr, *weights in self.train_rows:
            self.wandb.log(train_row(step, loss, lr, weights[0] if weights else None))
            if step in evaluations:
                self.wandb.log(evaluations.pop(step))
        for row in evaluations.values():
            self.wandb.log(row)
