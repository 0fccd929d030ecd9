"""The kept regressor's out-of-fold predictions against the true losses: one look says whether the model
ranks the runs (points along the diagonal) or only fits their mean (a flat cloud), which a CV table hides."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from regmix.core.files import write_files
from regmix.regression.fitted import FittedModel

MAX_PANELS = 12


def plot_out_of_fold(model: FittedModel, path: str | os.PathLike) -> Path | None:
    """A panel per target (the first `MAX_PANELS`): out-of-fold predicted against true loss, with the diagonal and
    the panel's Spearman. None (nothing written) for a model fit without cross-validation."""
    if model.out_of_fold is None:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = model.targets[:MAX_PANELS]
    columns = min(4, len(targets))
    rows = -(-len(targets) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.0 * rows), squeeze=False)
    for j, (ax, target) in enumerate(zip(axes.flat, targets)):
        actual, predicted = model.out_of_fold.actual[:, j], model.out_of_fold.predicted[:, j]
        low, high = float(min(actual.min(), predicted.min())), float(max(actual.max(), predicted.max()))
        ax.plot([low, high], [low, high], color="grey", lw=1)
        ax.scatter(actual, predicted, s=8, alpha=0.7)
        spearman = model.cv.get(target, {}).get("spearman", np.nan)
        ax.set_title(f"{target}\nSpearman {spearman:.1f}%", fontsize=8)
        ax.set_xlabel("true loss", fontsize=8)
        ax.set_ylabel("predicted out of fold", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(targets):]:
        ax.axis("off")
    more = f" (first {MAX_PANELS} of {len(model.targets)} targets)" if len(model.targets) > MAX_PANELS else ""
    fig.suptitle(f"{model.name}: {len(model.out_of_fold.actual)} runs, each predicted by a fit without it{more}",
                 fontsize=9)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=110)
    plt.close(fig)
    write_files({path: png.getvalue()})
    return Path(path)
