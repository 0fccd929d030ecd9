"""Regression accuracy on RegMix's published proxy data (Pile-CC target).

Each regressor is scored on the 512 training runs only, as `regmix.regression.fit` scores candidates: K-fold CV and
extrapolation CV (fit on the runs nearest the centre, scored on the farthest 20%), averaged into fit's
selection score. Then it is fit on all 512 and scored on the 256 held-out runs, which no model sees
before that: the check of whether the selection score picks a model that ranks unseen mixtures well.

    python bench/regression_accuracy.py [--data ../shared/regmix_paper_data] [--models lightgbm linear ensemble]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from regmix.core.observations import read_csvs
from regmix.core.schema import loss_csv_name, mixture_csv_name
from regmix.regression.fit import (
    REGRESSORS,
    cross_validate,
    evaluate,
    extrapolation_scores,
    selection_score,
)
from regmix.regression.regressors import make_regressor

TARGET = "the_pile_pile_cc"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "regmix_paper_data")
    p.add_argument("--models", nargs="+", default=list(REGRESSORS), choices=REGRESSORS)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--extrapolation", type=float, default=0.2, help="share of runs held out for extrapolation CV")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    train = read_csvs(args.data / mixture_csv_name("1m"), args.data / loss_csv_name("pile", "1m")).select([TARGET])
    test = read_csvs(args.data / mixture_csv_name("1m", "test"), args.data / loss_csv_name("pile", "1m", "test"))
    test = test.select([TARGET]).on_domains(train.domains)
    X, Y, X_test, Y_test = train.mixture_frame(), train.loss_frame(), test.mixture_frame(), test.loss_frame()
    print(f"{len(X)} training runs, {len(X_test)} held out, target {TARGET}")
    print(f"{'model':12s} {'CV spearman':>12s} {'extrap spearman':>16s} {'selection':>10s} {'test spearman':>14s} "
          f"{'test pearson':>13s} {'test mse':>9s} {'test r2':>8s} {'seconds':>8s}")
    selection, held_out_spearman = {}, {}
    for name in args.models:
        start = time.perf_counter()
        cv, _ = cross_validate(make_regressor(name, args.threads), X, Y, args.folds)
        extrapolated = extrapolation_scores(make_regressor(name, args.threads), X, Y, args.extrapolation)
        held_out = evaluate(Y_test[TARGET], make_regressor(name, args.threads).fit(X, Y[TARGET]).predict(X_test))
        selection[name], held_out_spearman[name] = selection_score(cv, extrapolated), held_out["spearman"]
        print(f"{name:12s} {cv.loc[TARGET, 'spearman']:12.2f} {extrapolated.loc[TARGET, 'spearman']:16.2f} "
              f"{selection[name]:10.2f} {held_out['spearman']:14.2f} {held_out['pearson']:13.2f} "
              f"{held_out['mse']:9.5f} {held_out['r2']:8.4f} {time.perf_counter() - start:8.1f}", flush=True)
    kept = max(args.models, key=selection.__getitem__)
    print(f"fit's selection rule keeps {kept} (held-out Spearman {held_out_spearman[kept]:.2f}); "
          f"best on the held-out runs: {max(args.models, key=held_out_spearman.__getitem__)}")


if __name__ == "__main__":
    main()
