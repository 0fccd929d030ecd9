"""MosaicML streaming / llm-foundry: `streams:` with a `proportion` each (mosaicml_streams.yaml and a loader).

`StreamingDataset` takes every stream's `proportion` relative to their sum and up- or down-samples each stream
to meet it over an epoch, exactly (counts, not draws): repetition is built in, no cap. A sample is one MDS
sample: a document of text (the default unit, "documents": token shares divided by tokens per document) or,
for datasets written with `--concat_tokens`, a packed sequence (`--samples sequences`; then `epoch_size` is the
budget in sequences). A path with a scheme (s3://, gs://, ...) is a stream's `remote`, else its `local`. The
block goes under llm-foundry's `train_loader.dataset.streams` as is. No phases: one file per phase.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from regmix.export.plan import ExportPlan, Unit, one_file_per_phase, phase_suffix, unit_note, write_text

UNIT: Unit = "documents"
UNITS: tuple[Unit, ...] = ("documents", "sequences")
LOADER = '''"""MosaicML streams from regmix export: `streams(phase)` -> [Stream], `dataset(phase, **kwargs)`."""
from pathlib import Path

import yaml
from streaming import Stream, StreamingDataset


def spec(phase: str = "") -> dict:
    return yaml.safe_load((Path(__file__).parent / f"mosaicml_streams{phase}.yaml").read_text())


def streams(phase: str = "") -> list:
    return [Stream(**stream) for stream in spec(phase)["streams"].values()]


def dataset(phase: str = "", **kwargs) -> StreamingDataset:
    """The weighted StreamingDataset (kwargs: batch_size, shuffle, ...; epoch_size from the file if it has one)."""
    epoch = spec(phase).get("epoch_size")
    return StreamingDataset(streams=streams(phase), **({"epoch_size": epoch} if epoch else {}), **kwargs)
'''


def write(plan: ExportPlan, output: Path, unit: Unit) -> list[Path]:
    written: list[Path] = []
    t = plan.config.training
    for phase in plan.phases:
        streams = {}
        for domain, weight in plan.weights(phase.mixture, unit).items():
            path = plan.path(domain)
            streams[domain] = {"remote" if "://" in path else "local": path, "proportion": round(weight, 12)}
        spec: dict = {"streams": streams}
        if unit == "sequences" and plan.budget_tokens is not None:
            spec["epoch_size"] = round(plan.budget_tokens * phase.steps / t.max_step / t.block_size)
        write_text(output / f"mosaicml_streams{phase_suffix(plan, phase)}.yaml", yaml.safe_dump(spec, sort_keys=False),
                   written)
    write_text(output / "mosaicml_mixture.py", LOADER, written)
    plan.note(unit_note(unit) + "; proportions are met exactly per epoch, repeating a stream where needed")
    one_file_per_phase(plan, "MosaicML streams")
    return written
