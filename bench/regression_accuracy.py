"""Regression accuracy on RegMix's published proxy data (Pile-CC target).

Each regressor is cross-validated on the 512 training runs (the only figure used to choose a model),
then fit on all 512 and scored on the 256 held-out runs, which no model sees before that.

    python bench/regression_accuracy.py [--data ../shared/regmix_paper_data] [--models lightgbm linear ensemble]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from regmix.collect import read_csvs
from regmix.fit import REGRESSORS, cross_validate, evaluate, make_regressor

TARGET = "metric/the_pile_pile_cc_val_loss"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "regmix_paper_data")
    p.add_argument("--models", nargs="+", default=list(REGRESSORS), choices=REGRESSORS)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    X, Y = read_csvs(args.data / "train_mixture_1m.csv", args.data / "train_pile_loss_1m.csv")
    X_test, Y_test = read_csvs(args.data / "test_mixture_1m.csv", args.data / "test_pile_loss_1m.csv")
    X_test = X_test[list(X.columns)]
    print(f"{len(X)} training runs, {len(X_test)} held out, target {TARGET}")
    print(f"{'model':10s} {'CV spearman':>12s} {'CV pearson':>11s} {'test spearman':>14s} {'test pearson':>13s} "
          f"{'test mse':>9s} {'test r2':>8s} {'seconds':>8s}")
    for name in args.models:
        start = time.perf_counter()
        cv = cross_validate(make_regressor(name, args.threads), X, Y[[TARGET]], args.folds).loc[TARGET]
        held_out = evaluate(Y_test[TARGET], make_regressor(name, args.threads).fit(X, Y[TARGET]).predict(X_test))
        print(f"{name:10s} {cv['spearman']:12.2f} {cv['pearson']:11.2f} {held_out['spearman']:14.2f} "
              f"{held_out['pearson']:13.2f} {held_out['mse']:9.5f} {held_out['r2']:8.4f} "
              f"{time.perf_counter() - start:8.1f}", flush=True)


if __name__ == "__main__":
    main()
