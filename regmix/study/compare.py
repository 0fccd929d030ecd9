"""`regmix compare`: several methods on one corpus and one objective, head to head.

Every method runs on the study runner (regmix.study.runner) with the experiment's settings, in the
experiment's one run folder: runs of the same content (the anchors, `stratified`, a grid) are trained
once and shared, and each method's runs count in its cost (the runs it asked, extra runs included, as
Aioli's Table 2 counts them). Per method: its recommendation, the proxy runs and tokens it spent, its
verification with the anchors' seeds (objective mean ± seed std, the per-domain wins and losses
against natural, the verdict of regmix.study.verify's rule); `regmix transfer` then trains any method's answer at a
larger scale with seeds. Writes
runs/<name>/compare/: comparison.md (the table), report.json and comparison.png (objective against
compute per method, with the seed spread). Resumable: every study resumes; finished ones are read.

    regmix compare --methods regmix bo aioli doremi stratified
    regmix compare --config exp.yaml --methods regmix turbo grid
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import textwrap
from pathlib import Path
from typing import Any, Mapping, Sequence

from regmix.cli import ArgumentParser, add_dry_run_argument, integer_at_least, run_command
from regmix.search import PROPOSERS
from regmix.train.executor import add_executor_arguments

DEFAULT_METHODS = ("regmix", "bo", "aioli", "doremi", "stratified")


def compare(experiment: Any, methods: Sequence[str], report: Any = print) -> dict[str, Any]:
    """Run (or resume) every method's study on `experiment`; the comparison (report.json's data)."""
    from regmix.study.runner import run_study

    if len(set(methods)) != len(methods):
        raise ValueError(f"--methods names a method twice: {list(methods)}")
    summaries = {}
    for method in methods:
        report(f"[compare] {method}")
        summaries[method] = run_study(experiment.as_method(method), method, report=report)
    rows = {method: row(summary) for method, summary in summaries.items()}
    folder = experiment.runs / "compare"
    result = {"experiment": experiment.name, "objective": next(iter(summaries.values()))["objective_text"],
              "methods": rows}
    write_comparison(folder, result)
    report(format_table(result))
    return result


def row(summary: Mapping[str, Any]) -> dict[str, Any]:
    """One method's line of the comparison, from its study report."""
    table = summary.get("verification") or {}
    mine = (table.get("mixtures") or {}).get("optimal", {})
    return {"recommended_by": summary["recommended_by"], "predicted": summary["predicted_loss"],
            "runs": summary["runs"]["method"] + summary["runs"]["started_from"],
            "anchors": summary["runs"]["anchors"], "tokens": summary["tokens"]["method"],
            "training_seconds": summary["training_seconds"]["method"],
            "objective_mean": mine.get("mean"), "objective_std": mine.get("std"), "seeds": table.get("seeds", 0),
            "beats": table.get("beats", {}), "verdicts": table.get("verdicts", {}),
            "p_values": table.get("p_values", {}), "wins": table.get("wins"), "losses": table.get("losses"),
            "anchors_table": {k: v for k, v in (table.get("mixtures") or {}).items() if k != "optimal"},
            "projected_onto_caps": summary["projected_onto_caps"],
            "bottom_line": summary["bottom_line"], "optimal": summary["optimal"],
            "optimal_mixture": summary["files"]["optimal_mixture"]}


def verdict_cell(r: Mapping[str, Any], baseline: str) -> str:
    """yes / no / worse by Welch's verdict, with its p-value ("-" when not verified)."""
    if baseline not in r["beats"]:
        return "-"
    said = {"wins": "yes", "loses": "worse", "undecided": "no"}[r.get("verdicts", {}).get(
        baseline, "wins" if r["beats"][baseline] else "undecided")]
    p = r.get("p_values", {}).get(baseline)
    return said if p is None or math.isnan(p) else f"{said} (p {p:.3f})"


def format_table(result: Mapping[str, Any]) -> str:
    """The markdown table: one row per method, and the anchors' line under it."""
    lines = [f"Objective: {result['objective']}", "",
             "| method | runs (+anchors) | tokens | predicted | verified, held out (mean ± seed std) | beats natural | "
             "beats uniform | domains won/lost vs natural |", "|---|---|---|---|---|---|---|---|"]
    anchors: dict[str, Any] = {}
    for method, r in result["methods"].items():
        verified = "not verified" if r["objective_mean"] is None else \
            f"{r['objective_mean']:.4f} ± {r['objective_std']:.4f} ({r['seeds']} seeds)"
        beats = [verdict_cell(r, b) for b in ("natural", "uniform")]
        won = "-" if r["wins"] is None else f"{r['wins']}/{r['losses']}"
        mark = " (c)" if r["projected_onto_caps"] else ""
        lines.append(f"| {method} | {r['runs']} (+{r['anchors']}) | {r['tokens']:,} | {r['predicted']:.4f}{mark} | "
                     f"{verified} | {beats[0]} | {beats[1]} | {won} |")
        anchors = anchors or r["anchors_table"]
    lines += ["", "beats: Welch's t-test over seeds, one-sided, p < 0.05 (yes: wins; no: undecided; worse: loses)."]
    if any(r["projected_onto_caps"] for r in result["methods"].values()):
        lines += ["", "(c): the method's answer broke the large run's repetition caps and was projected onto them; "
                      "its prediction is the unprojected answer's, the verification the projected one's."]
    if anchors:
        lines.append("")
        lines.append("Anchors (shared): " + ", ".join(f"{name} {v['mean']:.4f} ± {v['std']:.4f}"
                                                    for name, v in anchors.items()))
    return "\n".join(lines)


def write_comparison(folder: Path, result: Mapping[str, Any]) -> None:
    """comparison.md, report.json and comparison.png, each written whole."""
    from regmix.core.files import write_atomic, write_files

    write_atomic(folder / "report.json", json.dumps(result, indent=1))
    write_files({folder / "comparison.md": (format_table(result) + "\n").encode(),
                 folder / "comparison.png": comparison_plot(result)})


def comparison_plot(result: Mapping[str, Any]) -> bytes:
    """Verified objective (mean ± seed std) against the proxy tokens each method spent; the anchors as bands."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    anchors: dict[str, Any] = {}
    for method, r in result["methods"].items():
        anchors = anchors or r["anchors_table"]
        if r["objective_mean"] is None:
            continue
        ax.errorbar([max(r["tokens"], 1)], [r["objective_mean"]], yerr=[r["objective_std"] or 0.0], fmt="o",
                    capsize=4, label=method)
        ax.annotate(method, (max(r["tokens"], 1), r["objective_mean"]), textcoords="offset points", xytext=(5, 5),
                    fontsize=8)
    for (name, v), color in zip(anchors.items(), ("grey", "tan")):
        ax.axhspan(v["mean"] - (v["std"] or 0.0), v["mean"] + (v["std"] or 0.0), color=color, alpha=0.3,
                   label=f"{name} (mean ± seed std)")
    ax.set_xscale("log")
    ax.set(xlabel="proxy tokens the method trained (its own runs)", ylabel="objective of its answer, verified")
    ax.set_title(textwrap.fill(f"{result['experiment']}: {result['objective']}", 90), fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    return png.getvalue()


def main(argv: Sequence[str] | None = None) -> dict[str, Any] | int:
    p = ArgumentParser(prog="regmix compare", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, help="experiment YAML (default: the embedded default experiment)")
    p.add_argument("--methods", nargs="+", choices=sorted(PROPOSERS), default=list(DEFAULT_METHODS),
                   metavar="METHOD", help=f"methods to compare, of {sorted(PROPOSERS)} (default: "
                   f"{' '.join(DEFAULT_METHODS)})")
    p.add_argument("--budget", type=integer_at_least(1, 10**6), help="runs of each offline or sequential method "
                   "(sets sweep.num_configs and search.budget; default: the experiment's)")
    p.add_argument("--anchor-seeds", type=integer_at_least(0, 100), help="seeds of the anchors and of each "
                   "verification (default: the experiment's)")
    add_executor_arguments(p)
    add_dry_run_argument(p)
    args = p.parse_args(argv)
    from regmix.core.files import ConfigError
    from regmix.study.experiment import load_experiment, with_executor
    from regmix.study.validate import validate

    problems: list[ConfigError] = []
    experiment = with_executor(load_experiment(args.config, problems if args.dry_run else None), args)
    if args.budget:
        experiment = dataclasses.replace(
            experiment, sweep=dataclasses.replace(experiment.sweep, num_configs=args.budget),
            search=dataclasses.replace(experiment.search, budget=args.budget))
    if args.anchor_seeds is not None:
        experiment = dataclasses.replace(experiment, sweep=dataclasses.replace(experiment.sweep,
                                                                               anchor_seeds=args.anchor_seeds))
    if args.dry_run:
        return validate(experiment, args.methods, problems)
    return compare(experiment, args.methods)


if __name__ == "__main__":
    raise SystemExit(run_command(main))
