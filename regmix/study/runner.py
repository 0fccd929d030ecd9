"""The study runner: every method of mixture search on one loop, with the same evidence.

A study is an experiment (regmix.study.experiment) and a method: any proposer of `regmix.search`,
RegMix offline (`regmix`: one batch, fit, simulate), sequential (`random`, `bo`, `turbo`) or online
(`stratified`, `natural`, `grid`, `dml`, `aioli`, `doremi`, `doge`, `skillit`: runs that carry a
`schedule:`). For every method the runner does the same:

1. the corpus (prepared incrementally), the objective (regmix.core.objective) and the search space
   (usage bounds, the user's bounds, the large run's repetition caps: regmix.core.space);
2. the anchors: natural and uniform, `sweep.anchor_seeds` seeds each, trained with the first round
   and shared by every method of the experiment (the noise floor; told to the offline and sequential
   methods as observations);
3. rounds of ask -> write configs -> train (regmix.train.sweep, any executor) -> collect -> tell, up
   to the budget (`sweep.num_configs` for regmix, `search.budget` for the sequential methods) or the
   end of an online method's sequence;
4. the recommendation, kept to the repetition caps -> `mixture_config/<name>/<method>/optimal_mixture.yaml`;
5. verification: the recommendation trained with the anchors' seeds (`simulation.verify`), and more seeds of
   it and of a baseline while Welch's test leaves them undecided (`simulation.max_seeds`);
6. the report (regmix.study.report): report.json, report.md, the CSVs, the plots.

Methods learn from the losses on the probe part of each valid domain; every run is scored (anchors,
verification, the report) on the held-out part (regmix.data.validation).

Every run lives in `runs/<name>/proxies/<run>/` with its config in `mixture_config/<name>/config_proxy/`,
so runs of the same content asked by several methods (the anchors, `stratified`, a grid) are trained
once. One resume rule: the study's state file `runs/<name>/<method>/study.json` (regmix.study.state),
written after every change; a state of another identity (corpus, objective, space, proxy settings,
method and the settings that steer its runs) is one error naming the file. Settings that only change
the recommendation (a regmix regressor, the simulation) recompute it without training anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from regmix.cli import RunFailed
from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.results import load_result
from regmix.core.schema import RESULT_NAME, safe_name
from regmix.core.space import SearchSpace
from regmix.regression.optimum import large_run_scale
from regmix.regression.regressors import SCALE_AWARE
from regmix.search import ONLINE, SEQUENTIAL, make_proposer
from regmix.search.proposer import Proposer, Recommendation, RunRequest
from regmix.settings.run_config import RunConfig, save_run_config
from regmix.study.experiment import Experiment
from regmix.study.imports import imported_runs
from regmix.study.report import StudyLog, anchor_baselines, write_report
from regmix.study.state import STATE_NAME, StudyState, Trial, anchor_name, anchor_of
from regmix.study.study import Study, open_study
from regmix.study.verify import seed_runs, verdict
from regmix.train.engine import resolve_device
from regmix.train.executor import parallel_tasks
from regmix.train.sweep import CUDA_GROUP_SIZE, train_sweep

MAX_ROUNDS = 10_000  # a proposer that never says done and asks nothing new stops here


def method_settings(experiment: Experiment, method: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(settings that steer the method's runs, settings that only change its recommendation)."""
    steering = experiment.search.for_method(method, method)
    if method != "regmix":
        return steering, {}
    fit, sim = experiment.fit, experiment.simulation
    scaled = bool(experiment.larger) or bool(set(fit.regressors) & set(SCALE_AWARE))
    return steering, {
        "regressor": list(fit.regressors), "folds": fit.folds, "select": fit.select, "candidates": sim.candidates,
        "top_k": sim.top_k, "refine": sim.refine, "optimum": sim.optimum, "kl": sim.kl,
        "guard_margin": sim.guard_margin, "uncertainty": sim.uncertainty,
        "target_scale": list(large_run_scale(sim.large_run())) if scaled else None}


def identity(study: Study, steering: dict[str, Any]) -> dict[str, Any]:
    """What the runs of a study depend on: a state file of another identity is refused on resume."""
    experiment = study.experiment
    return {"method": study.method, "seed": experiment.search.seed, "settings": steering,
            "objective": study.objective.to_dict(), "domains": list(study.space.domains),
            "lower": study.space.lower.round(12).tolist(), "upper": study.space.upper.round(12).tolist(),
            "proxy": dataclasses.asdict(experiment.proxy), "synthesis": dataclasses.asdict(experiment.synthesis),
            "corpus": study.manifest.fingerprint(), "anchor_seeds": experiment.sweep.anchor_seeds,
            "batch": experiment.search.batch, "start_from": experiment.search.start_from,
            "reuse": None if study.frozen is None else study.frozen.members.to_dict(),
            "larger": [dataclasses.asdict(larger) for larger in experiment.larger] or None}


def study_proposer(study: Study) -> Proposer:
    """The study's method with its settings; an unknown or bad setting is one error naming the experiment."""
    experiment = study.experiment
    steering, recommending = method_settings(experiment, study.method)
    return make_proposer(study.method, study.space, study.objective, experiment.search.seed,
                         {**steering, **recommending}, experiment.origin("search.settings"),
                         synthesis=experiment.synthesis, max_step=experiment.proxy.max_step,
                         run_folder=str(study.pool.resolve()), output=str(study.folder))


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


def run_study(experiment: Experiment, method: str | None = None, domains: Sequence[str] | None = None,
              report: Callable[[str], None] = print, train: Callable[..., Any] = train_sweep) -> dict[str, Any]:
    """Run (or resume) one method of `experiment` to its end; the report's summary."""
    started = time.perf_counter()
    study = open_study(experiment, method, domains, report)
    steering, recommending = method_settings(experiment, study.method)
    proposer = study_proposer(study)
    state = StudyState(study.folder / STATE_NAME, proposer, identity(study, steering))
    report(f"[{study.method}] objective: {study.objective.describe()}")
    if state.path.exists() and state.load():
        check_anchors(study, state)
        report(f"[{study.method}] resuming {state.path}: {len(state.recorded())} runs recorded")
    else:
        if state.path.exists():
            report(f"[{study.method}] {state.path} holds other settings and trained nothing of the method: anew")
        start_study(study, state, report)
    log = StudyLog(study.folder, study.method, experiment.sweep.wandb, experiment.name) \
        if study.method in SEQUENTIAL else None
    for _ in range(MAX_ROUNDS):
        if not any(t.pending and t.source == "method" for t in state.trials):
            ask(study, state, proposer)  # the next round, trained together with any anchors still to train
            add_larger(study, state)
        pending = [t for t in state.trials if t.pending]
        if not pending:
            break
        what = ", ".join(f"{sum(t.source == s for t in pending)} {s}" for s in ("method", "larger", "anchor", "verify")
                         if any(t.source == s for t in pending))
        report(f"[{study.method}] round {pending[-1].round}: training {what} runs "
               f"({len(own_runs(state))} of the method's runs asked)")
        train_trials(study, state, pending, train, report)
        record(study, state, pending)
        if len(proposer):
            note_recommendation(state, proposer, recommending, report)
            if log is not None:
                state.wandb_id, state.logged = log.log(state, state.wandb_id, state.logged)
                state.save()
    if study.method in ONLINE and not proposer.done:  # a run its next step needs failed: no answer to report
        failed = [f"{t.name}: {t.error}" for t in state.trials if t.status == "failed" and t.source == "method"]
        raise RunFailed(f"{state.path}: the {study.method} method could not finish ({'; '.join(failed)}); move the "
                        f"failed run folders out of {study.pool} and delete this file to train them again")
    recommendation, projected = kept_to_caps(study.space, final_recommendation(state, proposer, recommending, report))
    verification = verify(study, state, recommendation.mixture, train, report)
    return write_report(study, state, recommendation, projected, verification, time.perf_counter() - started,
                        report)


def kept_to_caps(space: SearchSpace, recommendation: Recommendation) -> tuple[Recommendation, bool]:
    """The recommendation within the repetition caps (projected onto them if it broke them: an online method's
    answer, say), and whether it was moved; the one mixture written, verified and reported."""
    capped = space.recommendable()
    weights = recommendation.mixture.vector(space.domains)
    if capped.contains(weights, atol=1e-6)[0]:
        return dataclasses.replace(recommendation, mixture=recommendation.mixture.on_domains(space.domains)), False
    moved = space.mixture(capped.project(weights)[0])
    return dataclasses.replace(recommendation, mixture=moved,
                               basis=recommendation.basis + ", projected onto the repetition caps"), True


def check_anchors(study: Study, state: StudyState) -> None:
    """A restored state holds every anchor run the study's seeds ask for (a hand edit may have dropped one)."""
    names = {t.name for t in state.trials}
    missing = [anchor_name(name, k) for name in ("natural", "uniform") for k in range(len(study.seeds))
               if anchor_name(name, k) not in names]
    if missing:
        raise ConfigError(state.path, f"the anchor runs {missing} are missing from this state (edited?); delete it "
                                      "to start over (finished runs are not trained again)")


def own_runs(state: StudyState) -> list[Trial]:
    """The runs that count in the method's budget: its own and those it started from (not anchors)."""
    return [t for t in state.trials if t.source not in ("anchor", "verify")]


def start_study(study: Study, state: StudyState, report: Callable[[str], None]) -> None:
    """A new state: the anchors to train and the runs to start from, told to the proposer."""
    experiment = study.experiment
    for name, mixture in (("natural", study.natural), ("uniform", study.uniform)):
        for k, seed in enumerate(study.seeds):
            state.trials.append(Trial(anchor_name(name, k), mixture.to_dict(), 0, source="anchor", seed=seed))
    if experiment.search.start_from:
        start = imported_runs(experiment.search.start_from, study.space.domains, study.objective, experiment.proxy)
        for name, mixture, losses, source in start:
            state.trials.append(Trial(name, mixture.to_dict(), 0, "recorded", mixture.to_dict(), dict(losses), source))
        state.proposer.tell([m for _, m, _, _ in start], [losses for _, _, losses, _ in start])
        report(f"[{study.method}] starting from {len(start)} runs of {experiment.search.start_from}")
    state.save()


def ask(study: Study, state: StudyState, proposer: Proposer) -> list[Trial]:
    """The proposer's next round as new trials (saved); [] when it is done or the budget is spent."""
    spent = len(own_runs(state))
    if proposer.done or (study.method not in ONLINE and spent >= study.budget):
        return []
    whole = proposer.batch_all and not study.experiment.search.batch  # RegMix's one sweep, unless batches are set
    n = study.budget - spent if whole else min(batch_size(study.experiment), study.budget - spent)
    try:
        requests = proposer.requests(max(n, 1))
    except ValueError as exc:
        raise ConfigError(state.path, f"the {proposer.name} method cannot propose: {exc}") from None
    if not requests:
        return []
    round_id = max((t.round for t in state.trials), default=0) + 1
    prefix = "" if study.method == "regmix" else f"{study.method}_"
    names = iter(state.next_names(sum(r.name is None for r in requests), prefix))
    trials = [trial_of(r, r.name or next(names), round_id) for r in requests]
    known = {t.name for t in state.trials}
    trials = [t for t in trials if t.name not in known]
    state.trials += trials
    state.save()
    return trials


def add_larger(study: Study, state: StudyState) -> None:
    """The `larger:` scales' runs: at each, the first mixtures the method asked for, trained again at its size (topped
    up as rounds bring more of them)."""
    if study.method != "regmix":
        return
    method, known = [t for t in state.trials if t.source == "method"], {t.name for t in state.trials}
    for scale, larger in study.experiment.scales.items():
        state.trials += [Trial(f"{t.name}_{scale}", dict(t.requested), t.round, source="larger", scale=scale)
                         for t in method[:larger.count(study.experiment.sweep.num_configs)]
                         if f"{t.name}_{scale}" not in known]
    state.save()


def trial_of(request: RunRequest, name: str, round_id: int) -> Trial:
    return Trial(safe_name(name, "run name", "<method>"), request.mixture.to_dict(), round_id,
                 policy=None if request.policy is None else dict(request.policy),
                 keep_checkpoint=request.keep_checkpoint, valid=None if request.valid is None else list(request.valid))


def train_trials(study: Study, state: StudyState, trials: Sequence[Trial], train: Callable[..., Any],
                 report: Callable[[str], None]) -> None:
    """Write the trials' configs, train them with the sweep (resuming any checkpoint), read their results."""
    experiment, manifest = study.experiment, study.manifest
    paths = []
    for trial in trials:
        path = experiment.configs / f"{trial.name}.yaml"
        if trial.status == "proposed":
            training = experiment.training(trial.scale)
            training = training if trial.seed is None else dataclasses.replace(training, seed=trial.seed)
            config = RunConfig(trial.name, study.expand(Mixture.from_dict(trial.requested, normalize=True)),
                               tuple(trial.valid or manifest.valid_domains), training,
                               experiment.synthesis.as_config(), policy=trial.policy)
            save_run_config(config, path)
            trial.mark("training")
            state.save()
        if trial.status == "training":
            paths.append(path)
    keep = [t.name for t in trials if t.keep_checkpoint]
    entries = train(paths, manifest, study.pool, **experiment.sweep.train_options(), keep=keep,
                    report=report) if paths else []
    failed = {e.name: e.detail for e in entries if e.status == "failed"}
    for trial in trials:
        if trial.status == "training":
            status, values = outcome(study, trial, study.pool / trial.name / RESULT_NAME,
                                     failed.get(trial.name))
            trial.mark(status, **values)
            state.save()


def outcome(study: Study, trial: Trial, path: Path, failure: str | None) -> tuple[str, dict[str, Any]]:
    """The trial's next status and values from its sweep entry and result: only its own finished run counts (its
    achieved mixture over the study's domains)."""
    if failure is not None:
        return "failed", {"error": failure}
    if not path.exists():
        return "failed", {"error": f"no {path} after training (see the sweep's report)"}
    result = load_result(path)
    if not result.ok:
        return "failed", {"error": result.error or f"status {result.status}"}
    if not result.requested.close_to(study.expand(Mixture.from_dict(trial.requested, normalize=True)), atol=1e-6):
        return "failed", {"error": f"{path} is the result of another mixture than this run's"}
    try:
        study.objective.value(result.valid_losses)
    except ValueError as exc:
        return "failed", {"error": f"{path}: {exc}"}
    return "trained", {"achieved": study.reduce(result.mixture).to_dict(), "losses": dict(result.valid_losses),
                       "probe_losses": dict(result.probe_losses) or None, "tokens": result.tokens,
                       "seconds": round(result.seconds, 3)}


def record(study: Study, state: StudyState, trials: Sequence[Trial]) -> None:
    """Tell the proposer the trained runs it learns from; trial states and proposer state land in one write."""
    proposer = state.proposer
    trained = [t for t in trials if t.status == "trained"]
    told = [t for t in trained if t.source in ("method", "larger") or (t.source == "anchor" and proposer.uses_anchors)]
    if told:
        proposer.tell_results([t.name for t in told], [study.reduce_result(load_result(study.pool / t.name))
                                                       for t in told])
    for trial in trained:
        trial.mark("recorded")
    state.save()


def _settings_key(recommending: dict[str, Any], runs: int) -> str:
    return hashlib.sha256(json.dumps([recommending, runs], sort_keys=True, default=str).encode()).hexdigest()[:16]


def note_recommendation(state: StudyState, proposer: Proposer, recommending: dict[str, Any],
                        report: Callable[[str], None]) -> Recommendation:
    """The proposer's recommendation after a round, kept in the state (the convergence plot's points)."""
    recommendation = proposer.recommend()
    state.rounds.append({"runs": len(proposer), "predicted": recommendation.predicted,
                         "uncertainty": recommendation.uncertainty, "mixture": recommendation.mixture.to_dict(),
                         "basis": recommendation.basis, "details": dict(recommendation.details),
                         "key": _settings_key(recommending, len(proposer))})
    state.save()
    spread = "" if recommendation.uncertainty is None else f" +- {recommendation.uncertainty:.4f}"
    report(f"[{proposer.name}] {len(proposer)} runs told: recommended, predicted {recommendation.predicted:.4f}"
           f"{spread} ({recommendation.basis})")
    return recommendation


def final_recommendation(state: StudyState, proposer: Proposer, recommending: dict[str, Any],
                         report: Callable[[str], None]) -> Recommendation:
    """The last round's recommendation, or a new one when the settings behind it changed since."""
    if not state.recorded():
        raise ConfigError(state.path, "no run of the study finished: nothing to recommend (see the failed runs "
                                      "in this file)")
    last = state.rounds[-1] if state.rounds else None
    if last is None or last.get("key") != _settings_key(recommending, len(proposer)):
        return note_recommendation(state, proposer, recommending, report)
    return Recommendation(Mixture.from_dict(last["mixture"], normalize=True), last["predicted"],
                          last["uncertainty"], last["basis"], last.get("details", {}))


def verify(study: Study, state: StudyState, mixture: Mixture, train: Callable[..., Any],
           report: Callable[[str], None]) -> list[Trial]:
    """Train the recommendation with the anchors' seeds (`simulation.verify`); while Welch's test leaves it undecided
    against natural or uniform, twice the seeds of it and of each such baseline, up to `simulation.max_seeds`
    (regmix.study.verify). The optimum's verification runs (extra anchor seeds join the anchors)."""
    settings = study.experiment.simulation
    if not settings.verify or not study.seeds:
        return []
    tag = hashlib.sha256(json.dumps(mixture.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    prefix = f"{study.method}_optimal_{tag}_s"
    wanted = [(f"{prefix}{k}", mixture, k) for k in range(len(study.seeds))]
    baselines = {"natural": study.natural, "uniform": study.uniform}
    while True:
        known = {t.name for t in state.trials}
        round_id = max((t.round for t in state.trials), default=0) + 1
        state.trials += [Trial(name, m.to_dict(), round_id, source="verify", seed=study.seed(k))
                         for name, m, k in wanted if name not in known]
        state.save()
        pending = [t for t in state.trials if t.pending and t.source == "verify"]
        if pending:
            report(f"[{study.method}] verification: training {len(pending)} runs "
                   f"({sum(t.name.startswith(prefix) for t in pending)} of the recommendation)")
            train_trials(study, state, pending, train, report)
            record(study, state, pending)
        mine = [t for t in state.trials if t.name.startswith(prefix)]
        done = [t.losses for t in mine if t.status == "recorded" and t.losses]
        if len(done) < 2:
            return mine
        optimum = seed_runs("optimal", done, study.objective)
        undecided = [b.name for b in anchor_baselines(state.recorded(), study.objective)
                     if verdict(optimum, b, settings.significance) == "undecided"]
        if not undecided or len(mine) >= settings.max_seeds:
            return mine
        more = min(2 * len(mine), settings.max_seeds)  # doubling: few rounds of training
        seeds = {name: sum(anchor_of(t.name) == name for t in state.trials) for name in undecided}
        wanted = [(f"{prefix}{k}", mixture, k) for k in range(len(mine), more)] + [
            (anchor_name(name, k), baselines[name], k) for name, have in seeds.items() for k in range(have, more)]
        report(f"[{study.method}] verification: undecided against {', '.join(undecided)} after {len(mine)} seeds: "
               f"{more} seeds")
