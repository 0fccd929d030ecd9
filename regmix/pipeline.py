"""The whole RegMix pipeline from one experiment YAML: prepare -> synthesize -> train the proxy sweep
-> collect -> fit -> simulate, then a short report.

Resumable at every stage: a stage whose inputs and settings are unchanged since it last finished is
skipped (stamps in runs/<name>/stages.json), and the sweep skips finished runs and resumes interrupted
ones. With no --config it runs the embedded default experiment (the README's `make demo`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from regmix.collect import collect
from regmix.config import TrainingSettings, load_run_config, run_config_paths, save_run_config
from regmix.data.corpus import CorpusManifest
from regmix.data.default_corpus import build_default_corpus
from regmix.data.prepare import prepare
from regmix.files import ConfigError, read_yaml, write_atomic
from regmix.fit import fit, load_model
from regmix.mixture import Mixture
from regmix.observations import read_csvs
from regmix.schema import loss_csv_name, mixture_csv_name
from regmix.simulate import optimal_config, plot_mixtures, simulate
from regmix.synthesize import SynthesisSettings, plot_weights, synthesize, write_configs
from regmix.train.sweep import train_sweep


@dataclass
class CorpusSettings:
    """Where the corpus is and how to tokenize it; `source: null` is the embedded default corpus."""

    source: str | None = None
    prepared: str = "data/default"
    tokenizer: str | None = None
    vocab_size: int = 2048


@dataclass
class SweepSettings:
    num_configs: int = 48
    workers: int = 0
    device: str | None = None
    wandb: str = "auto"


@dataclass
class FitSettings:
    regressors: list[str] = field(default_factory=lambda: ["linear", "lightgbm", "ensemble"])
    folds: int = 5


@dataclass
class SimulationSettings:
    candidates: int = 1_000_000
    top_k: int = 128
    refine: int = 0
    large_model: str = "tinyllama_1_1b"


@dataclass
class Experiment:
    """Every setting of a pipeline run. `target`: valid domain weights; None = all valid domains equally."""

    name: str = "default"
    target: dict[str, float] | None = None
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)
    proxy: TrainingSettings = field(default_factory=lambda: TrainingSettings.from_name("demo"))
    sweep: SweepSettings = field(default_factory=SweepSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    simulation: SimulationSettings = field(default_factory=SimulationSettings)
    source: str = "<default experiment>"

    @property
    def runs(self) -> Path:
        return Path("runs") / self.name

    @property
    def configs(self) -> Path:
        return Path("mixture_config") / self.name / "config_proxy"

    @property
    def optimal(self) -> Path:
        return Path("mixture_config") / self.name / "optimal_mixture.yaml"


def _section(base: Any, data: Any, source: Path, name: str) -> Any:
    """`base` with the keys of one YAML section applied; unknown keys and bad types name the file."""
    if not isinstance(data, dict):
        raise ConfigError(source, f"'{name}:' must be a mapping")
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(source, f"unknown keys {unknown} in '{name}:'; known: {sorted(known)}")
    values = {}
    for key, value in data.items():
        default = getattr(base, key)
        if isinstance(default, list) and isinstance(value, str):
            value = [value]
        if isinstance(default, (int, float)) and not isinstance(default, bool) and value is not None:
            try:
                value = type(default)(value)
            except (TypeError, ValueError):
                raise ConfigError(source, f"'{name}.{key}' must be a {type(default).__name__}, got {value!r}") from None
        values[key] = value
    return dataclasses.replace(base, **values)


def load_experiment(path: str | os.PathLike) -> Experiment:
    """Read an experiment YAML; every section is optional and starts from the demo defaults."""
    path = Path(path)
    data = read_yaml(path) or {}
    if not isinstance(data, dict):
        raise ConfigError(path, "expected a mapping of experiment settings")
    experiment = Experiment(source=str(path))
    sections = [f.name for f in dataclasses.fields(Experiment) if f.name not in ("name", "target", "source")]
    unknown = sorted(set(data) - set(sections) - {"name", "target"})
    if unknown:
        raise ConfigError(path, f"unknown keys {unknown}; known: name, target, {', '.join(sections)}")
    experiment.name = str(data.get("name", experiment.name))
    experiment.target = _target(data.get("target"), path)
    for key in sections:
        if key in data:
            setattr(experiment, key, _section(getattr(experiment, key), data[key], path, key))
    experiment.proxy.validate(path)
    experiment.synthesis.validate(path)
    return experiment


class Stages:
    """Stamps of finished stages: a stage is skipped when its fingerprint is the one stamped."""

    def __init__(self, path: Path):
        self.path = path
        self.done = json.loads(path.read_text()) if path.exists() else {}

    def run(self, name: str, fingerprint: str, action: Callable[[], Any], report: Callable[[str], None]) -> bool:
        if self.done.get(name) == fingerprint:
            report(f"[{name}] up to date, skipped")
            return False
        started = time.perf_counter()
        action()
        self.done[name] = fingerprint
        write_atomic(self.path, json.dumps(self.done, indent=1))
        report(f"[{name}] done in {time.perf_counter() - started:.1f}s")
        return True


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _files_fingerprint(paths: Sequence[Path]) -> list:
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.exists()]


def _target(value: Any, source: Path) -> dict[str, float] | None:
    """`target:` as valid-domain weights: a domain, a list of domains (equal weights) or {domain: weight}."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        value = {v: 1.0 for v in value}
    if not isinstance(value, dict):
        raise ConfigError(source, f"'target:' must be a valid domain, a list of them or {{domain: weight}}, "
                                  f"got {value!r}")
    try:
        return Mixture.from_dict(value, source, normalize=True).to_dict()
    except ConfigError as exc:
        raise ConfigError(source, f"'target:' {exc.problem}") from None


def _objective(experiment: Experiment, manifest: CorpusManifest, corpus: Path) -> dict[str, float]:
    """The validation loss to minimise; checked against the corpus before any proxy trains."""
    objective = experiment.target or {d: 1.0 for d in manifest.valid_domains}
    empty = sorted(set(objective) & set(manifest.empty_domains("valid")))
    if empty:
        raise ConfigError(corpus / "valid", f"target domains {empty} have no validation tokens (empty files?)")
    unknown = sorted(set(objective) - set(manifest.valid_domains))
    if unknown:
        raise ConfigError(experiment.source, f"target domains {unknown} are not valid domains of the corpus "
                                             f"{sorted(manifest.valid_domains)}")
    return objective


def run_pipeline(experiment: Experiment, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage of `experiment`; returns the summary that is printed at the end."""
    started = time.perf_counter()
    runs, configs = experiment.runs, experiment.configs
    runs.mkdir(parents=True, exist_ok=True)
    stages = Stages(runs / "stages.json")
    corpus = experiment.corpus

    source = Path(corpus.source) if corpus.source else Path(corpus.prepared) / "raw"
    if corpus.source is None and not (source / "train").is_dir():
        report("[corpus] building the embedded default corpus")
        build_default_corpus(source)
    report("[prepare] tokenizing (incremental)")
    manifest = prepare(source, corpus.prepared, corpus.tokenizer, corpus.vocab_size, progress=True)
    natural = manifest.token_distribution()
    objective = _objective(experiment, manifest, source)
    for split, consequence in (("train", "they get weight 0"), ("valid", "they are not validated on")):
        if manifest.empty_domains(split):
            report(f"[prepare] warning: no {split} tokens for {list(manifest.empty_domains(split))} in "
                   f"{source / split} (empty files?): {consequence}")

    synth_key = fingerprint(dataclasses.asdict(experiment.synthesis), dataclasses.asdict(experiment.proxy),
                            experiment.sweep.num_configs, natural.to_dict(), manifest.valid_domains,
                            manifest.tokenizer.sha256)

    def synthesize_stage() -> None:
        finished = list(runs.glob("proxies/*/result.json"))
        if finished:
            raise ConfigError(runs / "stages.json", f"the synthesis settings or the corpus changed, but "
                              f"{len(finished)} proxy runs trained on the old configs exist in {runs / 'proxies'}; "
                              "use a new experiment name or delete that folder")
        if configs.exists():
            shutil.rmtree(configs)
        mixtures = synthesize(natural, experiment.sweep.num_configs, experiment.synthesis)
        write_configs(mixtures, manifest.valid_domains, configs, experiment.proxy, experiment.synthesis)
        plot_weights(mixtures, natural, runs / "proxy_mixtures.png")

    stages.run("synthesize", synth_key, synthesize_stage, report)
    paths = run_config_paths(configs)

    report(f"[train] {len(paths)} proxies ({experiment.proxy.model_name}, {experiment.proxy.max_step} steps)")
    entries = train_sweep(paths, manifest, runs / "proxies", workers=experiment.sweep.workers,
                          device=experiment.sweep.device, wandb_mode=experiment.sweep.wandb, report=report)

    results = sorted((runs / "proxies").glob("*/result.json"))
    mixture_csv, loss_csv = runs / mixture_csv_name("proxy"), runs / loss_csv_name("corpus", "proxy")

    def collect_stage() -> None:
        collection = collect(configs, runs=runs / "proxies")
        report(collection.report.summary())
        collection.observations.save(mixture_csv, loss_csv)

    stages.run("collect", fingerprint(_files_fingerprint(results), synth_key), collect_stage, report)

    model_path = runs / "regressor.joblib"

    def fit_stage() -> None:
        observations = read_csvs(mixture_csv, loss_csv)
        if len(observations) < max(experiment.fit.folds, 4):
            raise ConfigError(loss_csv, f"only {len(observations)} usable proxy runs; need at least "
                                        f"{max(experiment.fit.folds, 4)} to fit")
        model = fit(observations, experiment.fit.regressors, targets=list(objective), folds=experiment.fit.folds)
        model.save(model_path)

    stages.run("fit", fingerprint(_files_fingerprint([mixture_csv, loss_csv]), dataclasses.asdict(experiment.fit),
                                  objective), fit_stage, report)
    model = load_model(model_path)

    def simulate_stage() -> None:
        sim = experiment.simulation
        result = simulate(model, natural, objective, sim.candidates, sim.top_k, experiment.synthesis,
                          refine=sim.refine)
        config = optimal_config(result, model, objective, sim.large_model, experiment.synthesis)
        save_run_config(config, experiment.optimal)
        plot_mixtures(natural, result.mixture, runs / "optimal_vs_natural.png")

    stages.run("simulate", fingerprint(_files_fingerprint([model_path]), dataclasses.asdict(experiment.simulation),
                                       objective), simulate_stage, report)

    optimal = load_run_config(experiment.optimal)
    summary = {
        "objective": objective, "proxies": len(paths),
        "proxies_failed": sum(e.status == "failed" for e in entries),
        "regressor": model.name, "cv": model.cv,
        "predicted_loss": optimal.extra.get("predicted_loss"),
        "predicted_loss_spread": optimal.extra.get("predicted_loss_spread"),
        "natural": natural.to_dict(), "optimal": optimal.train.to_dict(),
        "files": {"optimal_mixture": str(experiment.optimal), "configs": str(configs),
                  "runs": str(runs / "proxies"), "regressor": str(model_path),
                  "plots": [str(runs / "proxy_mixtures.png"), str(runs / "optimal_vs_natural.png")]},
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_atomic(runs / "report.json", json.dumps(summary, indent=1))
    report(format_report(summary))
    return summary


def format_report(summary: Mapping[str, Any]) -> str:
    cv = summary["cv"]
    spearman = sum(v["spearman"] for v in cv.values()) / len(cv) if cv else float("nan")
    objective = ", ".join(f"{k} x{v:g}" for k, v in summary["objective"].items())
    lines = [
        "", "== RegMix report ==",
        f"target:        mean validation loss of {objective}",
        f"proxies:       {summary['proxies']} ({summary['proxies_failed']} failed)",
        f"regressor:     {summary['regressor']}, CV Spearman {spearman:.3f}",
        f"predicted:     {summary['predicted_loss']} (spread {summary['predicted_loss_spread'] or 'n/a'})",
        f"{'domain':<24}{'natural':>10}{'optimal':>10}",
    ]
    for domain, weight in summary["natural"].items():
        lines.append(f"{domain:<24}{weight:>10.3f}{summary['optimal'].get(domain, 0.0):>10.3f}")
    files = summary["files"]
    lines += [f"optimal mixture: {files['optimal_mixture']}  (train it: model_training/pretrain_1b.sh "
              f"{files['optimal_mixture']})",
              f"plots:           {', '.join(files['plots'])}",
              f"runs:            {files['runs']}",
              f"finished in {summary['seconds']}s"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m regmix.pipeline", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="experiment YAML (default: the embedded default experiment)")
    args = p.parse_args(argv)
    try:
        experiment = load_experiment(args.config) if args.config else Experiment()
        return run_pipeline(experiment)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
