"""A proxy run's validation losses as each source holds them: local run folders (`<runs>/<name>/result.json` and
its metrics.jsonl), wandb offline run files, or a wandb project online; one `RunLosses` per run (per evaluation
with `every`), with what the run recorded of its mixture, corpus and scale. `regmix.study.collect` matches them
to configs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.results import load_result, recorded_scale
from regmix.core.schema import (
    CORPUS_SETTING,
    HISTORY_NAME,
    RESULT_NAME,
    STEP,
    achieved_domain,
    loss_domain,
)
from regmix.settings.run_config import run_config_from_dict

STEP_KEYS = (STEP, "step")


@dataclass
class RunLosses:
    """Validation losses of one run from one source; `problem` says why it cannot be used."""

    name: str
    source: str
    losses: dict[str, float]  # by valid domain
    step: int | None = None
    problem: str | None = None
    requested: Mixture | None = None  # the mixture the run recorded it was asked for, where it did
    achieved: Mixture | None = None  # the shares of the sequences it drew, where it logged them
    corpus: str | None = None  # the name of the prepared corpus it trained on, where it recorded one
    scale: tuple[float, float] | None = None  # (non-embedding parameters, tokens trained), where it recorded them

    def record(self, settings: Mapping[str, Any]) -> None:
        """What the run's settings (result.json's, or its wandb config) say about its corpus and scale."""
        self.corpus = settings.get(CORPUS_SETTING)
        self.scale = recorded_scale(settings, self.step)


def _step(row: Mapping[str, Any]) -> int | None:
    for key in STEP_KEYS:
        if isinstance(row.get(key), (int, float)):
            return int(row[key])
    return None


def _losses_from_history(name: str, source: str, history: Sequence[Mapping[str, Any]],
                         step: int | None = None) -> RunLosses:
    """Validation losses and achieved mixture from logged rows: the last ones, or those logged at `step`."""
    if step is not None:
        history = [row for row in history if _step(row) == step]
        if not history:
            return RunLosses(name, source, {}, None, f"nothing logged at step {step}")
    losses: dict[str, float] = {}
    achieved: dict[str, float] = {}
    last_step = None
    for row in history:
        row_step = _step(row)
        numbers = {k: float(v) for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        for key, value in numbers.items():
            domain = loss_domain(key)
            if domain is not None:
                losses[domain] = value
                last_step = row_step if row_step is not None else last_step
        achieved = {d: v for k, v in numbers.items() if (d := achieved_domain(k)) is not None} or achieved
    if not losses:
        return RunLosses(name, source, {}, None, "no validation loss logged")
    try:
        drawn = Mixture.from_dict(achieved, source, normalize=True) if achieved else None
    except ConfigError as exc:
        return RunLosses(name, source, {}, None, f"unreadable achieved mixture: {exc.problem}")
    return RunLosses(name, source, losses, last_step, achieved=drawn)


def _recorded_mixture(run_config: Mapping[str, Any], source: str, name: str) -> Mixture | None:
    """The training mixture a wandb run logged in its config (None where it logged none we can read)."""
    try:
        return run_config_from_dict(run_config, source, name).train
    except ConfigError:
        return None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(path, f"unreadable history: {exc}") from None


def _each_evaluation(name: str, source: str, history: Sequence[Mapping[str, Any]]) -> list[RunLosses]:
    """An entry per step the run logged validation losses at (for scale-aware regressors: rows at more token
    counts than the runs' last)."""
    steps = sorted({s for row in history if (s := _step(row)) is not None and any(map(loss_domain, row))})
    return [_losses_from_history(name, source, history, s) for s in steps]


def local_losses(runs: str | os.PathLike, step: int | None = None, every: bool = False) -> list[RunLosses]:
    """One entry per run folder under `runs` (a folder without result.json is an unfinished run); with `every`,
    one per evaluation of each finished run."""
    if not Path(runs).is_dir():
        raise ConfigError(runs, "no such runs folder")
    found = []
    for run_dir in sorted(p for p in Path(runs).iterdir() if p.is_dir() and not p.name.startswith(".")):
        source = str(run_dir / RESULT_NAME)
        if not (run_dir / RESULT_NAME).exists():
            found.append(RunLosses(run_dir.name, source, {}, None, "no result.json (unfinished or crashed)"))
            continue
        try:
            result = load_result(run_dir)
        except ConfigError as exc:
            found.append(RunLosses(run_dir.name, source, {}, None, str(exc)))
            continue
        if every and result.status == "finished":
            entries = _each_evaluation(result.name, str(run_dir / HISTORY_NAME), _read_jsonl(run_dir / HISTORY_NAME))
            for entry in entries:
                entry.requested = result.requested
                entry.record(result.settings)
            found += entries
            continue
        if step is not None:
            entry = _losses_from_history(result.name, str(run_dir / HISTORY_NAME),
                                         _read_jsonl(run_dir / HISTORY_NAME), step)
        elif result.status != "finished":
            entry = RunLosses(result.name, source, {}, result.step, f"status {result.status}: {result.error}")
        else:  # results written before achieved mixtures were recorded have none: the config's is used
            entry = RunLosses(result.name, source, dict(result.valid_losses), result.step, achieved=result.achieved)
        entry.requested = result.requested
        entry.record(result.settings)
        found.append(entry)
    return found


def offline_losses(root: str | os.PathLike, step: int | None = None, every: bool = False) -> list[RunLosses]:
    """One entry per wandb run below `root` (per evaluation with `every`); the run's display name is the config
    name.

    A resumed run writes one file per session under the same run id: their histories are joined
    (in path order, which is time order for offline-run-<timestamp> folders), not counted twice. A
    damaged file counts for what it holds before the damage: an earlier session's (a killed run, resumed)
    is joined like the others, a damaged last session fails its run, naming the file; a file that names
    no run is an unnamed entry (reported as unreadable).
    """
    from regmix.train import wandb_runs

    if not Path(root).is_dir():
        raise ConfigError(root, "no such folder of wandb offline runs")
    found, sessions = [], {}
    for path in wandb_runs.find_offline_runs(root):
        try:
            run = wandb_runs.read_offline_run(path, partial=True)
        except ConfigError as exc:
            found.append(RunLosses("", str(path), {}, None, exc.problem))
            continue
        if not (run.name or run.run_id):
            found.append(RunLosses("", str(path), {}, None, run.damage or "names no run"))
            continue
        sessions.setdefault((run.name or run.run_id, run.run_id), []).append((path, run))
    for (name, _), parts in sessions.items():
        history = [row for _, run in parts for row in run.history]
        source = ", ".join(str(p) for p, _ in parts)
        last_path, last = parts[-1]
        entries = _each_evaluation(name, source, history) if every else [
            _losses_from_history(name, source, history, step)]
        for entry in entries:
            if last.damage:
                entry.problem = f"damaged run file ({last_path.name}, its last session): {last.damage}"
            entry.requested = _recorded_mixture(last.config, source, name)
            entry.record(last.config)
            found.append(entry)
    return found


def online_losses(project: str, step: int | None = None) -> list[RunLosses]:
    """One entry per run of a wandb project (`entity/project`); needs a reachable wandb server."""
    import wandb

    found = []
    for run in wandb.Api().runs(project):
        source = f"wandb:{project}/{run.id}"
        if run.state != "finished":
            found.append(RunLosses(run.name, source, {}, None, f"wandb state {run.state}"))
        else:
            found.append(_losses_from_history(run.name, source, list(run.scan_history()), step))
            found[-1].requested = _recorded_mixture(dict(run.config), source, run.name)
            found[-1].record(dict(run.config))
    return found
