"""python -m regmix.search (regmix search): a sequential mixture search (bo, turbo, random, regmix) with
real proxy runs, on the study runner (regmix.study.runner).

Rounds of ask -> train the batch (the sweep machinery) -> tell, until `--budget` proxy runs, then the
study's evidence (anchors, verification) and report. Resumable: run the same command again after an
interruption. Settings come from the experiment YAML (`method:` and the `search:` section, see
regmix/study/experiment.py); flags override it.

    python -m regmix.search --method bo --budget 16               # the embedded demo corpus
    python -m regmix.search --config exp.yaml --method turbo --start-from runs/exp/proxies
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Sequence

from regmix.cli import ArgumentParser, add_dry_run_argument, integer_at_least, run_command
from regmix.search import OFFLINE, SEQUENTIAL
from regmix.train.executor import add_executor_arguments


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="regmix search", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="experiment YAML (default: the embedded default experiment)")
    p.add_argument("--method", choices=sorted(SEQUENTIAL + OFFLINE), help="search method (default: the experiment's "
                   "`method:` if it is one of these, else bo; regmix asks its budget in batches of --batch if given)")
    p.add_argument("--budget", type=integer_at_least(1, 10**6), help="proxy runs of the method, those started from "
                   "included (anchors and verification not counted)")
    p.add_argument("--batch", type=integer_at_least(1, 10**5),
                   help="proxies per round (default: a GPU's group, or one per CPU worker)")
    p.add_argument("--seed", type=integer_at_least(0), help="seed of the search")
    p.add_argument("--start-from", nargs="+", metavar="PATH",
                   help="existing runs to start from: a run folder (e.g. runs/default/proxies) or "
                        "MIXTURE_CSV LOSS_CSV")
    p.add_argument("--setting", nargs="+", default=[], metavar="KEY=VALUE",
                   help="method settings, e.g. initial=8 design=sobol num_restarts=4 (JSON values)")
    add_executor_arguments(p)
    add_dry_run_argument(p)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | int:
    args = _parser().parse_args(argv)
    from regmix.core.files import ConfigError
    from regmix.settings.training import parse_settings
    from regmix.study.experiment import load_experiment, with_executor
    from regmix.study.runner import run_study
    from regmix.study.validate import validate

    problems: list[ConfigError] = []
    experiment = with_executor(load_experiment(args.config, problems if args.dry_run else None), args)
    method = args.method or (experiment.method if experiment.method in SEQUENTIAL + OFFLINE else "bo")
    start = args.start_from
    overrides = {k: v for k, v in (("budget", args.budget), ("batch", args.batch), ("seed", args.seed),
                                   ("start_from", start[0] if start and len(start) == 1 else start))
                 if v is not None}
    settings = {**experiment.search.for_method(method, experiment.method), **parse_settings(args.setting)}
    search = dataclasses.replace(experiment.search, **overrides, settings=settings)
    sweep = experiment.sweep
    if method == "regmix":  # RegMix's budget is the sweep's; here it is asked in batches of --batch
        sweep = dataclasses.replace(sweep, num_configs=search.budget)
    origins = {**experiment.origins, "search.settings": "--setting"} if args.setting else experiment.origins
    experiment = dataclasses.replace(experiment, method=method, search=search, sweep=sweep, origins=origins)
    if args.dry_run:
        return validate(experiment, [method], problems)
    return run_study(experiment, method)


if __name__ == "__main__":
    raise SystemExit(run_command(main))
