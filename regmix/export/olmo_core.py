"""OLMo-core: a `SourceMixtureDatasetConfig` (source_mixture.yaml, and olmo_core_mixture.py that builds it).

OLMo-core's `target_ratio` is a share of tokens, as regmix's weights are: they go in unchanged (it wants them
to sum to 1). `requested_tokens` is the token budget and `global_batch_size` is in tokens (it rounds the budget
up to whole batches). `max_repetition_ratio`, how many times a source's tokens may be read, is
--max-repetition, else the most any domain needs under the budget (so the mixture is met; OLMo-core raises
"insufficient tokens" for a source that needs more). Paths: regmix's shards themselves (OLMo-core reads raw
token files, no header: its dtype and the end-of-text id are in the YAML), or the --paths template (globs
allowed). OLMo-core's mixture has no phases: a schedule becomes one config per phase, its tokens the phase's.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from regmix.export.plan import ExportPlan, Unit, cap_source, one_file_per_phase, phase_suffix, write_text

UNIT: Unit = "tokens"
UNITS: tuple[Unit, ...] = ("tokens",)
LOADER = '''"""OLMo-core's source mixture from regmix export: `source_mixture(phase)` -> SourceMixtureDatasetConfig."""
from pathlib import Path

import yaml
from olmo_core.data.source_mixture import SourceMixtureConfig, SourceMixtureDatasetConfig, SourceMixtureList


def source_mixture(phase: str = "") -> SourceMixtureDatasetConfig:
    """The mixture of source_mixture<phase>.yaml ("" for a static mixture, "_phase2" for a schedule's second)."""
    spec = yaml.safe_load((Path(__file__).parent / f"source_mixture{phase}.yaml").read_text())["source_mixture"]
    sources = SourceMixtureList(sources=[SourceMixtureConfig(**s) for s in spec.pop("sources")])
    return SourceMixtureDatasetConfig(source_list=sources, **spec)
'''


def write(plan: ExportPlan, output: Path, unit: Unit) -> list[Path]:
    written: list[Path] = []
    t = plan.config.training
    cap = plan.repetition_cap() or 1.0
    budget = plan.budget_tokens or t.max_step * plan.tokens_per_step
    for phase in plan.phases:
        sources = [{"source_name": d, "target_ratio": round(w, 12), "paths": plan.token_files(d),
                    "max_repetition_ratio": cap} for d, w in plan.weights(phase.mixture, unit).items()]
        spec = {"source_mixture": {"requested_tokens": round(budget * phase.steps / t.max_step),
                                   "global_batch_size": plan.tokens_per_step, "seed": t.seed, "sources": sources},
                "sequence_length": t.block_size}
        if plan.corpus is not None:
            spec["tokenizer"] = {"dtype": plan.corpus.dtype, "eos_token_id": plan.corpus.tokenizer.eos_id,
                                 "vocab_size": plan.corpus.tokenizer.vocab_size}
        write_text(output / f"source_mixture{phase_suffix(plan, phase)}.yaml",
                   yaml.safe_dump(spec, sort_keys=False), written)
    write_text(output / "olmo_core_mixture.py", LOADER, written)
    plan.note(f"target_ratio = token share (unchanged); max_repetition_ratio {cap:g} ({cap_source(plan)})")
    one_file_per_phase(plan, "OLMo-core's source mixture")
    return written

