"""The large run's mixture config and how it is reported: whatever method found the mixture (RegMix's
simulation, a sequential search, an online method), `optimal_mixture.yaml` is the same RegMix config with
the large run's training settings, and the natural-vs-optimal table and plot look the same.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from regmix.core.files import write_files
from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.search.synthesize import SynthesisSettings
from regmix.settings.run_config import RECORD_KEYS, RunConfig
from regmix.settings.training import TrainingSettings


def optimal_run_config(mixture: Mixture, objective: Objective, predicted: float, spread: float | None,
                       large: TrainingSettings | None = None, settings: SynthesisSettings = SynthesisSettings(),
                       **extra: Any) -> RunConfig:
    """RegMix config for the large run (`optimal_mixture.yaml`, trained with `large`: default large_run_settings()),
    whatever method found the mixture.

    The prediction and how it was made go in extra keys; the objective is written by loss column,
    the name the runs log it under.
    """
    unrecorded = sorted(set(extra) - set(RECORD_KEYS))
    if unrecorded:  # a config with them could not be read back (regmix.settings.run_config refuses unknown keys)
        raise TypeError(f"not keys a config records: {unrecorded}; add them to RECORD_KEYS")
    valid = objective.domains
    extra = {"predicted_loss": round(predicted, 6),
             "predicted_loss_spread": None if spread is None else round(spread, 6),
             "objective": objective.to_file(), **extra}
    return RunConfig("optimal_mixture", mixture, valid, large or large_run_settings(), settings.as_config(),
                     extra)


def scale_record(large: tuple[float, float], proxies_scale: tuple[float, float], proxies: Mixture,
                 single: tuple[str, Mixture] | None = None) -> dict[str, Any]:
    """What optimal_mixture.yaml and report.json record of a scale-aware model's optimum (`predicted_at`): the scale
    it is chosen for, the largest proxies' scale and optimum beside it, and where a study fit one, the optimum of
    the best single-scale regressor (its name and mixture: RegMix's answer, which bench/scale_transfer.py found to
    win at a larger scale where the scale-aware one lost)."""
    record = {"params": large[0], "tokens": large[1], "proxies_params": proxies_scale[0],
              "proxies_tokens": proxies_scale[1], "proxies_optimum": rounded(proxies)}
    if single is not None:
        record |= {"single_scale_regressor": single[0], "single_scale_optimum": rounded(single[1])}
    return record


def rounded(mixture: Mixture) -> dict[str, float]:
    return {d: round(w, 6) for d, w in mixture.to_dict().items()}


def large_run_settings(large_model: str = "tinyllama_1_1b", tokens: float = 0) -> TrainingSettings:
    """The large run's training settings written into optimal_mixture.yaml (its token budget sets the caps): the
    large_1b recipe on `large_model`, for `tokens` (0: the recipe's 25,000 steps) in whole steps of its batch, its
    warm-up the recipe's share of the steps and no interval longer than the run."""
    settings = TrainingSettings.from_name("large_1b", model_name=large_model)
    if tokens:
        steps = max(1, round(tokens / (settings.global_batch_size * settings.block_size)))
        settings = dataclasses.replace(
            settings, max_step=steps, warmup_steps=max(1, round(settings.warmup_steps * steps / settings.max_step)),
            eval_step_interval=min(settings.eval_step_interval, steps),
            save_step_interval=min(settings.save_step_interval, steps))
    return settings


def mixture_report(natural: Mapping[str, float], optimal: Mapping[str, float], optimal_path: str,
                   beside: Mapping[str, Mapping[str, float]] | None = None) -> list[str]:
    """Report lines: natural and optimal weight per domain (and other optima beside it by column name, e.g. a
    scale-aware model's for the largest proxies and a single-scale regressor's), and how to train the optimum."""
    beside = beside or {}
    lines = [f"{'domain':<24}{'natural':>10}{'optimal':>10}" + "".join(f"{name:>10}" for name in beside)]
    lines += [f"{d:<24}{w:>10.3f}{optimal.get(d, 0.0):>10.3f}" + "".join(f"{m.get(d, 0.0):>10.3f}"
                                                                        for m in beside.values())
              for d, w in natural.items()]
    return lines + [f"optimal mixture: {optimal_path}  (train it: model_training/pretrain_1b.sh {optimal_path})"]


def plot_mixtures(natural: Mixture, optimal: Mixture, path: str | os.PathLike) -> Path:
    """Bars of the natural and the optimal weight per domain, as a PNG written whole or not at all."""
    write_files({path: mixture_plot(natural, optimal)})
    return Path(path)


def mixture_plot(natural: Mixture, optimal: Mixture) -> bytes:
    """`plot_mixtures`'s PNG, in memory: a command writes it together with the config it shows."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    domains = optimal.domains
    x = np.arange(len(domains))
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(domains)), 4.5))
    ax.bar(x - 0.2, natural.vector(domains) / natural.weights.sum(), 0.4, label="natural")
    ax.bar(x + 0.2, optimal.weights, 0.4, label="optimal (predicted)")
    ax.set_xticks(x, domains, rotation=60, ha="right")
    ax.set_ylabel("weight")
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=120)
    plt.close(fig)
    return png.getvalue()
