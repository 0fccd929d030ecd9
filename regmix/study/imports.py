"""Runs a study starts from: a run folder (a RegMix sweep's `proxies/`) or a RegMix CSV pair, checked
against the study's proxy settings, domains and objective before they join."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Sequence

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.observations import read_csvs
from regmix.core.results import load_result
from regmix.core.schema import RESULT_NAME
from regmix.settings.training import TrainingSettings

# settings a run must share with the search's proxies for its loss to compare
COMPARABLE = ("model_name", "max_step", "block_size", "global_batch_size", "learning_rate", "lr_schedule",
              "eval_tokens", "probe_share", "split_seed")


def imported_runs(start_from: str | Sequence[str], domains: Sequence[str], objective: Objective,
                  proxy: TrainingSettings) -> list[tuple[str, Mixture, dict[str, float], str]]:
    """(name, achieved mixture, valid losses, source) of the finished runs of a run folder or a CSV pair.

    Runs of a folder must have been trained with the proxy settings of the search (COMPARABLE); CSVs
    carry no settings, so their runs are taken as they are.
    """
    if not isinstance(start_from, str):
        mixture_csv, loss_csv = start_from
        observations = read_csvs(mixture_csv, loss_csv)
        runs = [(f"n{i}" if isinstance(i, int) else str(i), Mixture(observations.domains, row),
                 dict(zip(observations.targets, losses)), str(mixture_csv))
                for i, row, losses in zip(observations.index, observations.mixtures, observations.losses)]
        sources = [(str(mixture_csv), str(loss_csv))] * len(runs)
    else:
        folder = Path(start_from)
        if not folder.is_dir():
            raise ConfigError(folder, "no such run folder (give a sweep's proxies/ folder or [mixture CSV, loss CSV])")
        results = [(p, load_result(p)) for p in sorted(folder.glob(f"*/{RESULT_NAME}"))]
        wanted = dataclasses.asdict(proxy)
        for path, result in results:
            other = [f"{k} {result.settings[k]!r} (the search: {wanted[k]!r})" for k in COMPARABLE
                     if k in result.settings and result.settings[k] != wanted[k]]
            if other:
                raise ConfigError(path, f"trained with other settings than the search's proxies: {', '.join(other)}; "
                                        "its loss does not compare")
        runs = [(r.name, r.mixture, r.measured_losses, str(p)) for p, r in results if r.ok]  # what methods may see
        sources = [(source, source) for *_, source in runs]
        if not runs:
            raise ConfigError(folder, f"no finished run (<run>/{RESULT_NAME}) to start from")
    for (name, mixture, losses, _), (mixture_source, loss_source) in zip(runs, sources):
        for source, problem in ((mixture_source, _problem(mixture.vector, domains)),
                                (loss_source, _problem(objective.value, losses))):
            if problem:
                raise ConfigError(source, f"run {name} cannot join this search: {problem}")
    return runs


def _problem(check: Callable[[Any], Any], value: Any) -> str | None:
    try:
        check(value)
    except ValueError as exc:
        return str(exc)
    return None
