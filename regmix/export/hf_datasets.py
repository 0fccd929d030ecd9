"""Hugging Face datasets: `interleave_datasets(probabilities=..., stopping_strategy=...)`, a JSON and a loader.

`interleave_datasets` draws every example's dataset by `probabilities` (which must sum to 1), so a sample is
whatever one example is: a document before tokenization (the default unit, "documents": token shares divided
by tokens per document) or a packed sequence (`--samples sequences`). `stopping_strategy`: "first_exhausted"
ends at the first dataset that runs out; "all_exhausted" repeats datasets until every one is read once. It is
"all_exhausted" where some domain is read more than once under the budget, so the trainer stops at its step
count, not at the smallest domain's end. No phases: a schedule becomes one file per phase.
"""

from __future__ import annotations

import json
from pathlib import Path

from regmix.export.plan import ExportPlan, Unit, one_file_per_phase, phase_suffix, unit_note, write_text

UNIT: Unit = "documents"
UNITS: tuple[Unit, ...] = ("documents", "sequences")
LOADER = '''"""A Hugging Face datasets mixture from regmix export: `mixture(phase, split)`."""
import json
from pathlib import Path

from datasets import interleave_datasets, load_dataset, load_from_disk


def load(path: str, split: str):
    """A `save_to_disk` folder, else anything `load_dataset` takes (a hub id, a folder of files)."""
    if (Path(path) / "state.json").exists() or (Path(path) / "dataset_dict.json").exists():
        loaded = load_from_disk(path)
        return loaded[split] if hasattr(loaded, "keys") else loaded
    return load_dataset(path, split=split)


def mixture(phase: str = "", split: str = "train"):
    """The interleaved dataset of hf_datasets_mixture<phase>.json."""
    spec = json.loads((Path(__file__).parent / f"hf_datasets_mixture{phase}.json").read_text())
    return interleave_datasets([load(d["path"], split) for d in spec["datasets"]],
                               probabilities=[d["probability"] for d in spec["datasets"]], seed=spec["seed"],
                               stopping_strategy=spec["stopping_strategy"])
'''


def write(plan: ExportPlan, output: Path, unit: Unit) -> list[Path]:
    written: list[Path] = []
    epochs = plan.epochs() or {}
    stopping = "all_exhausted" if any(e > 1 for e in epochs.values()) else "first_exhausted"
    for phase in plan.phases:
        weights = plan.weights(phase.mixture, unit)
        spec = {"datasets": [{"domain": d, "path": plan.path(d), "probability": w} for d, w in weights.items()],
                "seed": plan.config.training.seed, "stopping_strategy": stopping}
        write_text(output / f"hf_datasets_mixture{phase_suffix(plan, phase)}.json", json.dumps(spec, indent=1) + "\n",
                   written)
    write_text(output / "hf_datasets_mixture.py", LOADER, written)
    plan.note(unit_note(unit))
    plan.note(f"stopping_strategy {stopping}" + (" (some domain is read more than once)" if epochs and
                                                  stopping == "all_exhausted" else ""))
    one_file_per_phase(plan, "interleave_datasets")
    return written
