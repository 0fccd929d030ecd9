"""What a study leaves, the same for every method: optimal_mixture.yaml, report.json and report.md (the
bottom line first), the runs as RegMix CSVs (for `regmix fit`), convergence.png (objective against
runs), optimal_vs_natural.png, the online run's mixture over steps (weights.png) where a method has
one, and a wandb run of a sequential search's progress.

The evidence is the same for every method: the anchors' noise floor next to the predicted gain, and
the verification (the recommendation trained with the anchors' seeds; regmix.study.verify's rule).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from regmix.core.files import write_atomic
from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.observations import Observations
from regmix.core.results import load_result, run_scale
from regmix.core.schema import (
    HISTORY_NAME,
    PIPELINE_SCALE,
    RESULT_NAME,
    STEP,
    corpus_tag,
    loss_column,
    loss_csv_name,
    mixture_csv_name,
    run_index,
)
from regmix.regression.fit import cv_plot_path
from regmix.regression.optimal_mixture import mixture_report, optimal_run_config, plot_mixtures
from regmix.regression.optimum import epochs, large_run_tokens
from regmix.search.proposer import Recommendation
from regmix.search.regression import REGRESSOR_FILE
from regmix.settings.run_config import save_run_config
from regmix.study.state import StudyState, Trial, anchor_of
from regmix.study.study import Study
from regmix.study.verify import (
    SeedRuns,
    format_verification,
    gain_against_floor,
    noise_floor,
    seed_runs,
    verification,
)
from regmix.train.runlog import resolve_wandb_mode

# The unit of every figure report.json holds (`details.cv` and `details.extrapolation` are fit's figures).
UNITS = {"spearman": "percent", "pearson": "percent", "r2": "fraction of variance", "mse": "loss squared",
         "rmse": "loss", "regret": "loss", "optimism": "loss", "losses and gains": "nats per token",
         "objective weights": "fractions summing to 1", "mixture weights": "fractions summing to 1",
         "epochs": "passes over a domain's training tokens in the large run", "seconds": "seconds"}


class StudyLog:
    """The study's own wandb run: objective, best so far and the recommendation, per recorded run.

    Opened and finished around each round's rows (resuming its id): the runs' own wandb runs are
    opened in between, and wandb keeps one run per process.
    """

    def __init__(self, folder: Path, name: str, mode: str, group: str):
        self.folder, self.name, self.mode, self.group = folder, name, resolve_wandb_mode(mode), group

    def log(self, state: StudyState, run_id: str | None, logged: int) -> tuple[str | None, int]:
        """Log the recorded runs not logged yet; (the wandb run's id, how many are logged now)."""
        values = [state.proposer.objective.value(t.losses or {}) for t in state.recorded("method")]
        rows = [{"search/runs": i + 1, "search/objective": v, "search/best_observed": min(values[:i + 1])}
                for i, v in enumerate(values) if i >= logged]
        if rows and state.rounds:
            rows[-1] |= {"search/recommended_predicted": state.rounds[-1]["predicted"]}
        if self.mode == "off" or not rows:
            return run_id, len(values)
        import wandb

        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False,
                                  disable_git=True, x_save_requirements=False)
        run = wandb.init(project="regmix", group=self.group, name=f"study-{self.name}", id=run_id, resume="allow",
                         dir=self.folder, mode=self.mode, reinit="finish_previous", settings=settings)
        run.define_metric("search/runs")
        run.define_metric("search/*", step_metric="search/runs")
        for row in rows:
            run.log(row)
        run.finish()
        return run.id, len(values)


def observations(trials: Sequence[Trial], domains: Sequence[str], pool: Path | None = None) -> Observations:
    """Runs in RegMix's layout: achieved mixtures over the corpus' domains, every valid loss, and (with `pool`, the
    runs' folder) each run's scale where every run recorded it: a study with `larger:` scales has several."""
    targets = tuple(dict.fromkeys(d for t in trials for d in t.losses or {}))
    losses = np.array([[(t.losses or {}).get(d, np.nan) for d in targets] for t in trials])
    mixtures = np.stack([Mixture.from_dict(t.achieved or t.requested, normalize=True).vector(domains) for t in trials])
    scales = [run_scale(load_result(pool / t.name)) if (pool / t.name / RESULT_NAME).exists() else None
              for t in trials] if pool is not None else [None]
    return Observations(tuple(domains), targets, tuple(run_index(t.name) for t in trials), mixtures, losses,
                        np.array(scales) if all(s is not None for s in scales) else None)


def write_report(study: Study, state: StudyState, recommendation: Recommendation, projected: bool,
                 verified: Sequence[Trial], seconds: float, report: Callable[[str], None] = print) -> dict[str, Any]:
    """optimal_mixture.yaml, the CSVs, the plots, report.json and report.md; the summary (report.json's data).
    `recommendation` is within the caps already (`projected`: moved there by the runner)."""
    experiment, objective, space = study.experiment, study.objective, study.space
    folder, optimal_path = study.folder, experiment.optimal(study.method)
    mixture = recommendation.mixture
    full = study.expand(mixture)  # what the large run trains on: the corpus's own domains
    large = experiment.simulation.large_run()
    target_tokens = large_run_tokens(large)
    tokens = {d: study.manifest.tokens("train", d) for d in full.domains}
    caps = study.caps
    caps_report = None if caps is None else {
        "repetitions": caps.repetitions, "epoch_limit": round(float(caps.limit), 4), "target_tokens": target_tokens,
        "corpus_tokens": int(sum(tokens.values())), "tokens_per_step": large.global_batch_size * large.block_size,
        "caps": {d: round(float(c), 6) for d, c in zip(caps.domains, caps.caps)},
        "binding": caps.binding(mixture.weights)}
    epoch_counts = {d: round(float(e), 4) for d, e in epochs(full.to_dict(), tokens, target_tokens).items()}
    reuse = None if study.frozen is None else {
        "previous": experiment.reuse.previous, "frozen_as": study.frozen.name,
        "frozen_share": round(mixture[study.frozen.name], 6), "removed": list(study.frozen.removed),
        "searched": {d: round(w, 6) for d, w in mixture.to_dict().items()}}
    config = optimal_run_config(full, objective, recommendation.predicted, recommendation.uncertainty,
                                large, experiment.synthesis, method=study.method,
                                recommended_by=recommendation.basis, epochs=epoch_counts,
                                repetition_caps=caps_report, **({"reuse": reuse} if reuse else {}))
    save_run_config(config, optimal_path)

    recorded = state.recorded()
    own = [t for t in recorded if t.source not in ("anchor", "verify", "larger")]
    larger = [t for t in recorded if t.source == "larger"]
    anchors = [t for t in recorded if anchor_of(t.name)]  # with the seeds the verification added
    corpus = corpus_tag(study.manifest.name)
    csvs = observations([t for t in recorded if t.source != "verify"], space.domains, study.pool).save(
        folder / mixture_csv_name(PIPELINE_SCALE), folder / loss_csv_name(corpus, PIPELINE_SCALE))
    plots = [plot_convergence(state, objective, folder / "convergence.png", study.method),
             plot_mixtures(study.natural, mixture, folder / "optimal_vs_natural.png")]
    if recommendation.details.get("regressor") and cv_plot_path(folder / REGRESSOR_FILE).exists():
        plots.append(cv_plot_path(folder / REGRESSOR_FILE))  # the kept regressor's out-of-fold predictions
    online = [t for t in own if t.policy]
    if online:
        plots.append(plot_trajectory(study.pool / online[-1].name, mixture.domains, folder / "weights.png"))

    evidence = anchor_evidence(study, anchors, verified, recommendation.predicted)
    values = [objective.value(t.losses or {}) for t in own if t.losses]
    summary = {
        "method": study.method, "objective": objective.to_dict(), "objective_text": objective.describe(),
        "runs": {"method": sum(t.source == "method" for t in own),
                 "started_from": sum(t.source != "method" for t in own),
                 "anchors": len(anchors), "verification": sum(t.status == "recorded" for t in verified),
                 "larger": len(larger),
                 "failed": sum(t.status == "failed" for t in state.trials)},
        "tokens": {kind: int(sum(t.tokens for t in group)) for kind, group in
                   (("method", own), ("anchors", anchors), ("verification", verified))},
        "training_seconds": {kind: round(sum(t.seconds for t in group), 1) for kind, group in
                             (("method", own), ("anchors", anchors), ("verification", verified))},
        "best_observed": min(values) if values else None,
        "predicted_loss": recommendation.predicted, "predicted_loss_spread": recommendation.uncertainty,
        "recommended_by": recommendation.basis, "details": dict(recommendation.details), "units": UNITS,
        "projected_onto_caps": projected,
        "natural": study.natural.to_dict(), "uniform": study.uniform.to_dict(), "optimal": mixture.to_dict(),
        "epochs": epoch_counts, "repetition_caps": caps_report, "reuse": reuse, **evidence,
        "files": {"optimal_mixture": str(optimal_path), "state": str(state.path), "csv": [str(p) for p in csvs],
                  "plots": [str(p) for p in plots], "runs": str(study.pool)},
        "seconds": round(seconds, 1),
    }
    summary["bottom_line"] = bottom_line(summary)
    text = format_report(summary)
    write_atomic(folder / "report.json", json.dumps(summary, indent=1))
    write_atomic(folder / "report.md", f"**{summary['bottom_line']}**\n\n```\n{text.strip()}\n```\n")
    report(text)
    return summary


def anchor_baselines(trials: Sequence[Trial], objective: Objective, losses: str = "losses") -> list[SeedRuns]:
    """The natural and uniform anchors' recorded seeds as SeedRuns (`losses`: "probe_losses" for the part the
    methods measured); those without a run are left out."""
    baselines = []
    for name in ("natural", "uniform"):
        runs = [getattr(t, losses) for t in trials if anchor_of(t.name) == name and getattr(t, losses)]
        if runs:
            baselines.append(seed_runs(name, runs, objective))
    return baselines


def anchor_evidence(study: Study, anchors: Sequence[Trial], verified: Sequence[Trial],
                    predicted: float | None) -> dict[str, Any]:
    """The noise floor of the anchors, the predicted gain next to it, and the verification table."""
    baselines = anchor_baselines(anchors, study.objective)
    if not baselines:
        return {}
    floor = noise_floor(baselines)
    valid_prediction = predicted is not None and np.isfinite(predicted)
    # the prediction is on the part the method measured: its gain is against natural's loss there
    measured = anchor_baselines(anchors, study.objective, "probe_losses") or baselines
    natural = measured[0] if measured[0].name == "natural" else None
    evidence: dict[str, Any] = {"noise_floor": floor, "gain": gain_against_floor(natural, predicted, floor)
                                if valid_prediction and natural else None}
    done = [t for t in verified if t.status == "recorded" and t.losses]
    if done:
        probed = [t.probe_losses for t in done if t.probe_losses]
        evidence["verification"] = verification(
            seed_runs("optimal", [t.losses for t in done], study.objective), baselines,
            predicted if valid_prediction else None, study.experiment.simulation.significance,
            natural.mean - predicted if valid_prediction and natural else None,
            seed_runs("optimal", probed, study.objective).mean if probed else None)
    return evidence


def bottom_line(summary: Mapping[str, Any]) -> str:
    """One sentence: what to train at scale, and the figure behind it."""
    table = summary.get("verification")
    if not table:
        return (f"Not verified: the {summary['method']} recommendation is predicted at "
                f"{summary['predicted_loss']:.4f}; set sweep.anchor_seeds and simulation.verify to test it "
                "against natural and uniform.")
    rows = table["mixtures"]
    mine = rows["optimal"]
    lost = [name for name, won in table["beats"].items() if not won]
    test = f"Welch's test, p < {table['significance']:g}, {table['seeds']} seeds"
    if not lost:
        return (f"Use the {summary['method']} optimum: {mine['mean']:.4f} ± {mine['std']:.4f} beats "
                + ", ".join(f"{n} {rows[n]['mean']:.4f} ± {rows[n]['std']:.4f}" for n in table["beats"])
                + f" on held-out text ({test}).")
    best = min(rows, key=lambda n: rows[n]["mean"])
    worse = [n for n in lost if table["verdicts"][n] == "loses"]
    return (f"The {summary['method']} optimum ({mine['mean']:.4f} ± {mine['std']:.4f}) "
            + ("is worse than " if worse else "does not beat ")
            + ", ".join(f"{n} ({rows[n]['mean']:.4f} ± {rows[n]['std']:.4f})" for n in lost)
            + f" on held-out text ({test}): use {'the optimum' if best == 'optimal' else best} (lowest mean)"
            + ("." if worse else ", or add seeds (simulation.max_seeds) or proxies to decide."))


def format_report(summary: Mapping[str, Any]) -> str:
    runs, details = summary["runs"], summary.get("details") or {}
    spread = summary["predicted_loss_spread"]
    lines = ["", f"== {summary['method']} study report ==", summary["bottom_line"],
             f"objective:       {summary['objective_text']}",
             f"runs:            {runs['method']} of the method, "
             + (f"{runs['larger']} of them again at larger scales, " if runs.get("larger") else "")
             + f"{runs['started_from']} started from, "
             f"{runs['anchors']} anchors, {runs['verification']} verification, {runs['failed']} failed; "
             f"{sum(summary['tokens'].values()):,} tokens",
             f"recommended:     predicted {summary['predicted_loss']:.4f}"
             + ("" if spread is None else f" ± {spread:.4f}") + f" ({summary['recommended_by']})"]
    if summary["best_observed"] is not None:
        lines.append(f"best observed:   {summary['best_observed']:.4f}")
    scale = details.get("predicted_at")
    if scale:
        lines.append(f"scale:           {details['regressor']} is scale-aware: the optimum is for the large run, "
                     f"{scale['params']:,.0f} params and {scale['tokens']:,.0f} tokens; for the largest proxies "
                     f"({scale['proxies_params']:,.0f} params, {scale['proxies_tokens']:,.0f} tokens) it would be the "
                     "'proxies' column below"
                     + (f"; the best single-scale regressor ({scale['single_scale_regressor']}) chose the 'single' "
                        "column" if scale.get("single_scale_optimum") else "")
                     + "; verify them at a larger scale (regmix transfer) before trusting either")
    if details.get("cv"):
        cv = details["cv"]
        lines.append(f"regressor:       {details['regressor']}, CV Spearman "
                     f"{np.mean([v['spearman'] for v in cv.values()]):.1f}%")
    if summary["projected_onto_caps"]:
        lines.append("caps:            the method's answer broke the repetition caps; it was projected onto them")
    if summary.get("reuse"):
        reuse = summary["reuse"]
        lines.append(f"reuse:           '{reuse['frozen_as']}' is the earlier optimum of {reuse['previous']}, at share "
                     f"{reuse['frozen_share']:.3f}; optimal_mixture.yaml spreads it over its domains"
                     + (f" (no longer in the corpus: {', '.join(reuse['removed'])})" if reuse["removed"] else ""))
    files = summary["files"]
    beside = {} if not scale else {"proxies": scale["proxies_optimum"], "single": scale.get("single_scale_optimum")}
    lines += mixture_report(summary["natural"], summary["optimal"], files["optimal_mixture"],
                            {name: m for name, m in beside.items() if m})
    caps = summary.get("repetition_caps")
    if caps and caps["epoch_limit"] > caps["repetitions"]:
        lines.append(too_small(caps))
    elif caps:
        lines.append(f"caps:            at most {caps['epoch_limit']:g} epochs of a domain in the large run's "
                     f"{caps['target_tokens']:,} tokens; binding: {', '.join(caps['binding']) or 'none'}")
    if summary.get("gain"):
        lines.append(summary["gain"])
    if summary.get("verification"):
        lines += format_verification(summary["verification"])
    lines += [f"runs (CSV):      {', '.join(files['csv'])}",
              f"plots:           {', '.join(files['plots'])}",
              f"this command took {summary['seconds']}s; the runs behind the answer trained for "
              f"{sum(summary['training_seconds'].values()):.0f}s"]
    return "\n".join(lines)


def too_small(caps: Mapping[str, Any]) -> str:
    """The plain sentence for a corpus the large run would repeat beyond R epochs, instead of an epoch count in the
    thousands: what it means and the two ways out."""
    corpus, target, r = caps["corpus_tokens"], caps["target_tokens"], caps["repetitions"]
    steps = int(r * corpus // caps["tokens_per_step"])
    return (f"corpus:          too small for the large run: its {corpus:,} training tokens would be repeated about "
            f"{target / max(corpus, 1):,.0f} times to fill {target:,} tokens (the caps allow R = {r:g} epochs). The "
            f"shares above still say which domains help, but before the large run bring about "
            f"{target / r:,.0f} tokens, or shorten the run to {r:g} epochs of this corpus: --max-step {steps} "
            f"(with global batch x block = {caps['tokens_per_step']:,} tokens a step)")


def plot_convergence(state: StudyState, objective: Any, path: Path, method: str) -> Path:
    """Each run's objective, the best so far, and the recommendation per round, against runs."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = [t for t in state.recorded() if t.source != "verify" and t.losses]
    values = np.array([objective.value(t.losses) for t in trials])
    x = np.arange(1, len(values) + 1)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, color, mask in (("anchors", "grey", [t.source == "anchor" for t in trials]),
                               ("started from", "silver", [t.source not in ("anchor", "method") for t in trials]),
                               ("the method's runs", "tab:blue", [t.source == "method" for t in trials])):
        mask = np.array(mask, dtype=bool)
        if mask.any():
            ax.scatter(x[mask], values[mask], s=12, color=color, label=label)
    if len(values):
        ax.step(x, np.minimum.accumulate(values), where="post", color="tab:blue", label="best observed so far")
    if state.rounds:
        rounds = [r for r in state.rounds if r["predicted"] is not None and np.isfinite(r["predicted"])]
        ax.errorbar([r["runs"] for r in rounds], [r["predicted"] for r in rounds],
                    yerr=[r["uncertainty"] or 0.0 for r in rounds], fmt="o-", color="tab:red", capsize=3,
                    label="recommended (predicted ± uncertainty)")
    ax.set(xlabel="proxy runs", ylabel="objective (weighted validation loss)", title=f"{method} study")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_trajectory(run_dir: Path, domains: Sequence[str], path: Path) -> Path:
    """An online run: its mixture over steps (left) and its validation losses (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    result = load_result(run_dir)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = [t["step"] for t in result.trajectory] + [result.step]
    if result.trajectory:
        rows = [[t["mixture"].get(d, 0.0) for t in result.trajectory] for d in domains]
        left.stackplot(steps, [row + row[-1:] for row in rows], labels=domains, step="post")
    left.set(xlabel="step", ylabel="weight", ylim=(0, 1), title=f"mixture of run {result.name}")
    left.legend(fontsize=7, loc="upper right")
    history = [json.loads(line) for line in (run_dir / HISTORY_NAME).read_text().splitlines() if line.strip()]
    for domain in result.valid_losses:
        points = [(row[STEP], row[loss_column(domain)]) for row in history if loss_column(domain) in row]
        if points:
            right.plot(*zip(*points), marker=".", label=domain)
    right.set(xlabel="step", ylabel="validation loss", title=f"run {result.name}: validation loss per domain")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
