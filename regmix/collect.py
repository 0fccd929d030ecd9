"""Collect a sweep's proxy runs into RegMix's two CSVs, matching runs to configs by name.

`train_mixture_<scale>.csv` (index, train_<domain>...) and `train_<corpus>_loss_<scale>.csv`
(index, metric/<valid>_val_loss...), one row per proxy, index = i of config n<i> (other names are
kept as they are). Losses come from local run folders (`<runs>/<name>/result.json`), wandb offline
run files, or a wandb project online. A run that is missing, failed, unfinished, duplicated or
without a config is listed in the report, never dropped silently; `strict` makes any of them an error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from regmix.mixture import TRAIN_PREFIX, ConfigError, Mixture, RunConfig, load_run_config, run_config_from_dict, \
    run_config_paths
from regmix.results import HISTORY_NAME, RESULT_NAME, load_result, metric_name

STEP_KEYS = ("trainer/global_step", "step")
METRIC = re.compile(r"^metric/(.+)_val_loss$")


@dataclass
class RunLosses:
    """Validation losses of one run from one source; `problem` says why it cannot be used."""

    name: str
    source: str
    losses: dict[str, float]
    step: int | None = None
    problem: str | None = None
    mixture: Mixture | None = None  # the training mixture the run recorded, where it did


@dataclass
class CollectReport:
    """What happened to every config and every run found."""

    collected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    duplicated: dict[str, list[str]] = field(default_factory=dict)
    orphans: dict[str, str] = field(default_factory=dict)

    def problems(self) -> list[str]:
        """One line per run that is not (cleanly) in the CSVs."""
        lines = [f"missing: {n} (no run found)" for n in self.missing]
        lines += [f"failed: {n}: {why}" for n, why in self.failed.items()]
        lines += [f"duplicated: {n}: {', '.join(srcs)}" for n, srcs in self.duplicated.items()]
        lines += [f"no config: {n} ({src})" for n, src in self.orphans.items()]
        return lines

    def summary(self) -> str:
        head = (f"collected {len(self.collected)} runs; missing {len(self.missing)}, failed {len(self.failed)}, "
                f"duplicated {len(self.duplicated)}, without config {len(self.orphans)}")
        return "\n".join([head, *("  " + line for line in self.problems())])


@dataclass
class Collection:
    """The two tables (same rows, same order) and the report."""

    mixtures: pd.DataFrame
    losses: pd.DataFrame
    report: CollectReport

    def save(self, folder: str | os.PathLike, scale: str = "1m", corpus: str = "pile") -> tuple[Path, Path]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        mixture_path = folder / f"train_mixture_{scale}.csv"
        loss_path = folder / f"train_{corpus}_loss_{scale}.csv"
        self.mixtures.to_csv(mixture_path)
        self.losses.to_csv(loss_path)
        return mixture_path, loss_path


def run_index(name: str) -> int | str:
    """RegMix's row index: i for config n<i>, the name itself otherwise."""
    match = re.fullmatch(r"n(\d+)", name)
    return int(match.group(1)) if match else name


def _step(row: Mapping[str, Any]) -> int | None:
    for key in STEP_KEYS:
        if isinstance(row.get(key), (int, float)):
            return int(row[key])
    return None


def losses_from_history(name: str, source: str, history: Sequence[Mapping[str, Any]],
                        step: int | None = None) -> RunLosses:
    """Validation losses from logged rows: the last value of each metric, or the values logged at `step`."""
    if step is not None:
        history = [row for row in history if _step(row) == step]
        if not history:
            return RunLosses(name, source, {}, None, f"nothing logged at step {step}")
    losses: dict[str, float] = {}
    last_step = None
    for row in history:
        row_step = _step(row)
        for key, value in row.items():
            if METRIC.match(key) and isinstance(value, (int, float)) and not isinstance(value, bool):
                losses[key] = float(value)
                last_step = row_step if row_step is not None else last_step
    if not losses:
        return RunLosses(name, source, {}, None, "no validation loss logged")
    return RunLosses(name, source, losses, last_step)


def recorded_mixture(run_config: Mapping[str, Any], source: str, name: str) -> Mixture | None:
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


def local_losses(runs: str | os.PathLike, step: int | None = None) -> list[RunLosses]:
    """One entry per run folder under `runs` (a folder without result.json is an unfinished run)."""
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
        if step is not None:
            entry = losses_from_history(result.name, str(run_dir / HISTORY_NAME), _read_jsonl(run_dir / HISTORY_NAME),
                                        step)
        elif result.status != "finished":
            entry = RunLosses(result.name, source, {}, result.step, f"status {result.status}: {result.error}")
        else:
            entry = RunLosses(result.name, source, result.metrics(), result.step)
        entry.mixture = result.mixture
        found.append(entry)
    return found


def offline_losses(root: str | os.PathLike, step: int | None = None) -> list[RunLosses]:
    """One entry per wandb run below `root`; the run's display name is the config name.

    A resumed run writes one file per session under the same run id: their histories are joined
    (in path order, which is time order for offline-run-<timestamp> folders), not counted twice.
    """
    from regmix import wandb_runs

    found, sessions = [], {}
    for path in wandb_runs.find_offline_runs(root):
        try:
            run = wandb_runs.read_offline_run(path)
        except ConfigError as exc:
            found.append(RunLosses(path.parent.name, str(path), {}, None, str(exc)))
            continue
        sessions.setdefault((run.name or run.run_id, run.run_id), []).append((path, run))
    for (name, _), parts in sessions.items():
        history = [row for _, run in parts for row in run.history]
        source = ", ".join(str(p) for p, _ in parts)
        found.append(losses_from_history(name, source, history, step))
        found[-1].mixture = recorded_mixture(parts[-1][1].config, source, name)
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
            found.append(losses_from_history(run.name, source, list(run.scan_history()), step))
            found[-1].mixture = recorded_mixture(dict(run.config), source, run.name)
    return found


def _metric_columns(configs: Sequence[RunConfig], found: Iterable[RunLosses]) -> list[str]:
    columns = list(dict.fromkeys(metric_name(d) for c in configs for d in c.valid))
    return columns or sorted({k for r in found for k in r.losses})


def collect(configs: str | os.PathLike, runs: str | os.PathLike | None = None,
            wandb_dir: str | os.PathLike | None = None, project: str | None = None,
            step: int | None = None, strict: bool = False) -> Collection:
    """Match every config of the sweep folder `configs` to its run's losses, from any of the sources."""
    configs_by_name = {p.stem: load_run_config(p) for p in run_config_paths(configs)}
    if not configs_by_name:
        raise ConfigError(configs, "no config files (*.yaml) in this folder")
    if runs is None and wandb_dir is None and project is None:
        raise ValueError("give at least one loss source: runs, wandb_dir or project")
    found: list[RunLosses] = []
    if runs is not None:
        found += local_losses(runs, step)
    if wandb_dir is not None:
        found += offline_losses(wandb_dir, step)
    if project is not None:
        found += online_losses(project, step)

    report = CollectReport()
    by_name: dict[str, list[RunLosses]] = {}
    for entry in found:
        if entry.name in configs_by_name:
            by_name.setdefault(entry.name, []).append(entry)
        else:
            report.orphans[entry.name or "<unnamed>"] = entry.source
    columns = _metric_columns(list(configs_by_name.values()), found)
    domains = list(dict.fromkeys(d for c in configs_by_name.values() for d in c.train.domains))

    mixture_rows, loss_rows, index = [], [], []
    for name, config in configs_by_name.items():
        entries = by_name.get(name, [])
        if not entries:
            report.missing.append(name)
            continue
        if len(entries) > 1:
            report.duplicated[name] = [e.source for e in entries]
        for e in entries:
            if e.problem is None and e.mixture is not None and not e.mixture.close_to(config.train):
                e.problem = "trained on another mixture than its config holds now (configs synthesized again?)"
        usable = [e for e in entries if e.problem is None and (step is not None or e.step is None
                                                                or e.step >= config.training.max_step)]
        if not usable:
            report.failed[name] = "; ".join(
                f"{e.problem or f'unfinished: last step {e.step} < max_step {config.training.max_step}'} ({e.source})"
                for e in entries)
            continue
        chosen = max(usable, key=lambda e: e.step if e.step is not None else -1)
        absent = [c for c in columns if not math.isfinite(chosen.losses.get(c, math.nan))]
        if absent:
            report.failed[name] = f"no finite value for {absent} ({chosen.source})"
            continue
        report.collected.append(name)
        index.append(run_index(name))
        mixture_rows.append(config.train.vector(domains))
        loss_rows.append([chosen.losses[c] for c in columns])

    if strict and report.problems():
        raise ConfigError(configs, "runs are not all usable (--strict):\n" + "\n".join(report.problems()))
    idx = pd.Index(index, name="index")
    mixtures = pd.DataFrame(np.array(mixture_rows).reshape(len(index), len(domains)), index=idx,
                            columns=[TRAIN_PREFIX + d for d in domains])
    losses = pd.DataFrame(np.array(loss_rows).reshape(len(index), len(columns)), index=idx, columns=columns)
    return Collection(mixtures, losses, report)


def read_csvs(mixture_csv: str | os.PathLike, loss_csv: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame]:
    """RegMix's two CSVs as (mixtures with bare domain names as columns, losses), rows matched by index.

    Rows present in only one file are an error naming both files: a silent inner join would hide
    missing runs, and matching by position would pair mixtures with the wrong losses.
    """
    tables = []
    for path in (mixture_csv, loss_csv):
        try:
            table = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(path, f"cannot read CSV: {exc}") from None
        if "index" not in table.columns:
            raise ConfigError(path, "no 'index' column (RegMix's CSV layout: index, <columns>...)")
        if table["index"].duplicated().any():
            raise ConfigError(path, f"duplicated index values {sorted(set(table['index'][table['index'].duplicated()]))}")
        values = table.drop(columns="index").apply(pd.to_numeric, errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if bad.any():
            row, col = map(int, np.argwhere(bad)[0])
            raise ConfigError(path, f"{int(bad.sum())} values are not finite numbers, first in row "
                                    f"{table['index'].iloc[row]}, column {values.columns[col]!r}: "
                                    f"{table[values.columns[col]].iloc[row]!r}")
        table[values.columns] = values
        tables.append(table.set_index("index"))
    mixtures, losses = tables
    bad = [c for c in mixtures.columns if not c.startswith(TRAIN_PREFIX)]
    if bad:
        raise ConfigError(mixture_csv, f"columns {bad} are not train_<domain>")
    if not all(METRIC.match(c) for c in losses.columns):
        raise ConfigError(loss_csv, f"columns {[c for c in losses.columns if not METRIC.match(c)]} "
                                    "are not metric/<domain>_val_loss")
    only_m = mixtures.index.difference(losses.index)
    only_l = losses.index.difference(mixtures.index)
    if len(only_m) or len(only_l):
        raise ConfigError(loss_csv, f"rows do not match {mixture_csv}: only in mixtures {list(only_m)[:10]}, "
                                    f"only in losses {list(only_l)[:10]}")
    mixtures = mixtures.rename(columns=lambda c: c[len(TRAIN_PREFIX):])
    return mixtures, losses.loc[mixtures.index]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m regmix.collect", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", type=Path, required=True, help="sweep folder of n<i>.yaml configs")
    p.add_argument("--runs", type=Path, help="local sweep output: <runs>/<name>/result.json")
    p.add_argument("--wandb-dir", type=Path, help="folder holding wandb offline runs (offline-run-*/run-*.wandb)")
    p.add_argument("--project", help="wandb project (entity/project) to read online")
    p.add_argument("--step", type=int, help="take the losses logged at this step instead of the last ones")
    p.add_argument("--output", type=Path, default=Path("data"), help="folder for the two CSVs (default: data)")
    p.add_argument("--scale", default="1m", help="proxy scale in the file names (default: 1m)")
    p.add_argument("--corpus", default="pile", help="corpus tag in the loss file name (default: pile)")
    p.add_argument("--strict", action="store_true", help="fail if any run is missing, failed, duplicated or orphaned")
    return p


def main(argv: Sequence[str] | None = None) -> Collection:
    args = _parser().parse_args(argv)
    try:
        collection = collect(args.configs, args.runs, args.wandb_dir, args.project, args.step, args.strict)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(collection.report.summary())
    for path in collection.save(args.output, args.scale, args.corpus):
        print(f"wrote {path}")
    return collection


if __name__ == "__main__":
    main()
