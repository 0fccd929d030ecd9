"""Regression accuracy on RegMix's published proxy data (Pile-CC target).

Each regressor is cross-validated on the 512 training runs (the only figure used to choose a model),
then fit on all 512 and scored on the 256 held-out runs, which no model sees before that.

    python bench/regression_accuracy.py [--data ../shared/regmix_paper_data] [--models lightgbm linear ensemble]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from regmix.fit import REGRESSORS, cross_validate, evaluate, make_regressor
from regmix.observations import read_csvs
from regmix.schema import loss_csv_name, mixture_csv_name

TARGET = "the_pile_pile_cc"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "regmix_paper_data")
    p.add_argument("--models", nargs="+", default=list(REGRESSORS), choices=REGRESSORS)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    train = read_csvs(args.data / mixture_csv_name("1m"), args.data / loss_csv_name("pile", "1m")).select([TARGET])
    test = read_csvs(args.data / mixture_csv_name("1m", "test"), args.data / loss_csv_name("pile", "1m", "test"))
    test = test.select([TARGET]).on_domains(train.domains)
    X, Y, X_test, Y_test = train.mixture_frame(), train.loss_frame(), test.mixture_frame(), test.loss_frame()
    print(f"{len(X)} training runs, {len(X_test)} held out, target {TARGET}")
    print(f"{'model':10s} {'CV spearman':>12s} {'CV pearson':>11s} {'test spearman':>14s} {'test pearson':>13s} "
          f"{'test mse':>9s} {'test r2':>8s} {'seconds':>8s}")
    for name in args.models:
        start = time.perf_counter()
        cv = cross_validate(make_regressor(name, args.threads), X, Y, args.folds).loc[TARGET]
        held_out = evaluate(Y_test[TARGET], make_regressor(name, args.threads).fit(X, Y[TARGET]).predict(X_test))
        print(f"{name:10s} {cv['spearman']:12.2f} {cv['pearson']:11.2f} {held_out['spearman']:14.2f} "
              f"{held_out['pearson']:13.2f} {held_out['mse']:9.5f} {held_out['r2']:8.4f} "
              f"{time.perf_counter() - start:8.1f}", flush=True)


if __name__ == "__main__":
    main()
