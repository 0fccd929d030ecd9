"""litdata: `CombinedStreamingDataset` weights (litgpt's pretraining data), litdata_mixture.json and a loader.

litdata draws each item's dataset with `random.choices(weights)` (weights divided by their sum). litgpt's data
modules read token chunks with `TokensLoader(block_size)`, one item a fixed-length block, so the default unit is
"sequences" and token weights go in unchanged; datasets of one item per document take `--samples documents`.
`iterate_over_all` must be False with weights, and the combined stream ends when any dataset runs out: litdata
has no repetition setting, so a domain read more than once under the budget ends the run early (said below).
No phases: a schedule becomes one file per phase.
"""

from __future__ import annotations

import json
from pathlib import Path

from regmix.export.plan import ExportPlan, Unit, one_file_per_phase, phase_suffix, unit_note, write_text

UNIT: Unit = "sequences"
UNITS: tuple[Unit, ...] = ("sequences", "documents")
LOADER = '''"""litdata's weighted mixture from regmix export: `combined_dataset(phase, **StreamingDataset kwargs)`."""
import json
from pathlib import Path

from litdata import CombinedStreamingDataset, StreamingDataset


def combined_dataset(phase: str = "", **dataset_kwargs) -> CombinedStreamingDataset:
    """The mixture of litdata_mixture<phase>.json; `dataset_kwargs` go to each StreamingDataset (item_loader=...)."""
    spec = json.loads((Path(__file__).parent / f"litdata_mixture{phase}.json").read_text())
    datasets = [StreamingDataset(input_dir=d["input_dir"], **dataset_kwargs) for d in spec["datasets"]]
    return CombinedStreamingDataset(datasets=datasets, weights=[d["weight"] for d in spec["datasets"]],
                                    seed=spec["seed"], iterate_over_all=False)
'''


def write(plan: ExportPlan, output: Path, unit: Unit) -> list[Path]:
    written: list[Path] = []
    for phase in plan.phases:
        spec = {"datasets": [{"domain": d, "input_dir": plan.path(d), "weight": round(w, 12)}
                             for d, w in plan.weights(phase.mixture, unit).items()],
                "seed": plan.config.training.seed, "iterate_over_all": False}
        write_text(output / f"litdata_mixture{phase_suffix(plan, phase)}.json", json.dumps(spec, indent=1) + "\n",
                   written)
    write_text(output / "litdata_mixture.py", LOADER, written)
    plan.note(unit_note(unit))
    epochs = plan.epochs() or {}
    if any(e > 1 for e in epochs.values()):
        plan.note("litdata has no repetition setting and the combined stream ends when one dataset runs out: "
                  f"{', '.join(d for d, e in epochs.items() if e > 1)} would be read more than once, so repeat their "
                  "chunks in their input_dir (or loop the dataloader) to reach the budget")
    one_file_per_phase(plan, "litdata")
    return written

