"""A whole study from one experiment YAML: `python -m regmix.pipeline` (or `regmix pipeline`).

The experiment's `method:` (default regmix: prepare -> synthesize -> the proxy sweep -> fit ->
simulate) runs on the study runner (regmix.study.runner), as every method does: the anchors
(natural and uniform with seeds), the runs, the recommendation kept to the large run's repetition
caps, its verification with the anchors' seeds and the report. Resumable: run the same command
again after an interruption; finished runs are never trained again. With no --config it runs the
embedded default experiment (the README's `make demo`).

Outputs: mixture_config/<name>/<method>/optimal_mixture.yaml (for model_training/pretrain_1b.sh),
runs/<name>/proxies/ (every run), runs/<name>/<method>/ (study.json, report.json, report.md, the
runs as RegMix CSVs, which `regmix fit --study runs/<name>/<method>` reads, plots).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Sequence

from regmix.cli import ArgumentParser, add_dry_run_argument, run_command
from regmix.search import PROPOSERS
from regmix.train.executor import add_executor_arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | int:
    p = ArgumentParser(prog="regmix pipeline", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="experiment YAML (default: the embedded default experiment)")
    p.add_argument("--method", choices=sorted(PROPOSERS), help="the method (default: the experiment's `method:`)")
    add_executor_arguments(p)
    add_dry_run_argument(p)
    args = p.parse_args(argv)
    from regmix.core.files import ConfigError
    from regmix.study.experiment import load_experiment, with_executor
    from regmix.study.runner import run_study
    from regmix.study.validate import validate

    problems: list[ConfigError] = []
    experiment = with_executor(load_experiment(args.config, problems if args.dry_run else None), args)
    if args.method:
        experiment = dataclasses.replace(experiment, method=args.method)
    if args.dry_run:
        return validate(experiment, [experiment.method], problems)
    return run_study(experiment)


if __name__ == "__main__":
    raise SystemExit(run_command(main))
