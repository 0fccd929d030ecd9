"""python -m regmix.online (regmix online): one online mixing method or static baseline on one corpus, on
the study runner (regmix.study.runner) with the same evidence as every method.

Trains what the method needs (regmix/search/online.py: grid runs, single-domain runs, a reference
run, the online run, a run on learned weights), the anchors and the verification of its answer
(`--anchor-seeds 0` for none), and writes runs/<name>/<method>/: report.json, report.md, weights.png
(the online run's mixture over steps), the CSVs; and mixture_config/<name>/<method>/optimal_mixture.yaml
for `model_training/pretrain_1b.sh`. Runs shared by methods (stratified, the grid) are trained once.
Resumable: the same command again continues where it stopped; changed settings are one error naming
the study's state file.

    python -m regmix.online --method aioli --setting update_steps=20 sweeps=1 lp_steps=2  # demo: 100-step runs
    python -m regmix.online --method doremi --corpus data/default --domains python_code licenses --setting eta=0.01
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any, Sequence

from regmix.cli import ArgumentParser, add_dry_run_argument, integer_at_least, run_command, torch_device
from regmix.search import ONLINE
from regmix.settings.training import TrainingSettings, add_settings_arguments, settings_from_args
from regmix.train.executor import add_executor_arguments

WANDB_MODES = ("auto", "online", "offline", "off")


def _parser() -> argparse.ArgumentParser:
    from regmix.search.online import method_settings_help

    p = ArgumentParser(prog="regmix online", description=__doc__,
                       epilog="method settings (--setting KEY=VALUE), defaults:\n" + method_settings_help(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=ONLINE, default="aioli", help="mixing method (default: %(default)s)")
    p.add_argument("--config", type=Path, help="experiment YAML: its corpus, target and proxy settings "
                                               "(default: the embedded default experiment)")
    p.add_argument("--corpus", type=Path, help="a prepared corpus folder, used as it is (default: the experiment's, "
                                               "prepared on the spot)")
    p.add_argument("--domains", nargs="+", help="training domains (default: every one with tokens)")
    p.add_argument("--valid", nargs="+", help="valid domains to minimise, weighted equally (default: the "
                                              "experiment's target; with --domains, those of them that are valid)")
    p.add_argument("--setting", nargs="+", default=[], metavar="KEY=VALUE", help="method settings (below)")
    p.add_argument("--name", help="the experiment's name: runs go to runs/<name>/ (default: the experiment's)")
    p.add_argument("--anchor-seeds", type=integer_at_least(0, 100), help="seeds of the natural and uniform anchors "
                   "and of the verification (default: the experiment's, 3; 0: no anchors, no verification)")
    p.add_argument("--device", type=torch_device, help="torch device (default: cuda if available)")
    p.add_argument("--wandb", choices=WANDB_MODES, help="wandb mode (default: the experiment's, auto)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--output", type=Path, help=argparse.SUPPRESS)  # before the study runner; said when given
    add_executor_arguments(p)
    add_dry_run_argument(p)
    training = p.add_argument_group("proxy training settings (default: the experiment's proxy settings)")
    add_settings_arguments(training, TrainingSettings.from_name("demo"), only_given="the experiment's")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | int:
    args = _parser().parse_args(argv)
    from regmix.core.files import ConfigError
    from regmix.core.objective import Objective
    from regmix.core.schema import safe_name
    from regmix.settings.training import parse_settings
    from regmix.study.experiment import load_experiment, with_executor
    from regmix.study.runner import run_study
    from regmix.study.validate import validate

    if args.output is not None:
        raise ConfigError("--output", "is gone: a method's runs go to runs/<name>/proxies/ and its results to "
                                      "runs/<name>/<method>/; name the experiment with --name")
    problems: list[ConfigError] = []
    experiment = with_executor(load_experiment(args.config, problems if args.dry_run else None), args)
    for flag, names in (("--domains", args.domains or []), ("--valid", args.valid or [])):
        if len(set(names)) != len(names):
            raise ConfigError(flag, f"names a domain twice: {sorted(d for d in set(names) if names.count(d) > 1)}")
    corpus = experiment.corpus if args.corpus is None else \
        dataclasses.replace(experiment.corpus, source=None, prepared=str(args.corpus))
    target = Objective.parse(args.valid, "--valid") if args.valid else experiment.target
    sweep = dataclasses.replace(experiment.sweep, **{k: v for k, v in (
        ("anchor_seeds", args.anchor_seeds), ("device", args.device), ("wandb", args.wandb),
        ("progress", False if args.no_progress else None)) if v is not None})
    proxy = settings_from_args(experiment.proxy, args)
    proxy.validate("command line")
    origins = {"target": "--valid" if args.valid else experiment.origin("target"), "search.settings": "--setting"}
    experiment = dataclasses.replace(
        experiment, name=safe_name(args.name, "experiment name", "--name") if args.name else experiment.name,
        method=args.method, corpus=corpus, target=target, sweep=sweep, proxy=proxy, origins=origins,
        search=dataclasses.replace(experiment.search, settings={
            **experiment.search.for_method(args.method, experiment.method), **parse_settings(args.setting)}))
    if args.dry_run:
        return validate(experiment, [args.method], problems, domains=args.domains)
    return run_study(experiment, args.method, domains=args.domains)


if __name__ == "__main__":
    raise SystemExit(run_command(main))
