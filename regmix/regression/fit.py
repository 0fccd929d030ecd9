"""Fit the mixture -> validation-loss regressor, score it on the training runs, save it.

The candidates are the named regressors of `regmix.regression.regressors` (published LightGBM, linear, GP, the
log-linear mixing law, `ensemble`, the law + residual hybrids).

Each candidate gets two scores, both from the training runs only (held-out data is never seen): K-fold CV
(fit at the proxy scale) and extrapolation CV (fit on the runs near the centre of the mixtures, rank the
farthest ones: a stand-in for the large run's mixture, which lies outside the proxies' mass).
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from regmix.cli import ArgumentParser, file_tag, integer_at_least, run_command, share
from regmix.core.files import ConfigError, check_outputs
from regmix.core.observations import Observations, find_csvs, read_csvs
from regmix.core.schema import MODEL_NAME, SCALE_COLUMNS, STUDY_FOLDER, loss_csv_name, mixture_csv_name
from regmix.regression.fitted import FittedModel, OutOfFold

if TYPE_CHECKING:
    import pandas as pd

# The names of regmix.regression.regressors, spelled out here so that `regmix fit --help` starts without
# scikit-learn, SciPy and LightGBM, which this module imports where it fits (tests/test_fit.py checks they agree).
REGRESSORS = ("lightgbm", "lightgbm_es", "linear", "gp", "loglinear", "ensemble", "law_gp", "law_lightgbm",
              "saturating", "scaling", "scaling_lightgbm")
SCALE_AWARE = ("scaling", "scaling_lightgbm")  # their inputs: the mixture, then the run's params and tokens
BEST = "ensemble"
MIN_EXTRAPOLATION_RUNS = 3  # a Spearman over fewer held-out runs says nothing
TAIL = 0.1  # the share of runs predicted best that lower-tail optimism averages over


def evaluate(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """One target's figures (lower loss is better): Spearman and Pearson (in %, as RegMix reports them), MSE, R2,
    RMSE; regret@1, the true loss of the run predicted best minus the best true loss (what picking by the model
    costs); and lower-tail optimism, the mean of true minus predicted over the `TAIL` of runs predicted best
    (above 0: the model promises the best mixtures more than they give, Marin's check of a surrogate)."""
    from scipy.stats import ConstantInputWarning, pearsonr, spearmanr

    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    with warnings.catch_warnings():  # a constant prediction ranks nothing: its NaN says so (selection: 0)
        warnings.simplefilter("ignore", ConstantInputWarning)
        spearman, pearson = spearmanr(y_true, y_pred)[0], pearsonr(y_true, y_pred)[0]
    residual = ((y_true - y_pred) ** 2).sum()
    total = ((y_true - y_true.mean()) ** 2).sum()
    tail = np.argsort(y_pred, kind="stable")[:max(1, int(round(TAIL * len(y_pred))))]
    return {"spearman": 100 * float(spearman), "pearson": 100 * float(pearson),
            "mse": float(residual / len(y_true)), "r2": float(1 - residual / total) if total else float("nan"),
            "rmse": float(np.sqrt(residual / len(y_true))), "regret": float(y_true[tail[0]] - y_true.min()),
            "optimism": float(np.mean(y_true[tail] - y_pred[tail]))}


def out_of_fold(regressor: Any, X: pd.DataFrame, Y: pd.DataFrame, folds: int = 5, seed: int = 0,
                progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Every row's prediction (rows, targets) by a fit on the other folds; `progress` hears of each fold's end
    (an ensemble on 13 targets of 512 runs takes minutes per fold)."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold

    predictions = np.zeros(Y.shape)
    started = time.perf_counter()
    for fold, (train, test) in enumerate(KFold(folds, shuffle=True, random_state=seed).split(X), 1):
        model = clone(regressor).fit(X.iloc[train], Y.iloc[train])
        predictions[test] = np.asarray(model.predict(X.iloc[test])).reshape(len(test), -1)
        if progress is not None:
            progress(f"fold {fold}/{folds} fitted ({time.perf_counter() - started:.0f} s)")
    return predictions


def cross_validate(regressor: Any, X: pd.DataFrame, Y: pd.DataFrame, folds: int = 5, seed: int = 0,
                   progress: Callable[[str], None] | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Out-of-fold scores per target (rows: targets, columns: `evaluate`'s figures), from the rows given only, and
    the out-of-fold predictions they score (rows, targets): what the predicted-vs-actual plot shows."""
    predictions = out_of_fold(regressor, X, Y, folds, seed, progress)
    return score_table(Y, predictions), predictions


def score_table(Y: pd.DataFrame, predictions: np.ndarray) -> pd.DataFrame:
    """`evaluate`'s figures per target (rows: targets)."""
    import pandas as pd

    return pd.DataFrame({c: evaluate(Y[c].to_numpy(), predictions[:, j]) for j, c in enumerate(Y.columns)}).T


def smallest_training_set(rows: int, folds: int, extrapolation: float = 0.2) -> int:
    """The fewest runs any fit of `fit(..., folds, extrapolation=...)` trains on: a CV fold's training rows, the
    extrapolation CV's centre, or all rows when folds == 1."""
    if folds <= 1:
        return rows
    smallest = rows - -(-rows // folds)  # KFold's largest test fold holds ceil(rows / folds)
    if _extreme_count(rows, extrapolation) >= MIN_EXTRAPOLATION_RUNS:
        smallest = min(smallest, rows - _extreme_count(rows, extrapolation))
    return smallest


def _extreme_count(rows: int, fraction: float) -> int:
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the extrapolation fraction must be in (0, 1), got {fraction}")
    return int(round(fraction * rows))


def farthest_runs(X: pd.DataFrame, fraction: float = 0.2, eps: float = 1e-3) -> np.ndarray:
    """Positions of the `fraction` of runs farthest from the centre of all runs, farthest first.

    Distance is Aitchison's (Euclidean on centred log-ratios of proportions + eps): the geometry of the
    simplex, in which going from 1% to 0.1% of a domain is as far as from 10% to 1%.
    """
    count = _extreme_count(len(X), fraction)
    if count < MIN_EXTRAPOLATION_RUNS:
        raise ValueError(f"a fraction of {fraction} of {len(X)} runs holds out {count}; "
                         f"extrapolation needs at least {MIN_EXTRAPOLATION_RUNS}")
    W = X.to_numpy(dtype=np.float64)
    logs = np.log(W / W.sum(axis=1, keepdims=True) + eps)
    clr = logs - logs.mean(axis=1, keepdims=True)
    distance = np.linalg.norm(clr - clr.mean(axis=0), axis=1)
    return np.argsort(-distance, kind="stable")[:count]


def extrapolation_scores(regressor: Any, X: pd.DataFrame, Y: pd.DataFrame, fraction: float = 0.2) -> pd.DataFrame:
    """Scores per target (as `cross_validate`'s) on the `farthest_runs`, of a fit on all the other rows.

    A check of ranking beyond the runs' mass without a larger run: the mixture a large run gets is an
    optimum, usually at the edge of (or outside) what the proxies covered.
    """
    from sklearn.base import clone

    held_out = farthest_runs(X, fraction)
    train = np.setdiff1d(np.arange(len(X)), held_out)
    model = clone(regressor).fit(X.iloc[train], Y.iloc[train])
    predictions = np.asarray(model.predict(X.iloc[held_out])).reshape(len(held_out), -1)
    return score_table(Y.iloc[held_out], predictions)


SELECTION = {"spearman": 1.0, "regret": -1.0, "rmse": -1.0}  # figure fit may rank by: +1 higher is better


def selection_score(cv: pd.DataFrame | None, extrapolation: pd.DataFrame | None, metric: str = "spearman") -> float:
    """What `fit` ranks candidates by (higher wins): the mean over targets of the mean of a figure of CV and of
    extrapolation CV, negated for the figures where lower is better.

    Spearman by default, because the simulation only needs the order of mixtures; regret@1 (what picking the best
    run by the model costs) or RMSE on request; both halves, because a model that fits the proxies well but ranks
    badly outside their mass picks a poor mixture for the large run. A figure left undefined (Spearman of a
    constant prediction) counts as the worst (Spearman 0, no ranking); a missing table is left out.
    """
    if metric not in SELECTION:
        raise ValueError(f"unknown selection metric {metric!r}; choose from {list(SELECTION)}")
    worst = 0.0 if metric == "spearman" else np.inf
    tables = [table[metric].fillna(worst).mean() for table in (cv, extrapolation) if table is not None]
    return SELECTION[metric] * float(np.mean(tables)) if tables else 0.0


def fit(observations: Observations, models: Sequence[str] = (BEST,), targets: Sequence[str] | None = None,
        folds: int = 5, num_threads: int = 2, extrapolation: float = 0.2, select: str = "spearman") -> FittedModel:
    """Score each named regressor by K-fold CV and extrapolation CV, keep the best, refit it on all rows.

    The best is the highest `selection_score` (CV and extrapolation `select` averaged: Spearman, regret@1 or
    RMSE), so that the kept
    model ranks mixtures well beyond the proxies' mass too, not only among them. `folds`=1 skips both
    scores (the first model named is kept); extrapolation is skipped when `extrapolation` (the share of
    runs held out) leaves fewer than 3 runs. `targets`: valid domains (or their loss columns) to model,
    all observed ones by default.
    """
    from regmix.regression.regressors import LightGBMMixtureRegressor, make_regressor

    if folds < 1:
        raise ValueError(f"folds must be >= 1 (1: no cross-validation), got {folds}")
    if select not in SELECTION:
        raise ValueError(f"unknown selection metric {select!r}; choose from {list(SELECTION)}")
    observations = observations.select(targets or observations.targets)
    unscaled = [n for n in models if n in SCALE_AWARE and observations.scale is None]
    if unscaled:
        raise ValueError(f"{', '.join(unscaled)} need each run's scale: {' and '.join(SCALE_COLUMNS)} columns in the "
                         "mixture CSV (regmix collect writes them); fit another regressor on runs of one scale")
    by_scale = len(observations.scales()) > 1  # then extrapolation is to the largest scale, not the farthest runs
    rows = {n: runs_for(n, observations) for n in models}
    for name in models:
        check_runs(name, rows[name], folds, extrapolation, by_scale)
    rows_per_fold = len(observations) * (folds - 1) // folds if folds > 1 else len(observations)
    if "lightgbm" in models and rows_per_fold < 2 * LightGBMMixtureRegressor().min_child_samples:
        print(f"note: lightgbm keeps RegMix's published min_child_samples=20, so on {rows_per_fold} training rows "
              "its trees barely split (expect a near-constant model); the ensemble adapts it to few rows")
    extrapolate = folds > 1 and (by_scale or _extreme_count(len(observations), extrapolation) >= MIN_EXTRAPOLATION_RUNS)
    if folds > 1 and not extrapolate:
        print(f"note: {extrapolation:.0%} of {len(observations)} runs is under {MIN_EXTRAPOLATION_RUNS}: no "
              "extrapolation CV")
    how = (f"fit on the smaller scales, scored at the largest ({observations.scales()[-1][0]:,.0f} params, "
           f"{observations.scales()[-1][1]:,.0f} tokens)" if by_scale else
           f"fit on the {1 - extrapolation:.0%} of runs nearest the centre, scored on the {extrapolation:.0%} farthest")
    cv: dict[str, pd.DataFrame | None] = {}
    predictions: dict[str, np.ndarray | None] = {}
    extrapolated: dict[str, pd.DataFrame | None] = {}
    for name in models:
        def progress(line: str, name: str = name) -> None:
            print(f"{name}: {line}", flush=True)

        X, Y = features(name, rows[name]), rows[name].loss_frame()
        cv[name], predictions[name] = cross_validate(make_regressor(name, num_threads), X, Y, folds,
                                                     progress=progress) if folds > 1 else (None, None)
        if extrapolate:
            progress(f"extrapolation CV: {how}")
            extrapolated[name] = (scale_extrapolation_scores(make_regressor(name, num_threads), observations,
                                                             name in SCALE_AWARE) if by_scale else
                                  extrapolation_scores(make_regressor(name, num_threads), X, Y, extrapolation))
        else:
            extrapolated[name] = None
        if cv[name] is not None:
            print(f"{name}: {folds}-fold CV\n{cv[name].round(4).to_string()}")
        if extrapolated[name] is not None:
            print(f"{name}: extrapolation CV ({how})\n{extrapolated[name].round(4).to_string()}")
        if folds > 1:
            print(f"{name}: selection score {selection_score(cv[name], extrapolated[name], select):.4g} "
                  f"(mean {select} of CV and extrapolation{', negated' if SELECTION[select] < 0 else ''})")
    best = max(models, key=lambda n: selection_score(cv[n], extrapolated[n], select))
    X, Y = features(best, rows[best]), rows[best].loss_frame()
    print(f"{best}: fitting on all {len(X)} runs, {Y.shape[1]} targets", flush=True)
    regressor = make_regressor(best, num_threads).fit(X, Y)
    return FittedModel(best, regressor, observations.domains, observations.targets, _as_dict(cv[best]),
                       _as_dict(extrapolated[best]),
                       None if predictions[best] is None else OutOfFold(Y.to_numpy(dtype=float), predictions[best]),
                       observations.scales()[-1] if best in SCALE_AWARE else None)


def runs_for(name: str, observations: Observations) -> Observations:
    """The runs a candidate learns from: every run for a scale-aware regressor; for the others, whose inputs are the
    mixture alone, the runs of one scale, `single_scale`'s (losses of several scales would read as mixture effects)."""
    if name in SCALE_AWARE or len(observations.scales()) <= 1:
        return observations
    return observations.at_scale([single_scale(observations)])


def single_scale(observations: Observations) -> tuple[float, float]:
    """The scale a single-scale regressor learns from: the one with the most runs (the swarm, in a study with a few
    larger runs on shared mixtures), the larger of a tie."""
    counts = {scale: 0 for scale in observations.scales()}
    for n, d in observations.scale:
        counts[(float(n), float(d))] += 1
    return max(counts, key=lambda scale: (counts[scale], scale))


def features(name: str, observations: Observations) -> pd.DataFrame:
    """The candidate's input frame: mixtures, and the scale columns for a scale-aware one."""
    return observations.feature_frame() if name in SCALE_AWARE else observations.mixture_frame()


def check_runs(name: str, observations: Observations, folds: int, extrapolation: float, by_scale: bool) -> None:
    """Raise unless every fit of the candidate's CV sees the runs it needs."""
    from regmix.regression.regressors import minimum_runs

    m, n = len(observations.domains), len(observations)
    # by scale, extrapolation fits on other runs (the smaller scales): only K-fold's training rows count here
    kfold = n - -(-n // folds) if folds > 1 else n
    smallest = kfold if by_scale else smallest_training_set(n, folds, extrapolation)
    if minimum_runs(name, m) > smallest:
        raise ValueError(f"too few runs: {name} needs {minimum_runs(name, m)} runs for {m} domains, and the smallest "
                         f"fit here ({len(observations)} runs, {folds} folds) sees {smallest}; train more runs, use "
                         "fewer folds or another regressor")
    if folds > len(observations):
        raise ValueError(f"{len(observations)} runs cannot be split into {folds} folds; use at most "
                         f"{len(observations)} folds")


def scale_extrapolation_scores(regressor: Any, observations: Observations, scale_aware: bool) -> pd.DataFrame:
    """Scores per target at the largest scale observed, of a fit that never saw it: a scale-aware regressor fit on
    every smaller scale, one of the mixture alone on the scale it learns from (`single_scale`; the one just below
    when that is the largest): does the proxies' ranking hold one step up? The large run's question, one step
    down."""
    from sklearn.base import clone

    scales = observations.scales()
    held = observations.at_scale(scales[-1:])
    own = single_scale(observations)
    train = observations.at_scale(scales[:-1] if scale_aware else [own] if own != scales[-1] else scales[-2:-1])
    columns = (lambda o: o.feature_frame()) if scale_aware else (lambda o: o.mixture_frame())
    model = clone(regressor).fit(columns(train), train.loss_frame())
    predicted = np.asarray(model.predict(columns(held))).reshape(len(held), -1)
    return score_table(held.loss_frame(), predicted)


def cv_plot_path(model_path: str | os.PathLike) -> Path:
    """Where the out-of-fold plot of a model file goes: beside it, `<stem>_cv.png`."""
    return Path(model_path).with_name(f"{Path(model_path).stem}_cv.png")


def _as_dict(table: pd.DataFrame | None) -> dict[str, dict[str, float]]:
    return table.to_dict(orient="index") if table is not None else {}


def fit_csvs(mixture_csv: str | os.PathLike, loss_csv: str | os.PathLike, models: Sequence[str] = (BEST,),
             targets: Sequence[str] | None = None, folds: int = 5, num_threads: int = 2,
             extrapolation: float = 0.2, select: str = "spearman") -> FittedModel:
    """`fit` on RegMix's two CSVs; what their runs cannot give (too few of them, a target they lack) names the loss
    CSV, the file the user must grow or fix."""
    observations = read_csvs(mixture_csv, loss_csv)
    try:
        return fit(observations, models, targets, folds, num_threads, extrapolation, select)
    except ConfigError:
        raise
    except ValueError as exc:  # fit's own checks and scikit-learn's refusals of these rows
        raise ConfigError(loss_csv, f"{exc} (mixtures: {mixture_csv})") from None


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="regmix fit", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--study", type=Path, default=Path(STUDY_FOLDER),
                   help=f"folder of runs as RegMix's CSV pair, {mixture_csv_name('<scale>')} and "
                        f"{loss_csv_name('<corpus>', '<scale>')}: `regmix collect`'s --output, or a pipeline "
                        "method's runs/<experiment>/<method>/ (default: %(default)s)")
    p.add_argument("--scale", type=file_tag, help="the scale of the --study CSVs to read (default: the one it holds)")
    p.add_argument("--mixtures", type=Path, help="mixture CSV (index, train_<domain>...), with --losses instead "
                                                 "of --study's")
    p.add_argument("--losses", type=Path, help="loss CSV (index, metric/<domain>_val_loss...), with --mixtures")
    p.add_argument("--model", nargs="+", default=[BEST], choices=REGRESSORS,
                   help=f"regressor(s); with several, the best by --select over CV and extrapolation CV is kept "
                        f"(default: {BEST})")
    p.add_argument("--select", choices=list(SELECTION), default="spearman",
                   help="the figure that picks among several --model: spearman (higher wins), regret (regret@1: "
                        "the true loss of the run predicted best minus the best) or rmse (default: %(default)s)")
    p.add_argument("--target", nargs="+", help="loss column(s) or valid domain(s) to model (default: all)")
    p.add_argument("--folds", type=integer_at_least(1), default=5,
                   help="K of K-fold CV on the training rows, >= 2; 1: no cross-validation at all (neither K-fold "
                        "nor extrapolation CV), the first --model is kept (default: %(default)s)")
    p.add_argument("--extrapolation", type=share(), default=0.2,
                   help="share of runs, the farthest from the centre, held out for extrapolation CV, in (0, 1)")
    p.add_argument("--threads", type=integer_at_least(1), default=os.cpu_count() or 1,
                   help="LightGBM threads (default: all cores)")
    p.add_argument("--output", type=Path, default=Path(MODEL_NAME),
                   help="model file for `regmix simulate` (default: %(default)s, where it looks); beside it "
                        "<name>_cv.png, the kept regressor's out-of-fold predictions against the true losses")
    return p


def main(argv: Sequence[str] | None = None) -> FittedModel:
    """The command: fit on the two CSVs and write the model file (the old one stays unless the new one is whole)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if (args.mixtures is None) != (args.losses is None):
        parser.error("--mixtures and --losses go together (or give neither: the pair in --study)")
    mixtures, losses = (args.mixtures, args.losses) if args.mixtures else find_csvs(args.study, args.scale)
    check_outputs({"--output": args.output}, {"--mixtures": mixtures, "--losses": losses})
    print(f"runs: {mixtures}, {losses}")
    model = fit_csvs(mixtures, losses, args.model, args.target, args.folds, args.threads, args.extrapolation,
                     args.select)
    from regmix.regression.cv_plot import plot_out_of_fold
    from regmix.regression.model_file import save_model  # LightGBM's and sklearn's types: after parse_args

    path = save_model(model, args.output)
    plot = plot_out_of_fold(model, cv_plot_path(args.output))
    print(f"kept {model.name} ({len(model.targets)} targets, {len(model.domains)} domains) -> {path}"
          + (f"; predicted vs actual: {plot}" if plot else ""))
    return model


if __name__ == "__main__":
    raise SystemExit(run_command(main))
