"""Transfer check: does the optimal mixture also win for a larger model?

Trains one target model (e.g. the 60M preset) per mixture — the optimal one, the natural token
distribution, uniform, and any mixture YAML — with the same settings and token budget, then prints
the validation losses side by side with the objective the optimum was chosen for.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Mapping, Sequence

from regmix.config import (
    RunConfig,
    TrainingSettings,
    add_settings_arguments,
    load_run_config,
    save_run_config,
    settings_from_args,
)
from regmix.data.corpus import CorpusManifest, load_manifest
from regmix.files import ConfigError
from regmix.mixture import Mixture
from regmix.results import RunResult, load_result
from regmix.schema import as_valid_domain
from regmix.train.runlog import WANDB_MODES
from regmix.train.sweep import train_sweep

BUILTIN_BASELINES = ("natural", "uniform")


def baseline_mixture(name: str, manifest: CorpusManifest) -> tuple[str, Mixture]:
    """A named baseline (natural, uniform) or a mixture config file."""
    if name == "natural":
        return name, manifest.token_distribution()
    if name == "uniform":
        return name, Mixture.uniform(manifest.train_domains)
    path = Path(name)
    mixture = load_run_config(path).train
    mixture.check_domains(manifest.train_domains, path, manifest.empty_domains("train"))
    return path.stem, mixture


def objective_loss(result: RunResult, objective: Mapping[str, float]) -> float:
    total = sum(objective.values())
    return sum(result.valid_losses[d] * w for d, w in objective.items()) / total


def transfer(optimal: RunConfig, manifest: CorpusManifest, baselines: Sequence[str], training: TrainingSettings,
             output: Path, workers: int = 0, device: str | None = None, wandb_mode: str = "auto"
             ) -> dict[str, RunResult]:
    """Train the target model on every mixture into `output/<name>/`; returns results by mixture name."""
    mixtures = dict([("optimal", optimal.train)] + [baseline_mixture(b, manifest) for b in baselines])
    configs = output / "configs"
    paths = []
    for name, mixture in mixtures.items():
        path = configs / f"{name}.yaml"
        save_run_config(RunConfig(name, mixture, tuple(manifest.valid_domains), training), path)
        paths.append(path)
    entries = train_sweep(paths, manifest, output, workers=workers, device=device, wandb_mode=wandb_mode)
    results = {}
    for entry in entries:
        if entry.status in ("finished", "skipped"):
            results[entry.name] = load_result(output / entry.name)
        else:
            print(f"no result for {entry.name}: {entry.detail}")
    results = {name: results[name] for name in mixtures if name in results}
    objective = optimal.extra.get("objective") or {d: 1.0 for d in optimal.valid or manifest.valid_domains}
    print(format_table(results, {as_valid_domain(k): v for k, v in objective.items()}))
    return results


def format_table(results: Mapping[str, RunResult], objective: Mapping[str, float]) -> str:
    """Validation loss per domain (rows) and mixture (columns), the objective last; best marked *."""
    names = [n for n, r in results.items() if r.ok]
    if not names:
        return "no finished runs to compare"
    domains = list(results[names[0]].valid_losses)
    width = max(12, *(len(n) + 2 for n in names))
    lines = [f"{'valid domain':<24}" + "".join(f"{n:>{width}}" for n in names)]
    rows = [(d, {n: results[n].valid_losses[d] for n in names}) for d in domains]
    rows.append(("objective", {n: objective_loss(results[n], objective) for n in names}))
    for label, values in rows:
        best = min(values.values())
        lines.append(f"{label:<24}" + "".join(
            f"{f'{v:.4f}' + ('*' if v == best else ' '):>{width}}" for v in values.values()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, RunResult]:
    p = argparse.ArgumentParser(prog="python -m regmix.transfer", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--optimal", type=Path, required=True, help="optimal_mixture.yaml from the simulation")
    p.add_argument("--corpus", type=Path, required=True, help="prepared corpus folder")
    p.add_argument("--baselines", nargs="*", default=list(BUILTIN_BASELINES),
                   help="natural, uniform and/or mixture YAML files (default: natural uniform)")
    p.add_argument("--output", type=Path, default=Path("runs/transfer"), help="folder for the runs")
    p.add_argument("--workers", type=int, default=0, help="parallel runs (see train_proxy --help)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.add_argument("--wandb", default="auto", choices=WANDB_MODES,
                   help="wandb logging: auto = online with a wandb login, otherwise offline files")
    defaults = TrainingSettings.from_name("transfer_60m")
    add_settings_arguments(p.add_argument_group("target model training (same for every mixture)"), defaults)
    args = p.parse_args(argv)
    training = settings_from_args(defaults, args)
    try:
        training.validate("command line")
        manifest = load_manifest(args.corpus)
        optimal = load_run_config(args.optimal)
        optimal.check_corpus(manifest, args.optimal)
        results = transfer(optimal, manifest, args.baselines, training, args.output, args.workers, args.device,
                           args.wandb)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if len(results) < 1 + len(args.baselines) or not all(r.ok for r in results.values()):
        raise SystemExit("error: not every mixture trained to the end (see above)")
    return results


if __name__ == "__main__":
    main()
