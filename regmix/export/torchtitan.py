"""torchtitan: a Python module that registers each domain and returns the interleaved dataloader's config.

torchtitan (0.3) mixes Hugging Face text datasets with `InterleavedHuggingFaceTextDataLoader.Config(sources=
[HFDataSource(dataset, weight)])`: each source is tokenized and packed into seq_len sequences first, then
every sequence's source is drawn by weight (normalized), so a weight is a token share: unchanged. Its configs
are Python, so the export is torchtitan_mixture.py (its JSON beside it); every source is infinite (the run ends
at its step count, a small domain repeats). Newer torchtitan (the Grain pipeline: `DatasetMixConfig(datasets=
(WeightedDataset(dataset, weight), ...))`) takes the same weights, packed per dataset before mixing. No
phases: one file per phase.
"""

from __future__ import annotations

import json
from pathlib import Path

from regmix.export.plan import ExportPlan, Unit, one_file_per_phase, phase_suffix, write_text

UNIT: Unit = "sequences"
UNITS: tuple[Unit, ...] = ("sequences",)
LOADER = '''"""torchtitan's interleaved dataloader config from regmix export: `dataloader_config(phase)`."""
import json
from pathlib import Path

from datasets import load_dataset, load_from_disk
from torchtitan.hf_datasets import DatasetConfig
from torchtitan.hf_datasets.text_datasets import DATASETS, HFDataSource, InterleavedHuggingFaceTextDataLoader


def load(path: str):
    """A `save_to_disk` folder, else a dataset `load_dataset` streams (a hub id, a folder of files)."""
    if (Path(path) / "state.json").exists():
        return load_from_disk(path)
    return load_dataset(path, split="train", streaming=True)


def dataloader_config(phase: str = "") -> InterleavedHuggingFaceTextDataLoader.Config:
    """Registers every domain of torchtitan_mixture<phase>.json as `regmix_<domain>` and mixes them by weight."""
    spec = json.loads((Path(__file__).parent / f"torchtitan_mixture{phase}.json").read_text())
    sources = []
    for d in spec["datasets"]:
        DATASETS[f"regmix_{d['domain']}"] = DatasetConfig(path=d["path"], loader=load,
                                                          sample_processor=lambda s: s[spec["text_field"]])
        sources.append(HFDataSource(dataset=f"regmix_{d['domain']}", weight=d["weight"], infinite=True))
    return InterleavedHuggingFaceTextDataLoader.Config(sources=sources, seed=spec["seed"],
                                                       stopping_strategy="all_exhausted")
'''


def write(plan: ExportPlan, output: Path, unit: Unit) -> list[Path]:
    written: list[Path] = []
    for phase in plan.phases:
        spec = {"datasets": [{"domain": d, "path": plan.path(d), "weight": round(w, 12)}
                             for d, w in plan.weights(phase.mixture, unit).items()],
                "seed": plan.config.training.seed, "text_field": "text"}
        write_text(output / f"torchtitan_mixture{phase_suffix(plan, phase)}.json", json.dumps(spec, indent=1) + "\n",
                   written)
    write_text(output / "torchtitan_mixture.py", LOADER, written)
    plan.note("weights per packed sequence (torchtitan packs each source before mixing): the token shares unchanged")
    one_file_per_phase(plan, "torchtitan")
    return written
