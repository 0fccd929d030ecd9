"""Collect a sweep's proxy runs into RegMix's two CSVs, matching runs to configs by name.

One row per proxy (layout: `regmix.core.observations`), index = i of config n<i> (other names are kept as
they are). A row's mixture is the one its run achieved, the shares of the sequences it actually drew,
because that is what its losses answer to; `requested` writes the one its config asked for instead.
Losses come from local run folders (`<runs>/<name>/result.json`), wandb offline run files, or a
wandb project online. A run that is missing, failed, unfinished, duplicated or without a config is
listed in the report, never dropped silently; `strict` makes any of them an error.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from regmix.cli import ArgumentParser, file_tag, integer_at_least, run_command
from regmix.core.files import ConfigError, check_output_folder
from regmix.core.observations import Observations
from regmix.core.schema import (
    COLLECT_SCALE,
    DEFAULT_CORPUS,
    STUDY_FOLDER,
    corpus_tag,
    loss_column,
    loss_csv_name,
    mixture_csv_name,
    run_index,
    runs_folder,
)
from regmix.settings.run_config import RunConfig, load_run_config, run_config_paths
from regmix.study.run_losses import RunLosses, local_losses, offline_losses, online_losses


@dataclass
class CollectReport:
    """What happened to every config and every run found."""

    collected: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    duplicated: dict[str, list[str]] = field(default_factory=dict)
    orphans: dict[str, str] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)  # run files that name no run, by file

    def problems(self) -> list[str]:
        """One line per run that is not (cleanly) in the CSVs."""
        lines = [f"missing: {n} (no run found)" for n in self.missing]
        lines += [f"failed: {n}: {why}" for n, why in self.failed.items()]
        lines += [f"duplicated: {n}: {', '.join(srcs)}" for n, srcs in self.duplicated.items()]
        lines += [f"no config: {n} ({src})" for n, src in self.orphans.items()]
        lines += [f"unreadable: {src}: {why}" for src, why in self.unreadable.items()]
        return lines

    def summary(self) -> str:
        head = (f"collected {len(self.collected)} runs; missing {len(self.missing)}, failed {len(self.failed)}, "
                f"duplicated {len(self.duplicated)}, without config {len(self.orphans)}, "
                f"unreadable files {len(self.unreadable)}")
        return "\n".join([head, *("  " + line for line in self.problems())])


@dataclass
class Collection:
    """The collected runs and what happened to the others."""

    observations: Observations
    report: CollectReport
    corpora: tuple[str, ...] = ()  # the prepared corpora the collected runs recorded they trained on

    @property
    def corpus(self) -> str:
        """The loss CSV's corpus tag: the runs' one corpus; DEFAULT_CORPUS where they recorded none, or several."""
        return corpus_tag(self.corpora[0]) if len(self.corpora) == 1 else DEFAULT_CORPUS


def _targets(configs: Sequence[RunConfig], found: Iterable[RunLosses]) -> list[str]:
    """The configs' valid domains, or every one a run logged when the configs name none."""
    targets = list(dict.fromkeys(d for c in configs for d in c.valid))
    return targets or sorted({d for r in found for d in r.losses})


def collect(configs: str | os.PathLike, runs: str | os.PathLike | None = None,
            wandb_dir: str | os.PathLike | None = None, project: str | None = None,
            step: int | None = None, strict: bool = False, requested: bool = False,
            evaluations: bool = False) -> Collection:
    """Match every config of the sweep folder `configs` to its run's losses, from any of the sources.

    Each row's mixture is the run's achieved one (the config's where the run recorded none), or the
    config's with `requested`. With `evaluations`, every evaluation a finished run logged is a row (index
    `<run>@<step>`), at the tokens trained by then: what the scale-aware regressors learn the token axis from.
    """
    if evaluations and (step is not None or project is not None):
        raise ValueError("every evaluation as a row is read from local runs and wandb offline files, at no one step")
    configs_by_name = {p.stem: load_run_config(p) for p in run_config_paths(configs)}
    if not configs_by_name:
        raise ConfigError(configs, "no config files (*.yaml) in this folder (python -m regmix.synthesize writes them)")
    if runs is None and wandb_dir is None and project is None:
        raise ValueError("give at least one loss source: --runs, --wandb-dir or --project")
    found: list[RunLosses] = []
    if runs is not None:
        found += local_losses(runs, step, evaluations)
    if wandb_dir is not None:
        found += offline_losses(wandb_dir, step, evaluations)
    if project is not None:
        found += online_losses(project, step)

    report = CollectReport()
    by_name: dict[str, list[RunLosses]] = {}
    for entry in found:
        if entry.name in configs_by_name:
            by_name.setdefault(entry.name, []).append(entry)
        elif not entry.name and entry.problem:
            report.unreadable[entry.source] = entry.problem
        else:
            report.orphans[entry.name or "<unnamed>"] = entry.source
    targets = _targets(list(configs_by_name.values()), found)
    domains = list(dict.fromkeys(d for c in configs_by_name.values() for d in c.train.domains))

    mixture_rows, loss_rows, index, corpora, scales = [], [], [], [], []
    for name, config in configs_by_name.items():
        entries = by_name.get(name, [])
        if not entries:
            report.missing.append(name)
            continue
        sources = list(dict.fromkeys(e.source for e in entries))  # a run's evaluations share its source
        if len(sources) > 1:
            report.duplicated[name] = sources
        for e in entries:  # what the run was asked for, not what it drew, must be what the config holds
            if e.problem is None and e.requested is not None and not e.requested.close_to(config.train):
                e.problem = "trained on another mixture than its config holds now (configs synthesized again?)"
        usable = [e for e in entries if e.problem is None and (step is not None or evaluations or e.step is None
                                                                or e.step >= config.training.max_step)]
        if not usable:
            report.failed[name] = "; ".join(
                f"{e.problem or f'unfinished: last step {e.step} < max_step {config.training.max_step}'} ({e.source})"
                for e in entries)
            continue
        chosen = (list({e.step: e for e in sorted(usable, key=lambda e: e.step or 0)}.values()) if evaluations
                  else [max(usable, key=lambda e: e.step if e.step is not None else -1)])
        complete = [e for e in chosen if all(math.isfinite(e.losses.get(d, math.nan)) for d in targets)]
        if not complete:
            absent = [d for d in targets if not math.isfinite(chosen[-1].losses.get(d, math.nan))]
            report.failed[name] = f"no finite value for {[loss_column(d) for d in absent]} ({chosen[-1].source})"
            continue
        try:
            rows = [((None if requested else e.achieved) or config.train).vector(domains) for e in complete]
        except ValueError as exc:  # a run (of another corpus?) that drew from domains no config has
            report.failed[name] = f"achieved mixture: {exc} ({complete[-1].source})"
            continue
        report.collected.append(name)
        for entry, row in zip(complete, rows):
            mixture_rows.append(row)
            corpora.append(entry.corpus)
            scales.append(entry.scale)
            index.append(f"{name}@{entry.step}" if evaluations else run_index(name))
            loss_rows.append([entry.losses[d] for d in targets])

    if strict and report.problems():
        raise ConfigError(configs, "runs are not all usable (--strict):\n" + "\n".join(report.problems()))
    if not report.collected:  # CSVs without a run would replace good ones and fail at fit
        problems = sorted(report.problems(), key=lambda line: line.startswith("missing:"))  # the telling ones first
        more = f"; {len(problems) - 3} more" if len(problems) > 3 else ""
        sources = ", ".join(str(s) for s in (runs, wandb_dir, project) if s is not None)
        raise ConfigError(sources, f"no usable run for any of the {len(configs_by_name)} configs in {configs} "
                                   f"({'; '.join(problems[:3])}{more}); point the sources at this sweep's runs, "
                                   "or train them first")
    observations = Observations(tuple(domains), tuple(targets), tuple(index),
                                np.array(mixture_rows, dtype=np.float64).reshape(len(index), len(domains)),
                                np.array(loss_rows, dtype=np.float64).reshape(len(index), len(targets)),
                                np.array(scales) if all(s is not None for s in scales) else None)
    return Collection(observations, report, tuple(sorted({str(c) for c in corpora if c})))


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="regmix collect", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", type=Path, required=True, help="sweep folder of n<i>.yaml configs")
    p.add_argument("--runs", type=Path, help="local sweep output: <runs>/<name>/result.json (default, without "
                                             "--wandb-dir or --project: runs/<name of the --configs folder>, "
                                             "where `regmix train` puts them)")
    p.add_argument("--wandb-dir", type=Path, help="folder holding wandb offline runs (offline-run-*/run-*.wandb)")
    p.add_argument("--project", help="wandb project (entity/project) to read online")
    p.add_argument("--step", type=integer_at_least(0),
                   help="take the losses logged at this step instead of the last ones")
    p.add_argument("--evaluations", action="store_true",
                   help="every evaluation of each finished run as a row (index <run>@<step>) at the tokens trained "
                        "by then, for the scale-aware regressors (fit --model scaling); local runs or --wandb-dir")
    p.add_argument("--output", type=Path, default=Path(STUDY_FOLDER),
                   help="folder for the two CSVs, where `regmix fit` reads them (default: %(default)s)")
    p.add_argument("--scale", type=file_tag, default=COLLECT_SCALE,
                   help="proxy scale in the file names (default: %(default)s)")
    p.add_argument("--corpus", type=file_tag,
                   help=f"corpus tag in the loss file name (default: the name of the prepared corpus the runs "
                        f"recorded they trained on; {DEFAULT_CORPUS} for runs that recorded none)")
    p.add_argument("--strict", action="store_true", help="fail if any run is missing, failed, duplicated or orphaned")
    p.add_argument("--requested", action="store_true",
                   help="write the mixture each config asked for instead of the one its run achieved "
                        "(the shares of the sequences it drew)")
    return p


def main(argv: Sequence[str] | None = None) -> Collection:
    """The command: collect, report, write both CSVs (nothing is written unless at least one run is usable)."""
    args = _parser().parse_args(argv)
    check_output_folder(args.output)
    runs = args.runs
    if runs is None and args.wandb_dir is None and args.project is None and args.configs.is_dir():
        runs = runs_folder(args.configs)  # (a --configs that is no folder is collect's to report)
        if not runs.is_dir():
            raise ConfigError(runs, "no such runs folder, where `regmix train` puts the runs of --configs; give the "
                                    "loss source: --runs, --wandb-dir or --project")
    collection = collect(args.configs, runs, args.wandb_dir, args.project, args.step, args.strict, args.requested,
                         args.evaluations)
    report = collection.report
    print(report.summary())
    if len(collection.corpora) > 1 and args.corpus is None:
        print(f"warning: the runs trained on several corpora {list(collection.corpora)}; the loss CSV is named "
              f"{DEFAULT_CORPUS!r} (--corpus names it)", file=sys.stderr)
    paths = collection.observations.save(args.output / mixture_csv_name(args.scale),
                                         args.output / loss_csv_name(args.corpus or collection.corpus, args.scale))
    for path in paths:
        print(f"wrote {path}")
    if report.problems():
        print(f"warning: {len(report.problems())} runs or run files are not in the CSVs (listed above; "
              "--strict makes that an error)", file=sys.stderr)
    return collection


if __name__ == "__main__":
    raise SystemExit(run_command(main))
