"""Mixtures out to the trainers people use: one module per target, each `write(plan, output, unit)`.

`export` loads a mixture config (a file or a name below mixture_config/, as `pretrain` reads it), builds the
shared `ExportPlan` (phases, corpus, budget: regmix.export.plan) and lets the target's module write its files;
the plan's notes say what was converted.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path

from regmix.core.files import ConfigError
from regmix.export.plan import ExportPlan, Unit

TARGETS: dict[str, str] = {  # --to name (module regmix.export.<name with _>): what it writes
    "megatron": "Megatron-LM --data-args-path / --per-split-data-args-path files (sample weights)",
    "olmo-core": "OLMo-core SourceMixtureDatasetConfig (token ratios, max repetition ratio)",
    "litdata": "litdata CombinedStreamingDataset weights (litgpt's pretraining data)",
    "mosaicml": "MosaicML streaming / llm-foundry streams with proportions",
    "hf-datasets": "Hugging Face datasets interleave_datasets probabilities",
    "torchtitan": "a torchtitan dataset module interleaving Hugging Face datasets",
    "levanter": "Levanter / Marin LMMixtureDatasetConfig (stage-wise train_weights)",
    "olmix": "Olmix's mix file (domain -> token ratio, with its repetition cap)",
}


def target_module(target: str):
    """The module that writes `target`'s files (imported only when asked for)."""
    if target not in TARGETS:
        raise ValueError(f"unknown export target {target!r}; targets: {', '.join(TARGETS)}")
    return importlib.import_module(f"regmix.export.{target.replace('-', '_')}")


def target_unit(plan: ExportPlan, target: str, samples: Unit | None = None) -> Unit:
    """The unit `target` takes the plan in (`samples` where the target's samples may be either, else its own),
    checked with the weights in it, so a command with several targets fails before it writes any."""
    module = target_module(target)
    unit = samples if samples and len(module.UNITS) > 1 else module.UNIT
    if unit not in module.UNITS:
        raise ConfigError(plan.source, f"{target} samples {' or '.join(module.UNITS)}, not {unit}")
    if plan.config.policy is not None:
        raise ConfigError(plan.source, "an online schedule decides its mixture during the run, so no trainer can "
                                       "take it as a file: export the mixture it ended with or its mean instead")
    for phase in plan.phases:
        plan.weights(phase.mixture, unit)
    return unit


def export(plan: ExportPlan, target: str, output: str | os.PathLike, samples: Unit | None = None) -> list[Path]:
    """Write `plan` for `target` into `output`; `samples`: what one of the target's samples is (default: the
    target's own, see regmix.export.plan). Returns the files written; `plan.notes` says what was converted."""
    unit = target_unit(plan, target, samples)
    return target_module(target).write(plan, Path(output), unit)
