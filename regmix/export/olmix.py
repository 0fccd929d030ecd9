"""Olmix: a launch config's `mix:` (domain -> weight and repetition_factor) and `data.sources` (olmix_mix.yaml).

Olmix hands every leaf of its mix to OLMo-core as `SourceMixtureConfig(target_ratio=weight,
max_repetition_ratio=repetition_factor)`: weights are token shares summing to 1 (unchanged) and the
repetition factor is --max-repetition, else the most any domain needs under the budget. Paths as for OLMo-core
(regmix's shards or --paths). The file is Olmix's flat form (one key per domain, as `olmix generate` writes);
merge it into a launch config that has the `training:` and `infra:` sections. No phases: one file per phase.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from regmix.export.plan import ExportPlan, Unit, cap_source, one_file_per_phase, phase_suffix, write_text

UNIT: Unit = "tokens"
UNITS: tuple[Unit, ...] = ("tokens",)


def write(plan: ExportPlan, output: Path, unit: Unit) -> list[Path]:
    written: list[Path] = []
    cap = plan.repetition_cap() or 1.0
    for phase in plan.phases:
        weights = plan.weights(phase.mixture, unit)
        spec = {"name": f"{plan.name}{phase_suffix(plan, phase)}",
                "data": {"sources": [{"name": d, "paths": plan.token_files(d)} for d in weights]},
                "mix": {d: {"weight": round(w, 12), "repetition_factor": cap} for d, w in weights.items()}}
        write_text(output / f"olmix_mix{phase_suffix(plan, phase)}.yaml", yaml.safe_dump(spec, sort_keys=False),
                   written)
    plan.note(f"mix weights = token shares (unchanged); repetition_factor {cap:g} ({cap_source(plan)})")
    one_file_per_phase(plan, "Olmix")
    return written
