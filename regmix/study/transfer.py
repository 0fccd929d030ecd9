"""Transfer check: does the optimal mixture also win for a larger model?

Trains one target model (e.g. the 60M preset) per mixture and seed — the optimal one, the natural
token distribution, uniform, and any mixture YAML — with the same settings and token budget, then
prints the validation losses side by side (mean +- seed std with several seeds) with the objective
the optimum was chosen for, and the verification verdict of regmix.study.verify (does the optimum beat
natural and uniform beyond the seed spread?). Before the sweep it times two steps of the target
model (regmix.train.estimate, as `regmix validate` does; nothing written) and prints what the whole check will
cost on this machine.

Cost of the defaults (tinyllama_60M, 1000 steps of 64 x 1024 tokens = 65.5M tokens per run, 3 mixtures):
on 2 CPU cores about 160 tokens/s, so about 110 hours per run: a job for a GPU; on one modern GPU
about a minute per run (6 x 60M x 65.5M FLOPs at ~40% of an H200's bf16 peak; an estimate, not measured).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from regmix.cli import ArgumentParser, RunFailed, integer_at_least, run_command, torch_device
from regmix.core.files import check_output_folder
from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.results import RunResult, load_result
from regmix.core.schema import RESULT_NAME
from regmix.data.corpus import CorpusManifest, load_manifest
from regmix.settings.run_config import RunConfig, load_run_config, save_run_config
from regmix.settings.training import TrainingSettings, add_settings_arguments, settings_from_args
from regmix.study.verify import format_verification, seed_runs, verification
from regmix.train.executor import LOCAL, Executor, add_executor_arguments, executor_from_args, parallel_tasks, ray_call
from regmix.train.runlog import WANDB_MODES

BUILTIN_BASELINES = ("natural", "uniform")


def baseline_mixture(name: str, manifest: CorpusManifest) -> tuple[str, Mixture]:
    """A named baseline (natural, uniform), a mixture config file, or a config's name below mixture_config/ (the
    RegMix paper's comparison mixtures: the_pile_human, the_pile_doremi, the_pile_cc_only, the_pile_regmix)."""
    if name == "natural":
        return name, manifest.token_distribution()
    if name == "uniform":
        return name, manifest.uniform()
    from regmix.train.pretrain import resolve_mixture

    path = resolve_mixture(name)
    mixture = load_run_config(path).train
    mixture.check_domains(manifest.train_domains, path, manifest.empty_domains("train"))
    return path.stem, mixture


def seconds_per_step(config: RunConfig, manifest: CorpusManifest, device: str | None) -> float:
    """A step of `config`'s model on this machine: the second of two timed (regmix.train.estimate)."""
    from regmix.train.estimate import step_seconds  # torch and litgpt: imported where runs train, so --help is fast

    return step_seconds(config.training, manifest.tokenizer.vocab_size, device)[1]


def transfer(optimal: RunConfig, manifest: CorpusManifest, baselines: Sequence[str], training: TrainingSettings,
             output: Path, workers: int = 0, device: str | None = None, wandb_mode: str = "auto",
             seeds: Sequence[int] | None = None, estimate: bool = True, executor: Executor = LOCAL
             ) -> dict[str, list[RunResult]]:
    """Train the target model on every mixture with every seed into `output/<name>[_s<k>]/`; the results by
    mixture name (one per seed that finished). One seed keeps the folder names of one-seed checks. On Ray the
    timing runs as a task too, where the runs will run."""
    from regmix.train.sweep import train_sweep

    seeds = list(seeds or [training.seed])
    mixtures = dict([("optimal", optimal.train)] + [baseline_mixture(b, manifest) for b in baselines])
    configs, paths, names = output / "configs", [], {}
    for name, mixture in mixtures.items():
        for k, seed in enumerate(seeds):
            run = name if len(seeds) == 1 else f"{name}_s{k}"
            path = configs / f"{run}.yaml"
            save_run_config(RunConfig(run, mixture, tuple(manifest.valid_domains),
                                      dataclasses.replace(training, seed=seed)), path)
            paths.append(path)
            names[run] = name
    if estimate and not all((output / p.stem / RESULT_NAME).exists() for p in paths):
        if executor.kind == "ray":
            per_step = ray_call(functools.partial(seconds_per_step, load_run_config(paths[0]), manifest.absolute()),
                                executor, device, "regmix_estimate")
            parallel = parallel_tasks(executor, executor.task_gpus(device))
        else:
            per_step = seconds_per_step(load_run_config(paths[0]), manifest, device)
            parallel = max(1, workers or 1)
        hours = per_step * training.max_step * len(paths) / parallel / 3600
        print(f"transfer: about {per_step:.2f} s per step here, so {len(paths)} runs x {training.max_step} steps "
              f"take about {hours:.2f} h with {parallel} in parallel (Ctrl-C stops; the same command resumes)",
              flush=True)
    entries = train_sweep(paths, manifest, output, workers=workers, device=device, wandb_mode=wandb_mode,
                          executor=executor)
    results: dict[str, list[RunResult]] = {name: [] for name in mixtures}
    for entry in entries:
        if entry.status in ("finished", "skipped"):
            results[names[entry.name]].append(load_result(output / entry.name))
        else:
            print(f"no result for {entry.name}: {entry.detail}")
    results = {name: runs for name, runs in results.items() if runs}
    objective = Objective.parse(optimal.extra.get("objective"), "optimal_mixture.yaml") or \
        Objective.mean(optimal.valid or manifest.valid_domains)
    print(f"objective: {objective.describe()}")
    print(format_table(results, objective))
    if "optimal" in results and len(results) > 1:
        try:
            stats = {name: seed_runs(name, [r.valid_losses for r in runs if r.ok], objective)
                     for name, runs in results.items()}
        except ValueError as exc:
            print(f"no verdict: {exc}")
        else:
            # no "predicted" line: the optimum's prediction is at the proxies' scale, not this model's
            print("\n".join(format_verification(verification(stats.pop("optimal"), list(stats.values()), None),
                                                 training.model_name)))
    return results


def format_table(results: Mapping[str, Sequence[RunResult]], objective: Objective) -> str:
    """Validation loss per domain (rows) and mixture (columns), mean +- seed std, the objective last; best *."""
    finished = {n: [r for r in runs if r.ok] for n, runs in results.items()}
    names = [n for n, runs in finished.items() if runs]
    if not names:
        return "no finished runs to compare"
    domains = list(finished[names[0]][0].valid_losses)
    spread = any(len(finished[n]) > 1 for n in names)
    width = max(20 if spread else 12, *(len(n) + 2 for n in names))

    def cell(values: list[float], best: bool) -> str:
        text = f"{np.mean(values):.4f}" + (f" ± {np.std(values, ddof=1):.4f}" if len(values) > 1 else "")
        return f"{text + ('*' if best else ' '):>{width}}"

    lines = [f"{'valid domain':<24}" + "".join(f"{n:>{width}}" for n in names)]
    rows = [(d, {n: [r.valid_losses[d] for r in finished[n]] for n in names}) for d in domains]
    rows.append(("objective", {n: [objective.value(r.valid_losses) for r in finished[n]] for n in names}))
    for label, values in rows:
        best = min(float(np.mean(v)) for v in values.values())
        lines.append(f"{label:<24}" + "".join(cell(v, float(np.mean(v)) == best) for v in values.values()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, list[RunResult]]:
    p = ArgumentParser(prog="regmix transfer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--optimal", type=Path, required=True, help="optimal_mixture.yaml from the simulation")
    p.add_argument("--corpus", type=Path, required=True, help="prepared corpus folder")
    p.add_argument("--baselines", nargs="*", default=list(BUILTIN_BASELINES),
                   help="natural, uniform, mixture YAML files and/or config names below mixture_config/, e.g. the "
                        "RegMix paper's the_pile_human the_pile_doremi the_pile_cc_only the_pile_regmix "
                        "(default: natural uniform)")
    p.add_argument("--output", type=Path, default=Path("runs/transfer"), help="folder for the runs")
    p.add_argument("--seeds", type=integer_at_least(1), default=1,
                   help="seeds per mixture (3 gives the table a seed spread; "
                   "default: %(default)s, the settings' seed)")
    p.add_argument("--no-estimate", action="store_true", help="skip timing two steps before the sweep")
    p.add_argument("--workers", type=integer_at_least(0), default=0, help="parallel runs (see train_proxy --help)")
    p.add_argument("--device", type=torch_device, default=None,
                   help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.add_argument("--wandb", default="auto", choices=WANDB_MODES,
                   help="wandb logging: auto = online with a wandb login, otherwise offline files")
    add_executor_arguments(p)
    defaults = TrainingSettings.from_name("transfer_60m")
    add_settings_arguments(p.add_argument_group("target model training (same for every mixture)"), defaults)
    args = p.parse_args(argv)
    training = settings_from_args(defaults, args)
    training.validate("command line")
    manifest = load_manifest(args.corpus)
    optimal = load_run_config(args.optimal)
    optimal.check_corpus(manifest, args.optimal)
    results = transfer(optimal, manifest, args.baselines, training, check_output_folder(args.output), args.workers,
                       args.device, args.wandb, [training.seed + k for k in range(args.seeds)], not args.no_estimate,
                       executor_from_args(args))
    if len(results) < 1 + len(args.baselines) or not all(len(r) == args.seeds and all(x.ok for x in r)
                                                         for r in results.values()):
        raise RunFailed(f"{args.output}: not every mixture trained to the end (see above)")
    return results


if __name__ == "__main__":
    raise SystemExit(run_command(main))
