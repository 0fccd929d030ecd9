"""python -m regmix.online: one mixing method (online or a static baseline) trained on one corpus.

Trains what the method needs (see regmix/online/run.py: grid runs, single-domain runs, a reference
run, the online run, a run on learned weights) and writes to <output>/<method>/: result.json (the
losses, the mixtures, the trajectory, the extra runs and their time), weights.png (the mixture over
steps and the validation losses), and mixture_final.yaml / mixture_averaged.yaml for
`model_training/pretrain_1b.sh`. Resumable: the same command again continues where it stopped.

    python -m regmix.online --method aioli                       # the embedded demo corpus
    python -m regmix.online --method doremi --corpus data/default --domains arxiv github --setting eta=0.5
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Sequence

from regmix.cli import ArgumentParser, RunFailed, run_command, torch_device
from regmix.core.files import ConfigError, check_output_folder
from regmix.data.corpus import load_manifest
from regmix.settings.training import add_settings_arguments, parse_settings, settings_from_args
from regmix.study.experiment import Experiment, load_experiment, prepare_experiment_corpus
from regmix.study.online_methods import METHODS, MethodResult, method_settings_help, run_method
from regmix.study.online_report import plot_method, write_mixture_configs
from regmix.train.executor import add_executor_arguments, executor_from_args, ray_call
from regmix.train.runlog import WANDB_MODES


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m regmix.online", description=__doc__,
                                epilog="method settings (--setting KEY=VALUE), defaults:\n" + method_settings_help(),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", choices=METHODS, default="aioli", help="mixing method (default: %(default)s)")
    p.add_argument("--config", type=Path, help="experiment YAML: its corpus, target domains and proxy settings "
                                               "(default: the embedded default experiment)")
    p.add_argument("--corpus", type=Path, help="a prepared corpus folder (default: the experiment's, prepared "
                                               "on the spot)")
    p.add_argument("--domains", nargs="+", help="training domains (default: every one with tokens)")
    p.add_argument("--valid", nargs="+", help="valid domains, weighted equally (default: the experiment's target; "
                                              "with --domains, those of them that are valid domains)")
    p.add_argument("--setting", nargs="+", default=[], metavar="KEY=VALUE", help="method settings (below)")
    p.add_argument("--output", type=Path, help="folder shared by methods on one corpus (default: runs/online/"
                                               "<experiment name>)")
    p.add_argument("--device", type=torch_device, help="torch device (default: cuda if available)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="auto", help="wandb mode (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_executor_arguments(p)  # with Ray the whole method is one task (its runs depend on each other)
    training = p.add_argument_group("proxy training settings (default: the experiment's proxy settings)")
    add_settings_arguments(training, Experiment().proxy, only_given="the experiment's")
    return p


def main(argv: Sequence[str] | None = None) -> MethodResult:
    args = _parser().parse_args(argv)
    try:
        experiment = load_experiment(args.config) if args.config else Experiment()
        if args.corpus:
            manifest = load_manifest(args.corpus)
            objective = experiment.target or {d: 1.0 for d in manifest.valid_domains}
        else:
            manifest, objective = prepare_experiment_corpus(experiment)
        empty = set(manifest.empty_domains("train"))
        domains = args.domains or [d for d in manifest.train_domains if d not in empty]
        for flag, names in (("--domains", domains), ("--valid", args.valid or [])):
            if len(set(names)) != len(names):
                raise ConfigError(flag, f"names a domain twice: {sorted(d for d in set(names) if names.count(d) > 1)}")
        unknown = sorted(set(domains) - set(manifest.train_domains))
        if unknown:
            raise ConfigError("--domains", f"unknown domains {unknown}; the corpus has {list(manifest.train_domains)}")
        subset = [d for d in domains if d in manifest.valid_domains] if args.domains else []
        valid = args.valid or subset or [d for d, w in objective.items() if w > 0]
        bad = sorted(set(valid) - set(manifest.valid_domains) | set(valid) & set(manifest.empty_domains("valid")))
        if bad:
            raise ConfigError("--valid", f"{bad} are not valid domains with tokens of the corpus")
        settings = settings_from_args(experiment.proxy, args)
        settings.validate("command line")
        output = check_output_folder(args.output or Path("runs") / "online" / experiment.name)
        executor = executor_from_args(args)
        method = functools.partial(run_method, manifest=manifest.absolute(), output=output.resolve(),
                                   settings=settings, domains=domains, valid=valid,
                                   method_settings=parse_settings(args.setting), wandb_mode=args.wandb,
                                   device=args.device, progress=not args.no_progress)
        if executor.kind == "ray":
            result = ray_call(lambda device: method(args.method, device=device, progress=False), executor,
                              args.device, "regmix_online")
        else:
            result = method(args.method)
    except RuntimeError as exc:  # a run of the method failed (its message names the run folder)
        raise RunFailed(str(exc)) from None
    folder = output / args.method
    files = write_mixture_configs(result, folder) + [plot_method(result, output / "runs", folder / "weights.png")]
    print(f"[{args.method}] mean validation loss {result.mean_loss:.4f}, mean perplexity "
          f"{result.mean_perplexity:.3f} over {len(valid)} domains; {result.extra_runs} extra runs, "
          f"{result.seconds:.0f} s of training")
    print(f"{'domain':<24}{'final':>10}{'averaged':>10}")
    for d in result.mixture.domains:
        print(f"{d:<24}{result.mixture[d]:>10.4f}{result.averaged[d]:>10.4f}")
    print("wrote " + ", ".join(str(p) for p in [folder / "result.json", *files]))
    return result


if __name__ == "__main__":
    raise SystemExit(run_command(main))
