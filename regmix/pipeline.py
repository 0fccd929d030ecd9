"""The whole RegMix pipeline from one experiment YAML (settings: `regmix.study.experiment`): prepare ->
synthesize -> train the proxy sweep -> collect -> fit -> simulate, then a short report.

Resumable at every stage: a stage whose inputs and settings are unchanged since it last finished is
skipped (stamps in runs/<name>/stages.json), and the sweep skips finished runs and resumes interrupted
ones. With no --config it runs the embedded default experiment (the README's `make demo`).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from regmix.cli import ArgumentParser, run_command
from regmix.core.files import ConfigError, read_yaml, write_atomic
from regmix.core.mixture import Mixture
from regmix.core.observations import read_csvs
from regmix.core.results import load_result
from regmix.core.schema import RESULT_NAME, loss_csv_name, mixture_csv_name
from regmix.data.corpus import CorpusManifest
from regmix.regression.fit import fit, load_model
from regmix.regression.optimum import epochs, large_run_tokens, repetition_caps
from regmix.regression.simulate import exact_simulation, optimal_config, simulate
from regmix.search.synthesize import plot_weights, synthesize, write_configs
from regmix.settings.run_config import RunConfig, load_run_config, run_config_paths, save_run_config
from regmix.study.collect import collect
from regmix.study.experiment import Experiment, load_experiment, prepare_experiment_corpus, with_executor
from regmix.study.optimal_mixture import large_run_settings, mixture_report, plot_mixtures
from regmix.study.search_run import run_search
from regmix.study.verify import format_verification, gain_against_floor, noise_floor, seed_runs, verification
from regmix.train.executor import add_executor_arguments
from regmix.train.sweep import train_sweep

ANCHOR = "anchor_"  # config name prefix of the natural and uniform runs with seeds


class Stages:
    """Stamps of finished stages: a stage is skipped when its fingerprint is the one stamped and the files it
    made are there. Each stamp keeps the seconds the stage took, so a re-run reports the work, not the skips."""

    def __init__(self, path: Path):
        self.path = path
        done = read_yaml(path) if path.exists() else {}
        if not isinstance(done, dict):
            raise ConfigError(path, "not a mapping of stage stamps; delete it to run every stage again")
        # stamps of earlier versions are the fingerprint alone
        self.done = {k: v if isinstance(v, dict) else {"fingerprint": v, "seconds": None} for k, v in done.items()}

    def run(self, name: str, fingerprint: str, action: Callable[[], Any], report: Callable[[str], None],
            outputs: Sequence[Path] = ()) -> bool:
        if self.done.get(name, {}).get("fingerprint") == fingerprint and all(p.exists() for p in outputs):
            report(f"[{name}] up to date, skipped")
            return False
        started = time.perf_counter()
        action()
        self.record(name, fingerprint, time.perf_counter() - started)
        report(f"[{name}] done in {self.done[name]['seconds']:.1f}s")
        return True

    def record(self, name: str, fingerprint: str, seconds: float) -> None:
        self.done[name] = {"fingerprint": fingerprint, "seconds": round(seconds, 1)}
        write_atomic(self.path, json.dumps(self.done, indent=1))

    def seconds(self) -> float:
        """The time every stage took when it last ran (the work behind the current results)."""
        return round(sum(v.get("seconds") or 0.0 for v in self.done.values()), 1)


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _files_fingerprint(paths: Sequence[Path]) -> list:
    return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in paths if p.exists()]


def run_pipeline(experiment: Experiment, report: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or resume) every stage of `experiment`; returns the summary that is printed at the end.

    An experiment whose `method:` is a sequential search (bo, turbo, random) runs `regmix.search` instead.
    """
    if experiment.method != "regmix":
        return run_search(experiment, report=report)
    started = time.perf_counter()
    runs, configs = experiment.runs, experiment.configs
    runs.mkdir(parents=True, exist_ok=True)
    stages = Stages(runs / "stages.json")
    manifest, objective = prepare_experiment_corpus(experiment, report)
    natural = manifest.token_distribution()

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
    seeds = [experiment.proxy.seed + k for k in range(experiment.sweep.anchor_seeds)]
    empty = set(manifest.empty_domains("train"))
    anchors = {"natural": natural, "uniform": Mixture.uniform([d for d in manifest.train_domains if d not in empty])}

    def anchors_stage() -> None:
        for old in configs.glob(f"{ANCHOR}*.yaml"):
            old.unlink()
        write_seeded_configs(anchors, seeds, configs, ANCHOR, manifest.valid_domains, experiment)

    stages.run("anchors", fingerprint(synth_key, seeds), anchors_stage, report)
    paths = run_config_paths(configs)

    report(f"[train] {len(paths)} proxies ({experiment.proxy.model_name}, {experiment.proxy.max_step} steps)")
    training_started = time.perf_counter()
    entries = train_sweep(paths, manifest, runs / "proxies", **experiment.sweep.train_options(), report=report)
    if any(e.status in ("finished", "failed") for e in entries):  # something trained (not only skipped)
        key, earlier = fingerprint(synth_key, seeds), stages.done.get("train", {})
        before = (earlier.get("seconds") or 0.0) if earlier.get("fingerprint") == key else 0.0  # a resumed sweep
        stages.record("train", key, before + time.perf_counter() - training_started)

    results = sorted((runs / "proxies").glob("*/result.json"))
    mixture_csv, loss_csv = runs / mixture_csv_name("proxy"), runs / loss_csv_name("corpus", "proxy")

    def collect_stage() -> None:
        collection = collect(configs, runs=runs / "proxies")
        report(collection.report.summary())
        collection.observations.save(mixture_csv, loss_csv)

    stages.run("collect", fingerprint(_files_fingerprint(results), synth_key), collect_stage, report,
               outputs=[mixture_csv, loss_csv])

    model_path = runs / "regressor.npz"

    def fit_stage() -> None:
        observations = read_csvs(mixture_csv, loss_csv)
        if len(observations) < max(experiment.fit.folds, 4):
            raise ConfigError(loss_csv, f"only {len(observations)} usable proxy runs; need at least "
                                        f"{max(experiment.fit.folds, 4)} to fit")
        model = fit(observations, experiment.fit.regressors, targets=list(objective), folds=experiment.fit.folds)
        model.save(model_path)

    stages.run("fit", fingerprint(_files_fingerprint([mixture_csv, loss_csv]), dataclasses.asdict(experiment.fit),
                                  objective), fit_stage, report, outputs=[model_path])
    model = load_model(model_path)

    def simulate_stage() -> None:
        sim = experiment.simulation
        tokens = {d: manifest.tokens("train", d) for d in model.domains}
        target_tokens = large_run_tokens(large_run_settings(sim.large_model))
        caps = repetition_caps(tokens, model.domains, target_tokens, sim.repetitions) if sim.repetitions else None
        result = simulate(model, natural, objective, sim.candidates, sim.top_k, experiment.synthesis,
                          refine=sim.refine, caps=None if caps is None else caps.caps)
        if sim.optimum == "exact":
            result = exact_simulation(result, model, objective, natural, experiment.synthesis, caps, sim.kl,
                                      sim.guard_margin)
        weights = result.mixture.to_dict()
        extra = {"epochs": {d: round(float(e), 4) for d, e in epochs(weights, tokens, target_tokens).items()},
                 "optimum": sim.optimum, "kl": sim.kl, "guard_margin": sim.guard_margin}
        if caps is not None:
            extra["repetition_caps"] = {"repetitions": sim.repetitions, "epoch_limit": round(float(caps.limit), 4),
                                        "target_tokens": target_tokens,
                                        "caps": {d: round(float(c), 6) for d, c in zip(caps.domains, caps.caps)},
                                        "binding": caps.binding(result.mixture.weights)}
        config = optimal_config(result, model, objective, sim.large_model, experiment.synthesis, **extra)
        save_run_config(config, experiment.optimal)
        plot_mixtures(natural, result.mixture, runs / "optimal_vs_natural.png")

    stages.run("simulate", fingerprint(_files_fingerprint([model_path]), dataclasses.asdict(experiment.simulation),
                                       objective), simulate_stage, report, outputs=[experiment.optimal])

    optimal = load_run_config(experiment.optimal)
    checks = check_optimum(experiment, manifest, optimal, anchors, seeds, objective, stages, report)
    summary = {
        "objective": objective, "proxies": len(paths),
        "proxies_failed": sum(e.status == "failed" for e in entries),
        "regressor": model.name, "cv": model.cv, "extrapolation": model.extrapolation,
        "predicted_loss": optimal.extra.get("predicted_loss"),
        "predicted_loss_spread": optimal.extra.get("predicted_loss_spread"),
        "natural": natural.to_dict(), "optimal": optimal.train.to_dict(),
        "epochs": optimal.extra.get("epochs"), "repetition_caps": optimal.extra.get("repetition_caps"),
        "files": {"optimal_mixture": str(experiment.optimal), "configs": str(configs),
                  "runs": str(runs / "proxies"), "regressor": str(model_path),
                  "plots": [str(runs / "proxy_mixtures.png"), str(runs / "optimal_vs_natural.png")]},
        **checks, "seconds": round(time.perf_counter() - started, 1), "work_seconds": stages.seconds(),
    }
    write_atomic(runs / "report.json", json.dumps(summary, indent=1))
    report(format_report(summary))
    return summary


def write_seeded_configs(mixtures: Mapping[str, Mixture], seeds: Sequence[int], folder: Path, prefix: str,
                         valid: Sequence[str], experiment: Experiment) -> list[Path]:
    """Proxy configs `<prefix><name>_s<k>.yaml`: each mixture once per seed, the proxies' settings otherwise."""
    paths = []
    for name, mixture in mixtures.items():
        for k, seed in enumerate(seeds):
            path = folder / f"{prefix}{name}_s{k}.yaml"
            training = dataclasses.replace(experiment.proxy, seed=seed)
            save_run_config(RunConfig(path.stem, mixture, tuple(valid), training, experiment.synthesis.as_config()),
                            path)
            paths.append(path)
    return paths


def check_optimum(experiment: Experiment, manifest: CorpusManifest, optimal: RunConfig,
                  anchors: Mapping[str, Mixture], seeds: Sequence[int], objective: Mapping[str, float],
                  stages: Stages, report: Callable[[str], None]) -> dict[str, Any]:
    """The noise floor of the anchors and, with `simulation.verify`, the optimum trained with their seeds."""
    if not seeds:
        return {}
    proxies = experiment.runs / "proxies"
    try:
        baselines = [seed_runs(name, [load_result(proxies / f"{ANCHOR}{name}_s{k}") for k in range(len(seeds))
                                      if (proxies / f"{ANCHOR}{name}_s{k}" / RESULT_NAME).exists()], objective)
                     for name in anchors]
    except ValueError as exc:
        report(f"[verify] no noise floor: {exc}")
        return {}
    floor, predicted = noise_floor(baselines), optimal.extra.get("predicted_loss")
    checks: dict[str, Any] = {"noise_floor": floor,
                              "gain": gain_against_floor(baselines[0], predicted, floor) if predicted else None}
    if not experiment.simulation.verify:
        return checks
    folder, runs = experiment.configs.parent / "config_verify", experiment.runs / "verify"

    def verify_stage() -> None:
        paths = write_seeded_configs({"optimal": optimal.train}, seeds, folder, "", manifest.valid_domains,
                                     experiment)
        train_sweep(paths, manifest, runs, **experiment.sweep.train_options(), report=report)

    stages.run(
        "verify", fingerprint(optimal.train.to_dict(), seeds, dataclasses.asdict(experiment.proxy)), verify_stage,
        report)
    try:
        mine = seed_runs("optimal", [load_result(p.parent) for p in sorted(runs.glob("optimal_s*/result.json"))],
                         objective)
    except ValueError as exc:
        report(f"[verify] {exc}")
        return checks
    return {**checks, "verification": verification(mine, baselines, predicted)}


def format_report(summary: Mapping[str, Any]) -> str:
    cv = summary["cv"]
    spearman = sum(v["spearman"] for v in cv.values()) / len(cv) if cv else float("nan")
    extrapolation = summary.get("extrapolation") or {}
    far = f", on the farthest runs {sum(v['spearman'] for v in extrapolation.values()) / len(extrapolation):.3f}" \
        if extrapolation else ""
    objective = ", ".join(f"{k} x{v:g}" for k, v in summary["objective"].items())
    lines = [
        "", "== RegMix report ==",
        f"target:        mean validation loss of {objective}",
        f"proxies:       {summary['proxies']} ({summary['proxies_failed']} failed)",
        f"regressor:     {summary['regressor']}, CV Spearman {spearman:.3f}{far}",
        f"predicted:     {summary['predicted_loss']} (spread {summary['predicted_loss_spread'] or 'n/a'})",
    ]
    files = summary["files"]
    lines += mixture_report(summary["natural"], summary["optimal"], files["optimal_mixture"])
    caps = summary.get("repetition_caps")
    if caps:
        raised = "" if caps["epoch_limit"] == caps["repetitions"] else \
            f" (raised from R = {caps['repetitions']:g}: the corpus cannot fill the run in R epochs)"
        lines.append(f"caps:            at most {caps['epoch_limit']:g} epochs of a domain in the large run's "
                     f"{caps['target_tokens']:,} tokens{raised}; binding: {', '.join(caps['binding']) or 'none'}")
    if summary.get("epochs"):
        lines.append("epochs:          " + ", ".join(f"{d} {e:.3g}" for d, e in summary["epochs"].items()))
    if summary.get("gain"):
        lines.append(summary["gain"])
    if summary.get("verification"):
        lines += format_verification(summary["verification"])
    lines += [f"plots:           {', '.join(files['plots'])}",
              f"runs:            {files['runs']}",
              f"finished in {summary['seconds']}s (the stages behind these results took "
              f"{summary.get('work_seconds', summary['seconds'])}s when they ran)"]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = ArgumentParser(prog="python -m regmix.pipeline", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="experiment YAML (default: the embedded default experiment)")
    add_executor_arguments(p)
    args = p.parse_args(argv)
    return run_pipeline(with_executor(load_experiment(args.config) if args.config else Experiment(), args))


if __name__ == "__main__":
    raise SystemExit(run_command(main))
