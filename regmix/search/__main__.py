"""python -m regmix.search: a sequential mixture search (bo, turbo, random, regmix) with real proxy runs.

Rounds of ask -> train the batch (the sweep machinery) -> tell, until `--budget` proxy runs, then
optimal_mixture.yaml, the runs as RegMix CSVs and convergence.png in the experiment's search_<method>/
folders. Resumable: run the same command again after an interruption. Settings come from the
experiment YAML (`method:` and the `search:` section, see regmix/experiment.py); flags override it.

    python -m regmix.search --method bo --budget 16               # the embedded demo corpus
    python -m regmix.search --config exp.yaml --method turbo --start-from runs/exp/proxies
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Sequence

from regmix.cli import ArgumentParser, integer_at_least, run_command
from regmix.search import PROPOSERS
from regmix.settings.training import parse_settings
from regmix.study.experiment import Experiment, load_experiment, with_executor
from regmix.study.search_run import run_search
from regmix.train.executor import add_executor_arguments


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m regmix.search", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="experiment YAML (default: the embedded default experiment)")
    p.add_argument("--method", choices=sorted(PROPOSERS), help="search method (default: the experiment's "
                   "`method:` unless that is regmix, else bo; --method regmix runs RegMix as a search, in its "
                   "own search_regmix/ folders)")
    p.add_argument("--budget", type=integer_at_least(1, 10**6), help="proxy runs in all, those started from included")
    p.add_argument("--batch", type=integer_at_least(1, 10**5),
                   help="proxies per round (default: a GPU's group, or one per CPU worker)")
    p.add_argument("--seed", type=integer_at_least(0), help="seed of the search")
    p.add_argument("--start-from", nargs="+", metavar="PATH",
                   help="existing runs to start from: a run folder (e.g. runs/default/proxies) or "
                        "MIXTURE_CSV LOSS_CSV")
    p.add_argument("--setting", nargs="+", default=[], metavar="KEY=VALUE",
                   help="method settings, e.g. initial=8 design=sobol num_restarts=4 (JSON values)")
    add_executor_arguments(p)
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = _parser().parse_args(argv)
    experiment = with_executor(load_experiment(args.config) if args.config else Experiment(), args)
    method = args.method or (experiment.method if experiment.method != "regmix" else "bo")
    start = args.start_from
    overrides = {k: v for k, v in (("budget", args.budget), ("batch", args.batch), ("seed", args.seed),
                                   ("start_from", start[0] if start and len(start) == 1 else start))
                 if v is not None}
    settings = {**experiment.search.settings, **parse_settings(args.setting)}
    experiment = dataclasses.replace(experiment, method=method,
                                     search=dataclasses.replace(experiment.search, **overrides, settings=settings))
    return run_search(experiment)


if __name__ == "__main__":
    raise SystemExit(run_command(main))
