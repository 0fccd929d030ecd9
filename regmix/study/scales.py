"""Larger proxy scales of a study (issue 29): `larger:` in an experiment file, one mapping or a list of them, each
the swarm's first mixtures trained again at a larger size for the scale-aware regressors (regmix.study.runner
trains them; regmix.regression.fit scores extrapolation to the largest)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regmix.core.files import ConfigError
from regmix.settings.training import TrainingSettings
from regmix.study.sections import apply_section, section_spelling

LARGER_SHARE = 0.25  # of the swarm's runs, trained again at a larger scale when `larger:` does not say


@dataclass
class LargerSettings:
    """A larger proxy scale for the regmix method (issue 29): the first `runs` mixtures of its swarm trained again
    with `model_name` for `max_step` steps (the proxies' other settings), so the scale-aware regressors (fit:
    scaling, scaling_lightgbm) see the mixture's effect change with scale. `larger:` is one such mapping or a list
    of them (several scales on shared mixtures); a mapping of 0 runs, or an empty list: one scale, as RegMix.
    `runs` unset: a quarter of the swarm, whatever size a command gives it (LARGER_SHARE; bench/larger_runs.py
    measured what more runs buy)."""

    runs: int | None = None
    model_name: str = "tinyllama_1M"
    max_step: int = 0  # 0: the proxies' steps

    def training(self, proxy: TrainingSettings) -> TrainingSettings:
        return dataclasses.replace(proxy, model_name=self.model_name, max_step=self.max_step or proxy.max_step)

    def count(self, swarm: int) -> int:
        """The runs trained again, of a swarm of `swarm` (no more than it has)."""
        return min(swarm, self.runs if self.runs is not None else max(1, round(LARGER_SHARE * swarm)))


def larger_scales(data: Any, source: Path) -> list[LargerSettings]:
    """`larger:` as one mapping or a list of them; a mapping of 0 runs is no larger scale."""
    if not isinstance(data, (dict, list)):
        raise ConfigError(source, "'larger:' must be a mapping (runs, model_name, max_step) or a list of them")
    entries = data if isinstance(data, list) else [data]
    scales = [apply_section(LargerSettings(), entry, source, scale_label(k, len(entries)))
              for k, entry in enumerate(entries)]
    return [s for s in scales if s.runs != 0 or isinstance(data, list)]


def scale_label(k: int, scales: int) -> str:
    """How an error names the k-th larger scale: as the file spells it."""
    return "larger" if scales == 1 else f"larger[{k}]"


def check_scales(scales: list[LargerSettings], proxy: TrainingSettings, swarm: int, source: Path) -> None:
    """The `larger:` scales: each a count of runs a swarm of `swarm` can give, settings the trainer accepts (the
    `proxy` settings at its size), and a size no other scale has (the same size twice would be seeds, not scales)."""
    seen = {(proxy.model_name, proxy.max_step): "the proxies"}
    for k, larger in enumerate(scales):
        label = scale_label(k, len(scales))
        if not (larger.runs is None or 1 <= larger.runs <= swarm) or larger.max_step < 0:
            raise ConfigError(source, f"'{label}': 'runs' must be in [1, sweep.num_configs = {swarm}] and 'max_step' "
                                      f">= 0, got {larger.runs} and {larger.max_step}")
        training = larger.training(proxy)
        training.validate(source, section_spelling(label))
        size = (training.model_name, training.max_step)
        if size in seen:
            raise ConfigError(source, f"'{label}' ({size[0]}, {size[1]} steps) is the scale of {seen[size]} already")
        seen[size] = f"'{label}'"
