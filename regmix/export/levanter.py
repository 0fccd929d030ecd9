"""Levanter / Marin: an `LmDataConfig` (`LMMixtureDatasetConfig`) `data:` section with stage-wise train_weights.

Levanter's mixture fills every block of `mixture_block_size` sequences with `int(weight x block)` sequences
of each dataset (weights normalized per stage); its datasets are packed seq_len windows, so a weight is a token
share: unchanged. A schedule becomes `train_weights: [[start_step, {...}], ...]` (stages start at steps; regmix
stages end at them), and Levanter asserts that each start, in sequences (step x batch), is a multiple of
`mixture_block_size`: the largest power of two up to 2048 that divides every start is used, and said. A weight
below 1 / mixture_block_size rounds to 0 sequences there (said). Validation domains are components with
`validation_urls` (weight 0 where they are not trained on). Written in Marin's `components:` form; older
Levanter releases name it `configs:` with the urls directly in each component.
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from regmix.export.plan import ExportPlan, Unit, write_text

UNIT: Unit = "sequences"
UNITS: tuple[Unit, ...] = ("sequences",)
MAX_BLOCK = 2048  # Levanter's default mixture_block_size


def block_size(starts: list[int], batch: int) -> int:
    """The largest power of two <= MAX_BLOCK dividing every stage start in sequences."""
    offsets = [s * batch for s in starts if s]
    common = math.gcd(*offsets) if offsets else MAX_BLOCK
    return min(MAX_BLOCK, common & -common) if common else MAX_BLOCK


def write(plan: ExportPlan, output: Path, unit: Unit) -> list[Path]:
    written: list[Path] = []
    t = plan.config.training
    stages = [(p.start_step, {d: round(w, 12) for d, w in plan.weights(p.mixture, unit).items()})
              for p in plan.phases]
    block = block_size([s for s, _ in stages], t.global_batch_size)
    components = {}
    for domain in dict.fromkeys(plan.domains + plan.config.valid):
        source: dict = {"type": "url"}
        if domain in plan.domains:
            source["train_urls"] = [plan.path(domain, "train")]
        if domain in plan.config.valid:
            source["validation_urls"] = [plan.path(domain, "valid")]
        components[domain] = {"source": source}
    every = list(components)
    weights = [[start, {d: w.get(d, 0.0) for d in every}] for start, w in stages]
    data = {"mixture_block_size": block, "components": components,
            "train_weights": weights[0][1] if len(weights) == 1 else weights}
    write_text(output / "levanter_data.yaml", yaml.safe_dump({"data": data}, sort_keys=False), written)
    plan.note("weights per packed sequence: the token shares unchanged")
    if block < MAX_BLOCK:
        plan.note(f"mixture_block_size {block}: the largest that divides every stage start in sequences "
                  f"(step x {t.global_batch_size})")
    small = sorted({d for _, w in stages for d, x in w.items() if 0 < x < 1 / block})
    if small:
        plan.note(f"weights below 1/{block} round to 0 sequences in Levanter: {', '.join(small)}")
    if len(stages) > 1:
        plan.note("stages: train_weights [[start_step, weights], ...] (regmix's until_step is the next stage's start)")
    return written
