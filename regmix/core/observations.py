"""Proxy runs as the regression side passes them around, and RegMix's two CSV files that hold them.

`collect` builds `Observations`, `fit` learns from them and the fitted model keeps their domain and
target order, so the order of the mixture columns is decided once, here. On disk they are RegMix's
pair of CSVs, rows matched by index: `train_mixture_<scale>.csv` (index, train_<domain>...) and
`train_<corpus>_loss_<scale>.csv` (index, metric/<domain>_val_loss...), side by side in one folder
(`find_csvs`; the layout: `regmix.core.schema`). In memory every name is bare;
the spellings come from `regmix.core.schema`. Kept apart from it so the training side, which needs the
names only, does not import pandas. Runs may also know their scale (non-embedding parameters and tokens
trained: optional `params` and `tokens` columns of the mixture CSV, after the weights), which the scale-aware
regressors read; RegMix's files have none and read as before.
"""

from __future__ import annotations

import csv
import dataclasses
import glob
import io
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from regmix.core.files import ConfigError, write_files
from regmix.core.schema import (
    INDEX_NAME,
    SCALE_COLUMNS,
    as_valid_domain,
    loss_column,
    loss_csv_name,
    loss_domain,
    mixture_csv_name,
    mixture_csv_scale,
    train_domain,
    train_key,
)

if TYPE_CHECKING:
    import pandas as pd

# RegMix's published mixtures are rounded to 3 decimals: their rows sum to 0.996-1.003
CSV_SUM_TOLERANCE = 0.01


@dataclass(frozen=True, eq=False)
class Observations:
    """One row per proxy run: its mixture over `domains`, its losses on the valid domains `targets`, and where
    known its scale (runs, 2): non-embedding parameters and tokens trained (`SCALE_COLUMNS`)."""

    domains: tuple[str, ...]
    targets: tuple[str, ...]
    index: tuple[int | str, ...]
    mixtures: np.ndarray  # (runs, domains)
    losses: np.ndarray  # (runs, targets)
    scale: np.ndarray | None = None  # (runs, 2): params, tokens

    def __post_init__(self) -> None:
        for field, names in (("domains", self.domains), ("targets", self.targets), ("index", self.index)):
            repeated = sorted(str(n) for n, count in Counter(names).items() if count > 1)
            if repeated:
                raise ValueError(f"duplicate {field} {repeated}")
            object.__setattr__(self, field, tuple(names))
        for field, columns in (("mixtures", self.domains), ("losses", self.targets)):
            values = np.array(getattr(self, field), dtype=np.float64)
            if values.shape != (len(self.index), len(columns)):
                raise ValueError(f"{field} has shape {values.shape}, expected {(len(self.index), len(columns))}")
            values.setflags(write=False)
            object.__setattr__(self, field, values)
        if self.scale is not None:
            scale = np.array(self.scale, dtype=np.float64)
            if scale.shape != (len(self.index), len(SCALE_COLUMNS)) or not (scale > 0).all():
                raise ValueError(f"scale must be (runs, 2) positive params and tokens, got shape {scale.shape}")
            scale.setflags(write=False)
            object.__setattr__(self, "scale", scale)

    def __len__(self) -> int:
        return len(self.index)

    def mixture_frame(self) -> pd.DataFrame:
        """Mixtures with bare domain columns: scikit-learn then checks the domain order of every predict."""
        return self._frame(self.mixtures, self.domains)

    def loss_frame(self) -> pd.DataFrame:
        return self._frame(self.losses, self.targets)

    def feature_frame(self) -> pd.DataFrame:
        """Mixtures then the scale columns: what a scale-aware regressor reads."""
        if self.scale is None:
            raise ValueError(f"these runs do not know their scale (no {' and '.join(SCALE_COLUMNS)} columns)")
        return self._frame(np.c_[self.mixtures, self.scale], (*self.domains, *SCALE_COLUMNS))

    def scales(self) -> list[tuple[float, float]]:
        """The distinct (params, tokens) of the runs, smallest first; [] when the runs do not know their scale."""
        return [] if self.scale is None else sorted({(float(n), float(d)) for n, d in self.scale})

    def at_scale(self, scales: Sequence[tuple[float, float]]) -> Observations:
        """The runs at these (params, tokens) only."""
        keep = np.array([(float(n), float(d)) in set(scales) for n, d in self.scale]) if self.scale is not None \
            else np.zeros(len(self), dtype=bool)
        return self.take(np.flatnonzero(keep))

    def take(self, rows: Sequence[int]) -> Observations:
        """The runs at these positions, in this order."""
        rows = np.asarray(rows, dtype=int)
        return dataclasses.replace(self, index=tuple(np.asarray(self.index, dtype=object)[rows]),
                                   mixtures=self.mixtures[rows], losses=self.losses[rows],
                                   scale=self.scale[rows] if self.scale is not None else None)

    def _frame(self, values: np.ndarray, columns: Sequence[str]) -> pd.DataFrame:
        import pandas as pd  # here, not at the top: commands that only parse their flags start without it

        return pd.DataFrame(values, index=pd.Index(list(self.index), name=INDEX_NAME), columns=list(columns))

    def select(self, targets: Sequence[str]) -> Observations:
        """The losses of `targets` only, in that order; each a valid domain or its loss column."""
        chosen = [t if t in self.targets else as_valid_domain(t) for t in targets]
        absent = [t for t in chosen if t not in self.targets]
        if absent:
            raise ValueError(f"targets {absent} were not observed; have {list(self.targets)}")
        columns = [self.targets.index(t) for t in chosen]
        return dataclasses.replace(self, targets=tuple(chosen), losses=self.losses[:, columns])

    def on_domains(self, domains: Sequence[str]) -> Observations:
        """Mixture columns in the order of `domains` (0 where these runs lack one), e.g. a model's order.

        Weight on a domain not in `domains` is an error: dropping it would misread those runs.
        """
        lost = [d for j, d in enumerate(self.domains) if d not in domains and self.mixtures[:, j].any()]
        if lost:
            raise ValueError(f"runs have weight on domains {lost} that are not in {list(domains)}")
        columns = [self.mixtures[:, self.domains.index(d)] if d in self.domains else np.zeros(len(self))
                   for d in domains]
        return dataclasses.replace(self, domains=tuple(domains),
                                   mixtures=np.column_stack(columns) if columns else np.empty((len(self), 0)))

    def save(self, mixture_csv: str | os.PathLike, loss_csv: str | os.PathLike) -> tuple[Path, Path]:
        """Write RegMix's two CSVs, whole and together: a full disk or a kill never leaves one new and one old (or
        one cut short), whose rows would then pair mixtures with losses they did not cause."""
        mixtures = self.mixture_frame().rename(columns=train_key)
        if self.scale is not None:
            for j, column in enumerate(SCALE_COLUMNS):
                mixtures[column] = self.scale[:, j]
        write_files({mixture_csv: mixtures.to_csv().encode("utf-8"),
                     loss_csv: self.loss_frame().rename(columns=loss_column).to_csv().encode("utf-8")})
        return Path(mixture_csv), Path(loss_csv)


def _read_table(path: str | os.PathLike) -> pd.DataFrame:
    """One CSV indexed by its `index` column, at least one run, every other value a finite number."""
    import pandas as pd

    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "file not found (regmix collect writes it)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read CSV: {exc}") from None
    if not text.strip():
        raise ConfigError(path, "empty file: collect the runs again (regmix collect)")
    header = next(csv.reader(text.splitlines()[:1]))
    repeated = sorted(name for name, count in Counter(header).items() if count > 1)
    if repeated:  # pandas would rename the second `train_a` to `train_a.1`: a domain nobody trained on
        raise ConfigError(path, f"columns {repeated} appear more than once")
    try:
        table = pd.read_csv(io.StringIO(text))
    except ValueError as exc:
        raise ConfigError(path, f"cannot read CSV: {exc}") from None
    if INDEX_NAME not in table.columns:
        raise ConfigError(path, f"no '{INDEX_NAME}' column (RegMix's CSV layout: {INDEX_NAME}, <columns>...)")
    labels = table[INDEX_NAME]
    if labels.duplicated().any():
        raise ConfigError(path, f"duplicated index values {sorted(set(labels[labels.duplicated()]))}")
    if table.empty:
        raise ConfigError(path, "no runs in it, only a header: collect the runs again (regmix collect)")
    values = table.drop(columns=INDEX_NAME).apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(values.to_numpy(dtype=float))
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise ConfigError(path, f"{int(bad.sum())} values are not finite numbers, first in row "
                                f"{labels.iloc[row]}, column {values.columns[col]!r}: "
                                f"{table[values.columns[col]].iloc[row]}")
    return values.set_index(pd.Index(labels, name=INDEX_NAME))


def find_csvs(folder: str | os.PathLike, scale: str | None = None) -> tuple[Path, Path]:
    """The CSV pair of a folder of runs (collect's --output, a pipeline method's runs/<experiment>/<method>/): its
    `train_mixture_<scale>.csv`, the one scale it holds unless `scale` is given, and the one loss CSV of that scale
    beside it, whatever corpus names it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(folder, "no such folder of run CSVs (`regmix collect --output` writes one; a pipeline's "
                                  "are runs/<experiment>/<method>/)")
    scales = sorted(s for p in folder.glob(mixture_csv_name("*")) if (s := mixture_csv_scale(p.name)))
    if scale is None and len(scales) != 1:
        raise ConfigError(folder, f"mixture CSVs of several scales {scales}: choose one (fit --scale)" if scales else
                                  f"no {mixture_csv_name('<scale>')} (`regmix collect --output {folder}` writes it)")
    scale = scale or scales[0]
    if scale not in scales:
        raise ConfigError(folder / mixture_csv_name(scale), f"file not found; the scales here: {scales}")
    losses = sorted(folder.glob(loss_csv_name("*", glob.escape(scale))))
    if len(losses) != 1:
        found = f"{len(losses)}: {', '.join(p.name for p in losses)}" if losses else "none"
        raise ConfigError(folder, f"one loss CSV {loss_csv_name('<corpus>', scale)} goes with "
                                  f"{mixture_csv_name(scale)}, found {found}; name the pair (fit --mixtures --losses)")
    return folder / mixture_csv_name(scale), losses[0]


def read_csvs(mixture_csv: str | os.PathLike, loss_csv: str | os.PathLike) -> Observations:
    """RegMix's two CSVs as observations, rows in the mixture file's order, matched by index.

    Rows present in only one file are an error naming both files: a silent inner join would hide
    missing runs, and matching by position would pair mixtures with the wrong losses.
    """
    mixtures, losses = read_mixture_csv(mixture_csv), _read_table(loss_csv)
    bad = [c for c in losses.columns if loss_domain(c) is None]
    if bad:
        raise ConfigError(loss_csv, f"columns {bad} are not {loss_column('<domain>')}")
    only_m = mixtures.index.difference(losses.index)
    only_l = losses.index.difference(mixtures.index)
    if len(only_m) or len(only_l):
        raise ConfigError(loss_csv, f"rows do not match {mixture_csv}: only in mixtures {list(only_m)[:10]}, "
                                    f"only in losses {list(only_l)[:10]}")
    scale = mixtures[list(SCALE_COLUMNS)].to_numpy() if set(SCALE_COLUMNS) <= set(mixtures.columns) else None
    weights = mixtures.drop(columns=[c for c in SCALE_COLUMNS if c in mixtures.columns])
    domains = tuple(train_domain(c) for c in weights.columns)
    targets = tuple(loss_domain(c) for c in losses.columns)
    return Observations(domains, targets, tuple(mixtures.index), weights.to_numpy(),
                        losses.loc[mixtures.index].to_numpy(), scale)


def read_mixture_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A mixture CSV in RegMix's layout (index, train_<domain>..., optionally params and tokens), checked: every row
    a mixture, a scale (both columns or neither) > 0."""
    mixtures = _read_table(path)
    bad = [c for c in mixtures.columns if train_domain(c) is None and c not in SCALE_COLUMNS]
    if bad:
        raise ConfigError(path, f"columns {bad} are not {train_key('<domain>')} (or {', '.join(SCALE_COLUMNS)})")
    scale = [c for c in SCALE_COLUMNS if c in mixtures.columns]
    if scale and len(scale) < len(SCALE_COLUMNS):
        raise ConfigError(path, f"a run's scale needs both columns {' and '.join(SCALE_COLUMNS)}, found {scale}")
    if scale and not (mixtures[scale] > 0).all().all():
        raise ConfigError(path, f"{' and '.join(SCALE_COLUMNS)} must be > 0")
    _check_mixtures(mixtures.drop(columns=scale), path)
    return mixtures


def _check_mixtures(mixtures: pd.DataFrame, path: str | os.PathLike) -> None:
    """Every row a mixture: weights >= 0 that sum to 1 (a row that does not was edited or written by something else,
    and a regressor fit on it answers for mixtures no run trained on)."""
    negative = mixtures.lt(0).any(axis=1)
    if negative.any():
        raise ConfigError(path, f"run {negative.idxmax()} has a negative weight; a mixture's weights are >= 0")
    sums = mixtures.sum(axis=1)
    off = (sums - 1.0).abs() > CSV_SUM_TOLERANCE
    if off.any():
        raise ConfigError(path, f"the weights of run {off.idxmax()} sum to {sums[off.idxmax()]:.6g}, not 1 "
                                f"({int(off.sum())} runs off by more than {CSV_SUM_TOLERANCE:g}); a mixture's weights "
                                "sum to 1")
