"""A sequential mixture search with real proxy runs: ask -> train the batch -> tell, until a budget of runs.

Every proxy is trained by the sweep machinery (`regmix.train.sweep`: the one training loop, many
proxies at once on a GPU, resumable runs). The search's state (`regmix.study.state`: the proposer and
every trial) is written after every change: a search killed at any moment continues where it stopped,
with the proposals it had drawn and without training a finished run again. It can start from
existing runs (a RegMix sweep's run folder or CSVs), which count in the budget. Outputs, in the
experiment's `search_<method>/` folders: optimal_mixture.yaml (as the RegMix path writes it), the runs
in RegMix's CSV layout (for `regmix.regression.fit`), convergence.png, and a wandb run of the search's progress
next to one wandb run per trial.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from regmix.core.files import ConfigError, write_atomic
from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.observations import Observations, read_csvs
from regmix.core.results import load_result
from regmix.core.schema import RESULT_NAME, loss_csv_name, mixture_csv_name, run_index
from regmix.core.space import SearchSpace
from regmix.data.corpus import CorpusManifest
from regmix.search import make_proposer
from regmix.search.proposer import Recommendation
from regmix.settings.run_config import RunConfig, save_run_config
from regmix.settings.training import TrainingSettings
from regmix.study.experiment import Experiment, check_search_settings, prepare_experiment_corpus
from regmix.study.optimal_mixture import mixture_report, optimal_run_config, plot_mixtures
from regmix.study.state import STATE_NAME, Search, Trial
from regmix.train.engine import resolve_device
from regmix.train.executor import parallel_tasks
from regmix.train.runlog import resolve_wandb_mode
from regmix.train.sweep import CUDA_GROUP_SIZE, train_sweep


class SearchLog:
    """The search's own wandb run: objective, best so far and the recommendation, per recorded run.

    Opened and finished around each round's rows (resuming its id): the trials' own wandb runs are
    opened in between, and wandb keeps one run per process.
    """

    def __init__(self, folder: Path, name: str, mode: str, group: str):
        self.folder, self.name, self.mode, self.group = folder, name, resolve_wandb_mode(mode), group

    def log(self, rows: Sequence[dict[str, float]], run_id: str | None) -> str | None:
        if self.mode == "off" or not rows:
            return run_id
        import wandb

        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False,
                                  disable_git=True, x_save_requirements=False)
        run = wandb.init(project="regmix", group=self.group, name=self.name, id=run_id, resume="allow",
                         dir=self.folder, mode=self.mode, reinit="finish_previous", settings=settings)
        run.define_metric("search/runs")
        run.define_metric("search/*", step_metric="search/runs")
        for row in rows:
            run.log(row)
        run.finish()
        return run.id


COMPARABLE = ("model_name", "max_step", "block_size", "global_batch_size", "learning_rate", "lr_schedule",
              "eval_tokens")  # settings a run must share with the search's proxies for its loss to compare


def imported_runs(start_from: str | Sequence[str], domains: Sequence[str], objective: Objective,
                  proxy: TrainingSettings) -> list[tuple[str, Mixture, dict[str, float], str]]:
    """(name, achieved mixture, valid losses, source) of the finished runs of a run folder or a CSV pair.

    Runs of a folder must have been trained with the proxy settings of the search (COMPARABLE); CSVs
    carry no settings, so their runs are taken as they are.
    """
    if not isinstance(start_from, str):
        mixture_csv, loss_csv = start_from
        observations = read_csvs(mixture_csv, loss_csv)
        runs = [(f"n{i}" if isinstance(i, int) else str(i), Mixture(observations.domains, row),
                 dict(zip(observations.targets, losses)), str(mixture_csv))
                for i, row, losses in zip(observations.index, observations.mixtures, observations.losses)]
        sources = [(str(mixture_csv), str(loss_csv))] * len(runs)
    else:
        folder = Path(start_from)
        if not folder.is_dir():
            raise ConfigError(folder, "no such run folder (give a sweep's proxies/ folder or [mixture CSV, loss CSV])")
        results = [(p, load_result(p)) for p in sorted(folder.glob(f"*/{RESULT_NAME}"))]
        wanted = dataclasses.asdict(proxy)
        for path, result in results:
            other = [f"{k} {result.settings[k]!r} (the search: {wanted[k]!r})" for k in COMPARABLE
                     if k in result.settings and result.settings[k] != wanted[k]]
            if other:
                raise ConfigError(path, f"trained with other settings than the search's proxies: {', '.join(other)}; "
                                        "its loss does not compare")
        runs = [(r.name, r.mixture, r.valid_losses, str(p)) for p, r in results if r.ok]
        sources = [(source, source) for *_, source in runs]
        if not runs:
            raise ConfigError(folder, f"no finished run (<run>/{RESULT_NAME}) to start from")
    for (name, mixture, losses, _), (mixture_source, loss_source) in zip(runs, sources):
        for source, problem in ((mixture_source, _problem(mixture.vector, domains)),
                                (loss_source, _problem(objective.value, losses))):
            if problem:
                raise ConfigError(source, f"run {name} cannot join this search: {problem}")
    return runs


def _problem(check: Callable[[Any], Any], value: Any) -> str | None:
    try:
        check(value)
    except ValueError as exc:
        return str(exc)
    return None


def plot_convergence(search: Search, path: Path) -> Path:
    """Best objective so far against runs, each run's objective, and the recommendation per round."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = search.recorded()
    values = np.array([search.proposer.objective.value(t.losses or {}) for t in trials])
    x = np.arange(1, len(values) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    imported = np.array([t.source != "search" for t in trials])
    if imported.any():
        ax.scatter(x[imported], values[imported], s=10, color="grey", label="started from")
    ax.scatter(x[~imported], values[~imported], s=12, color="tab:blue", label="proposed runs")
    ax.step(x, np.minimum.accumulate(values), where="post", color="tab:blue", label="best observed so far")
    if search.rounds:
        runs = [r["runs"] for r in search.rounds]
        predicted = np.array([r["predicted"] for r in search.rounds])
        spread = np.array([r["uncertainty"] or 0.0 for r in search.rounds])
        ax.errorbar(runs, predicted, yerr=spread, fmt="o-", color="tab:red", capsize=3,
                    label="recommended (predicted +- uncertainty)")
    ax.set_xlabel("proxy runs")
    ax.set_ylabel("objective (weighted validation loss)")
    ax.set_title(f"{search.proposer.name} search")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _identity(experiment: Experiment, space: SearchSpace, objective: Objective) -> dict[str, Any]:
    return {"method": experiment.method, "seed": experiment.search.seed, "settings": experiment.search.settings,
            "objective": dict(objective.weights), "domains": list(space.domains),
            "batch": experiment.search.batch,
            "lower": space.lower.round(12).tolist(), "upper": space.upper.round(12).tolist(),
            "proxy": dataclasses.asdict(experiment.proxy), "synthesis": dataclasses.asdict(experiment.synthesis),
            "start_from": experiment.search.start_from}


def _pipeline_settings(experiment: Experiment) -> dict[str, Any]:
    """What a method shares with the pipeline: the synthesis prior, and for regmix the fit and simulation."""
    shared: dict[str, Any] = {}
    if experiment.method == "regmix":
        shared |= {"regressor": list(experiment.fit.regressors), "folds": experiment.fit.folds,
                   "candidates": experiment.simulation.candidates, "top_k": experiment.simulation.top_k}
    return shared


def batch_size(experiment: Experiment) -> int:
    """`search.batch`, or what trains at once: a GPU's proxy group, or one proxy per CPU worker (on Ray: per
    task the cluster runs at once)."""
    if experiment.search.batch:
        return experiment.search.batch
    executor = experiment.sweep.make_executor()
    if executor.kind == "ray":
        gpus = executor.task_gpus(experiment.sweep.device)
        return parallel_tasks(executor, gpus) * (CUDA_GROUP_SIZE if gpus else 1)
    if resolve_device(experiment.sweep.device).type == "cuda":
        return CUDA_GROUP_SIZE
    return experiment.sweep.workers or os.cpu_count() or 1


def run_search(experiment: Experiment, report: Callable[[str], None] = print,
               train: Callable[..., Any] = train_sweep) -> dict[str, Any]:
    """Run (or resume) the search of `experiment` to its budget; the summary printed at the end."""
    started = time.perf_counter()
    settings = experiment.search
    check_search_settings(settings, experiment.source)
    manifest, objective_weights = prepare_experiment_corpus(experiment, report)
    natural = manifest.token_distribution()
    space = SearchSpace.around(natural, experiment.synthesis.maximum_usage, settings.bounds, experiment.source)
    objective = Objective(objective_weights)
    batch = batch_size(experiment)
    proposer = make_proposer(experiment.method, space, objective, settings.seed,
                             {**_pipeline_settings(experiment), **settings.settings}, experiment.source,
                             synthesis=experiment.synthesis)
    runs = experiment.search_runs
    search = Search(runs / STATE_NAME, proposer, _identity(experiment, space, objective))
    if search.path.exists():
        search.load()
        report(f"[search] resuming {search.path}: {len(search.recorded())} runs recorded")
    elif settings.start_from:
        start = imported_runs(settings.start_from, space.domains, objective, experiment.proxy)
        for name, mixture, losses, source in start:
            trial = Trial(name, mixture.to_dict(), 0, "recorded", mixture.to_dict(), dict(losses), source)
            search.trials.append(trial)
        proposer.tell([m for _, m, _, _ in start], [losses for _, _, losses, _ in start])
        search.save()
        report(f"[search] starting from {len(start)} runs of {settings.start_from}")
    log = SearchLog(runs, f"search-{experiment.method}", experiment.sweep.wandb, experiment.name)
    while True:
        pending = [t for t in search.trials if t.pending]
        if not pending:
            if len(search.trials) >= settings.budget:
                break
            try:
                mixtures = proposer.ask(min(batch, settings.budget - len(search.trials)))
            except ValueError as exc:
                raise ConfigError(search.path, f"the {proposer.name} search cannot propose: {exc}") from None
            round_id = max((t.round for t in search.trials), default=0) + 1
            names = search.next_names(len(mixtures))
            search.trials += [Trial(name, m.to_dict(), round_id) for name, m in zip(names, mixtures)]
            search.save()
            pending = search.trials[-len(mixtures):]
        report(f"[search] round {pending[0].round}: training {len(pending)} proxies "
               f"({len(search.trials)} of {settings.budget} runs)")
        _train_round(search, pending, experiment, manifest, train, report)
        _record(search, pending)
        if not search.recorded():
            continue  # every run so far failed (the sweep said why); the budget still bounds the search
        recommendation = proposer.recommend()
        search.rounds.append({"runs": len(search.recorded()), "predicted": recommendation.predicted,
                              "uncertainty": recommendation.uncertainty,
                              "mixture": recommendation.mixture.to_dict()})
        search.save()
        _log_progress(search, log)
        report(f"[search] {len(search.recorded())} runs: best observed {min(_values(search)):.4f}, recommended "
               f"{_describe(recommendation)}")
    return _finish(search, experiment, natural, objective, time.perf_counter() - started, report)


def _train_round(search: Search, trials: Sequence[Trial], experiment: Experiment, manifest: CorpusManifest,
                 train: Callable[..., Any], report: Callable[[str], None]) -> None:
    """Write the trials' configs, train them with the sweep (resuming any checkpoint), read their results."""
    paths = []
    for trial in trials:
        if trial.status == "proposed":
            config = RunConfig(trial.name, Mixture.from_dict(trial.requested, normalize=True), manifest.valid_domains,
                               experiment.proxy, experiment.synthesis.as_config(),
                               {"search_method": experiment.method, "search_round": trial.round})
            save_run_config(config, experiment.search_configs / f"{trial.name}.yaml")
            trial.mark("training")
            search.save()
        if trial.status == "training":
            paths.append(experiment.search_configs / f"{trial.name}.yaml")
    entries = train(paths, manifest, experiment.search_runs / "proxies", **experiment.sweep.train_options(),
                    report=report) if paths else []
    failed = {e.name: e.detail for e in entries if e.status == "failed"}
    for trial in trials:
        if trial.status == "training":
            status, values = _outcome(trial, experiment.search_runs / "proxies" / trial.name / RESULT_NAME,
                                      failed.get(trial.name), search.proposer.objective)
            trial.mark(status, **values)
            search.save()


def _outcome(trial: Trial, path: Path, failure: str | None, objective: Objective) -> tuple[str, dict[str, Any]]:
    """The trial's next status and values from its sweep entry and result: only its own finished run counts."""
    if failure is not None:
        return "failed", {"error": failure}
    if not path.exists():
        return "failed", {"error": f"no {path} after training (see the sweep's report)"}
    result = load_result(path)
    if not result.ok:
        return "failed", {"error": result.error or f"status {result.status}"}
    if not result.requested.close_to(Mixture.from_dict(trial.requested, normalize=True), atol=1e-6):
        return "failed", {"error": f"{path} is the result of another mixture than this trial's"}
    try:
        objective.value(result.valid_losses)
    except ValueError as exc:
        return "failed", {"error": f"{path}: {exc}"}
    return "trained", {"achieved": result.mixture.to_dict(), "losses": dict(result.valid_losses)}


def _record(search: Search, trials: Sequence[Trial]) -> None:
    """Tell the proposer the trained trials; trial states and proposer state land in one write."""
    trained = [t for t in trials if t.status == "trained"]
    search.proposer.tell([Mixture.from_dict(t.achieved or t.requested, normalize=True) for t in trained],
                         [t.losses or {} for t in trained])
    for trial in trained:
        trial.mark("recorded")
    search.save()


def _values(search: Search) -> list[float]:
    return [search.proposer.objective.value(t.losses or {}) for t in search.recorded()]


def _describe(recommendation: Recommendation) -> str:
    spread = "" if recommendation.uncertainty is None else f" +- {recommendation.uncertainty:.4f}"
    return f"{recommendation.predicted:.4f}{spread} ({recommendation.basis})"


def _log_progress(search: Search, log: SearchLog) -> None:
    values = _values(search)
    rows = [{"search/runs": i + 1, "search/objective": v, "search/best_observed": min(values[:i + 1])}
            for i, v in enumerate(values) if i >= search.logged]
    if rows and search.rounds:
        rows[-1] |= {"search/recommended_predicted": search.rounds[-1]["predicted"]}
    search.wandb_id = log.log(rows, search.wandb_id)
    search.logged = len(values)
    search.save()


def _finish(search: Search, experiment: Experiment, natural: Mixture, objective: Objective, seconds: float,
            report: Callable[[str], None]) -> dict[str, Any]:
    """Write optimal_mixture.yaml, the CSVs and the plots; the summary."""
    recorded = search.recorded()
    if not recorded:
        raise ConfigError(search.path, "no proxy run of the search finished: nothing to recommend "
                                       "(see the failed trials in this file)")
    recommendation = search.proposer.recommend()
    config = optimal_run_config(recommendation.mixture, dict(objective.weights), recommendation.predicted,
                                recommendation.uncertainty, experiment.simulation.large_model, experiment.synthesis,
                                search_method=experiment.method, search_runs=len(recorded),
                                recommended_by=recommendation.basis)
    save_run_config(config, experiment.search_optimal)
    runs = experiment.search_runs
    csvs = _observations(recorded, natural.domains).save(runs / mixture_csv_name("proxy"),
                                                          runs / loss_csv_name("corpus", "proxy"))
    plots = [plot_convergence(search, runs / "convergence.png"),
             plot_mixtures(natural, recommendation.mixture, runs / "optimal_vs_natural.png")]
    values = _values(search)
    summary = {
        "method": experiment.method, "objective": dict(objective.weights), "runs": len(recorded),
        "failed": sum(t.status == "failed" for t in search.trials),
        "started_from": sum(t.source != "search" for t in recorded),
        "best_observed": min(values), "predicted_loss": recommendation.predicted,
        "predicted_loss_spread": recommendation.uncertainty, "recommended_by": recommendation.basis,
        "natural": natural.to_dict(), "optimal": recommendation.mixture.to_dict(),
        "files": {"optimal_mixture": str(experiment.search_optimal), "state": str(search.path),
                  "csv": [str(p) for p in csvs], "plots": [str(p) for p in plots], "runs": str(runs / "proxies")},
        "seconds": round(seconds, 1),
    }
    write_atomic(runs / "report.json", json.dumps(summary, indent=1))
    report(format_search_report(summary))
    return summary


def _observations(trials: Sequence[Trial], domains: Sequence[str]) -> Observations:
    """The recorded runs in RegMix's layout: achieved mixtures over the corpus' domains, every valid loss."""
    targets = tuple(dict.fromkeys(d for t in trials for d in t.losses or {}))
    losses = np.array([[(t.losses or {}).get(d, np.nan) for d in targets] for t in trials])
    mixtures = np.stack([Mixture.from_dict(t.achieved or t.requested, normalize=True).vector(domains) for t in trials])
    return Observations(tuple(domains), targets, tuple(run_index(t.name) for t in trials), mixtures, losses)


def format_search_report(summary: Mapping[str, Any]) -> str:
    spread = summary["predicted_loss_spread"]
    lines = ["", f"== {summary['method']} search report ==",
             f"target:        {', '.join(f'{k} x{v:g}' for k, v in summary['objective'].items())}",
             f"runs:          {summary['runs']} recorded ({summary['started_from']} started from, "
             f"{summary['failed']} failed)",
             f"best observed: {summary['best_observed']:.4f}",
             f"recommended:   predicted {summary['predicted_loss']:.4f}"
             + ("" if spread is None else f" +- {spread:.4f}") + f" ({summary['recommended_by']})"]
    files = summary["files"]
    lines += mixture_report(summary["natural"], summary["optimal"], files["optimal_mixture"])
    lines += [f"runs (CSV):      {', '.join(files['csv'])}",
              f"plots:           {', '.join(files['plots'])}",
              f"finished in {summary['seconds']}s"]
    return "\n".join(lines)
