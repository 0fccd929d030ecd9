"""`regmix predict`: a fitted model's predicted losses for mixtures a user has (their production mixture, a
competitor's published one, a whole swarm), per target and for the objective, without simulating anything.

Mixtures come as a CSV in RegMix's layout (index, train_<domain>...), a mixture config YAML (`train:`), or a
folder of configs; a domain the model never saw is an error (its weight would be read as nothing), a model
domain the mixture lacks is 0. A scale-aware model predicts at `--params` and `--tokens` (the large run's, say),
else at each CSV row's own `params` and `tokens`, else at the largest scale it was fit on.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from regmix.cli import ArgumentParser, run_command
from regmix.core.files import ConfigError, check_outputs, write_atomic
from regmix.core.objective import Objective
from regmix.core.schema import INDEX_NAME, SCALE_COLUMNS, loss_column, strip_train
from regmix.regression.fitted import FittedModel

if TYPE_CHECKING:
    import pandas as pd

OBJECTIVE_COLUMN = "objective"
SPREAD_COLUMN = "objective_spread"


def read_mixtures(path: str | os.PathLike) -> pd.DataFrame:
    """Mixtures (rows: index or config name; columns: bare domains) from a CSV, a config or a folder of configs."""
    import pandas as pd

    from regmix.core.observations import read_mixture_csv
    from regmix.settings.run_config import load_run_config, run_config_paths

    path = Path(path)
    if path.suffix == ".csv":
        return read_mixture_csv(path).rename(columns=lambda c: c if c in SCALE_COLUMNS else strip_train(c))
    configs = [load_run_config(p) for p in (run_config_paths(path) if path.is_dir() else [path])]
    if not configs:
        raise ConfigError(path, "no mixture configs (*.yaml) in it")
    rows = {config.name: config.train.to_dict() for config in configs}
    return pd.DataFrame.from_dict(rows, orient="index").fillna(0.0).rename_axis(INDEX_NAME)


def predict(model: FittedModel, mixtures: pd.DataFrame, objective: Objective | None = None) -> pd.DataFrame:
    """Predicted loss per target (loss columns), the objective (the mean over the model's targets unless given) and,
    for models that have one, the objective's spread; rows as `mixtures`'. Rows with `params` and `tokens` columns
    are predicted at their own scale by a scale-aware model."""
    import pandas as pd

    from regmix.regression.simulate import objective_weights

    if model.scale is not None and set(SCALE_COLUMNS) <= set(mixtures.columns):
        return pd.concat([predict(model.at_scale(*scale), rows.drop(columns=list(SCALE_COLUMNS)), objective)
                          for scale, rows in mixtures.groupby(list(SCALE_COLUMNS), sort=False)]).loc[mixtures.index]
    mixtures = mixtures.drop(columns=[c for c in SCALE_COLUMNS if c in mixtures.columns])

    unknown = [d for d in mixtures.columns if d not in model.domains and mixtures[d].any()]
    if unknown:
        raise ValueError(f"the mixtures have weight on domains the model was not fit on: {unknown}; "
                         f"it knows {list(model.domains)}")
    weights = mixtures.reindex(columns=list(model.domains), fill_value=0.0).to_numpy(dtype=np.float64)
    weights = weights / weights.sum(axis=1, keepdims=True)
    target = objective_weights(model, objective)
    losses = model.predict(weights)
    out = pd.DataFrame(losses, index=mixtures.index, columns=[loss_column(t) for t in model.targets])
    out[OBJECTIVE_COLUMN] = losses @ target
    spread = model.predict_spread(weights)
    if spread is not None:
        out[SPREAD_COLUMN] = spread @ target
    return out


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="regmix predict", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, default=Path("model.npz"), help="model file of `regmix fit` (default: "
                   "%(default)s) or a study's regressor.npz")
    p.add_argument("--mixtures", type=Path, required=True,
                   help="a mixture CSV (index, train_<domain>...), a mixture config YAML, or a folder of them")
    p.add_argument("--target", nargs="+", help="the objective: valid domain(s), optionally weighted (web=0.7 "
                   "code=0.3); default: the mean over the model's targets, as every command")
    p.add_argument("--params", type=float, help="a scale-aware model: predict at this many non-embedding "
                   "parameters (with --tokens; default: each row's own, else the largest scale it was fit on)")
    p.add_argument("--tokens", type=float, help="a scale-aware model: predict at this many training tokens")
    p.add_argument("--output", type=Path, help="CSV to write (index, metric/<domain>_val_loss..., objective); "
                   "without it the table is printed only")
    return p


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    args = _parser().parse_args(argv)
    check_outputs({"--output": args.output} if args.output else {}, {"--model": args.model,
                                                                     "--mixtures": args.mixtures})
    from regmix.regression.model_file import load_model  # LightGBM and scikit-learn: after the flags

    model = load_model(args.model)
    if (args.params is None) != (args.tokens is None):
        raise ConfigError(args.model, "give --params and --tokens together (the scale to predict at)")
    if args.params is not None:
        try:
            model = model.at_scale(args.params, args.tokens)
        except ValueError as exc:
            raise ConfigError(args.model, str(exc)) from None
    objective = Objective.parse(args.target, "--target") or Objective.mean(model.targets)
    mixtures = read_mixtures(args.mixtures)
    if args.params is not None:  # the scale asked for, not the rows' own
        mixtures = mixtures.drop(columns=[c for c in SCALE_COLUMNS if c in mixtures.columns])
    try:
        table = predict(model, mixtures, objective)
    except ValueError as exc:
        raise ConfigError(args.mixtures, f"{exc} (model: {args.model})") from None
    print(f"objective: {objective.describe()}")
    if model.scale is not None:
        print(f"scale: {model.scale[0]:,.0f} params, {model.scale[1]:,.0f} tokens"
              + (" (each row's own where the CSV gives it)" if args.params is None else ""))
    print(table.round(4).to_string())
    if args.output:
        write_atomic(args.output, table.to_csv())
        print(f"wrote {args.output}")
    return table


if __name__ == "__main__":
    raise SystemExit(run_command(main))
