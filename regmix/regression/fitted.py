"""A fitted regressor with the domain and target order it was fit on: what simulate, the exact optimum and
the study read. `regmix.regression.fit` makes one; `regmix.regression.model_file` saves and loads it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from regmix.core.schema import SCALE_COLUMNS

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class OutOfFold:
    """The kept regressor's K-fold CV on its training runs: true and out-of-fold predicted losses (runs, targets).
    Kept with the model for the predicted-vs-actual plot; not written to model files."""

    actual: np.ndarray
    predicted: np.ndarray

    def select(self, columns: Sequence[int]) -> OutOfFold:
        return OutOfFold(self.actual[:, columns], self.predicted[:, columns])


@dataclass
class FittedModel:
    """What the simulator loads: the regressor with the domain and target (valid domain) order it was fit on."""

    name: str
    regressor: Any
    domains: tuple[str, ...]
    targets: tuple[str, ...]
    cv: dict[str, dict[str, float]] = field(default_factory=dict)
    extrapolation: dict[str, dict[str, float]] = field(default_factory=dict)
    out_of_fold: OutOfFold | None = None
    scale: tuple[float, float] | None = None  # scale-aware models: the (params, tokens) they predict at

    def at_scale(self, params: float, tokens: float) -> FittedModel:
        """The same scale-aware model predicting at another scale (e.g. the large run's)."""
        if self.scale is None:
            raise ValueError(f"{self.name} was fit on the mixture alone and predicts at its proxies' scale only; "
                             "fit a scale-aware regressor (scaling, scaling_lightgbm) on runs of several scales")
        if not (params > 0 and tokens > 0):
            raise ValueError(f"params and tokens must be > 0, got {params} and {tokens}")
        return dataclasses.replace(self, scale=(float(params), float(tokens)))

    def predict(self, weights: np.ndarray) -> np.ndarray:
        """Predicted losses, shape (rows, targets), for weights in `self.domains` order (at `scale` if it has one)."""
        frame = self._frame(weights)
        return np.asarray(self.regressor.predict(frame)).reshape(len(frame), len(self.targets))

    def select(self, targets: Sequence[str]) -> FittedModel:
        """The same model predicting only these targets (in this order)."""
        from regmix.regression.regressors import select_targets

        columns = [self.targets.index(t) for t in targets]
        return dataclasses.replace(self, regressor=select_targets(self.regressor, columns), targets=tuple(targets),
                                   cv={t: self.cv[t] for t in targets if t in self.cv},
                                   extrapolation={t: self.extrapolation[t] for t in targets if t in self.extrapolation},
                                   out_of_fold=None if self.out_of_fold is None else self.out_of_fold.select(columns))

    def predict_spread(self, weights: np.ndarray) -> np.ndarray | None:
        """Ensemble disagreement (or GP std) per target; None for models without one."""
        frame = self._frame(weights)
        for method in ("predict_spread", "predict_std"):
            if hasattr(self.regressor, method):
                return np.asarray(getattr(self.regressor, method)(frame)).reshape(len(frame), len(self.targets))
        return None

    def predict_with_spread(self, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Predicted losses and the ensemble's disagreement from one pass over its members (as cheap as `predict`);
        None for a model that is not an ensemble."""
        if not hasattr(self.regressor, "member_predictions"):
            return None
        frame = self._frame(weights)
        members = np.asarray(self.regressor.member_predictions(frame)).reshape(-1, len(frame), len(self.targets))
        return members.mean(axis=0), members.std(axis=0)

    def _frame(self, weights: np.ndarray) -> pd.DataFrame:
        """Weights as the regressor was fit on them: a frame with the domains as its columns."""
        import pandas as pd

        weights = np.asarray(weights, dtype=np.float64)
        if self.scale is None:
            return pd.DataFrame(weights, columns=list(self.domains))
        return pd.DataFrame(np.c_[weights, np.tile(self.scale, (len(weights), 1))],
                            columns=[*self.domains, *SCALE_COLUMNS])
