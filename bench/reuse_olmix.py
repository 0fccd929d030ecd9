"""Mixture reuse on Olmix's public swarms: the reuse swarm (64 runs, 21 new domains + `existing`) against the full
recomputation (512 runs over 64 domains), both 30M proxies on ~3B tokens scored by the mean of 110 downstream BPB.

What the two sets let us compare, and what not: they are not the same problem. The full recomputation mixes
64 domains with the s2pdf topics; the reuse update replaces those by s2pdfv1 topics and freezes the rest as
`existing`, whose composition is not in the files. So no mixture of one can be scored by the other's runs.
They do give: the runs each spent (the compute, at one proxy size), the best run each found, and each one's
optimum as regmix finds it (`regmix.regression.fit` choosing among linear, lightgbm and loglinear by its
selection score, then `regmix.regression.simulate` around the swarm's mean mixture), with the kept
regressor's out-of-fold figures (`regmix.regression.fit.evaluate`) saying how far each prediction can be
trusted. The gap in predicted objective is then the reuse answer's predicted mean BPB minus the full one's.

    python bench/reuse_olmix.py [--shared ../shared] [--candidates 200000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_sets import SHARED, load_set, on_mean  # noqa: E402

from regmix.core.mixture import Mixture  # noqa: E402
from regmix.regression.fit import evaluate, fit, out_of_fold  # noqa: E402
from regmix.regression.regressors import make_regressor  # noqa: E402
from regmix.regression.simulate import simulate  # noqa: E402

SETS = {"full recomputation": "olmix_full", "reuse update 5": "olmix_reuse5"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shared", type=Path, default=SHARED)
    p.add_argument("--candidates", type=int, default=200_000)
    p.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "reuse_olmix.md")
    args = p.parse_args()
    rows = []
    for label, name in SETS.items():
        runs = on_mean(load_set(name, args.shared))
        with contextlib.redirect_stdout(io.StringIO()):  # fit prints every candidate's CV tables
            model = fit(runs, ("linear", "lightgbm", "loglinear"), folds=5)
        X, Y = runs.mixture_frame(), runs.loss_frame()
        figures = evaluate(Y["mean"].to_numpy(), out_of_fold(make_regressor(model.name), X, Y, 5)[:, 0])
        centre = Mixture(runs.domains, runs.mixtures.mean(axis=0) / runs.mixtures.mean(axis=0).sum())
        found = simulate(model, centre, num_candidates=args.candidates, top_k=64, progress=False)
        rows.append((label, len(runs), len(runs.domains), float(runs.losses.min()), model.name, figures,
                     found.predicted_loss))
        print(f"{label}: {len(runs)} runs, kept {model.name}, predicted optimum {found.predicted_loss:.4f}", flush=True)
    lines = ["| swarm | runs | domains | best run (mean BPB) | kept regressor | OOF Spearman | OOF RMSE | regret@1 | "
             "predicted optimum (mean BPB) |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {label} | {n} | {m} | {best:.4f} | {kept} | {f['spearman']:.1f} | {f['rmse']:.4f} | "
              f"{f['regret']:.4f} | {predicted:.4f} |" for label, n, m, best, kept, f, predicted in rows]
    (full, reuse) = rows
    lines += ["", f"Runs spent: {reuse[1]} against {full[1]} ({1 - reuse[1] / full[1]:.1%} fewer; one proxy size).",
              f"Gap in predicted objective (reuse - full): {reuse[6] - full[6]:+.4f} mean BPB; best runs "
              f"{reuse[3]:.4f} against {full[3]:.4f}. The sets mix different domains (s2pdfv1 vs s2pdf topics, "
              "and `existing` of unknown composition), so these compare two answers, not one mixture scored twice.",
              f"How far the predictions hold: out-of-fold Spearman {full[5]['spearman']:.1f} (full) and "
              f"{reuse[5]['spearman']:.1f} (reuse)" + (": the reuse swarm's regressor barely ranks its own runs, so "
                                                       "its predicted optimum is a weak claim"
                                                       if reuse[5]["spearman"] < 50 else "."),
              "Predicted optimum against the best run: " + "; ".join(
                  f"{label} {predicted - best:+.4f}" for label, _, _, best, _, _, predicted in rows)
              + " (above 0: the simulated optimum is predicted no better than a run the swarm already trained)."]
    text = "\n".join(lines) + "\n"
    args.output.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
