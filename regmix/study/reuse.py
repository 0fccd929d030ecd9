"""`regmix reuse`: a study over a changed domain set that reuses an earlier optimum (Olmix's mixture reuse).

Domains were added to the corpus (or removed, or one split into new ones) after a study found its optimum.
Instead of a full study over every domain, the earlier optimum's domains still in the corpus are searched
as one domain (`existing`, at their relative weights: regmix.core.reuse) beside the new ones, with a small
swarm (`--runs`; Olmix: 16-64), on the study runner as any study (anchors, verification, report). The
answer, optimal_mixture.yaml, is over every domain of the corpus; its `reuse:` section records the searched
mixture and the frozen share. The study is `<name>_reuse` (runs/<name>_reuse/, mixture_config/<name>_reuse/).

    regmix reuse --config grown_corpus.yaml --previous mixture_config/old/regmix/optimal_mixture.yaml --runs 32
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Sequence

from regmix.cli import ArgumentParser, add_dry_run_argument, integer_at_least, run_command
from regmix.search import PROPOSERS
from regmix.train.executor import add_executor_arguments


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | int:
    p = ArgumentParser(prog="regmix reuse", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="experiment YAML of the corpus with its new domains")
    p.add_argument("--previous", type=Path, required=True,
                   help="the earlier optimum (an optimal_mixture.yaml, or any mixture config)")
    p.add_argument("--runs", type=integer_at_least(2), default=32,
                   help="proxies of the reuse swarm (default: %(default)s; Olmix uses 16-64)")
    p.add_argument("--name", default="existing", help="the frozen domain's name (default: %(default)s)")
    p.add_argument("--method", choices=sorted(PROPOSERS), help="the method (default: the experiment's `method:`)")
    add_executor_arguments(p)
    add_dry_run_argument(p)
    args = p.parse_args(argv)
    from regmix.core.files import ConfigError
    from regmix.study.experiment import ReuseSettings, load_experiment, with_executor
    from regmix.study.runner import run_study
    from regmix.study.validate import validate

    problems: list[ConfigError] = []
    experiment = with_executor(load_experiment(args.config, problems if args.dry_run else None), args)
    experiment = dataclasses.replace(
        experiment, name=f"{experiment.name}_reuse", method=args.method or experiment.method,
        reuse=ReuseSettings(str(args.previous), args.name),
        sweep=dataclasses.replace(experiment.sweep, num_configs=args.runs),
        search=dataclasses.replace(experiment.search, budget=args.runs))
    if args.dry_run:
        return validate(experiment, [experiment.method], problems)
    return run_study(experiment)


if __name__ == "__main__":
    raise SystemExit(run_command(main))
