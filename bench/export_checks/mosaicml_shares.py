"""`regmix export --to mosaicml` loaded by mosaicml-streaming itself, in a venv of its own (it cannot install beside
regmix: numpy < 2.2, transformers < 5). First `python make_exports.py` in regmix's venv, then here:

    python mosaicml_shares.py   # in a venv with mosaicml-streaming and numpy
"""

import importlib.machinery
import importlib.util
import os
import shutil
import sys
import types
from collections import Counter
from pathlib import Path

import numpy as np
from shares import domain, report

ROOT = Path("/tmp/regmix_export_checks")


def stub_torchvision() -> None:
    """`import streaming` imports torchvision, whose PyPI build fails beside CPU torch; streaming's text path
    never uses it."""
    modules = {name: types.ModuleType(name) for name in
               ("torchvision", "torchvision.datasets", "torchvision.transforms", "torchvision.transforms.functional")}
    modules["torchvision.datasets"].VisionDataset = type("VisionDataset", (), {})
    modules["torchvision.transforms.functional"].to_tensor = lambda x: x
    for module in modules.values():
        module.__spec__ = importlib.machinery.ModuleSpec(module.__name__, None)
    sys.modules.update(modules)


if __name__ == "__main__":
    stub_torchvision()
    for key, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": "0"}.items():
        os.environ.setdefault(key, value)
    import streaming
    from streaming.base.util import clean_stale_shared_memory

    shutil.rmtree(ROOT / "mds", ignore_errors=True)
    for name in ("short", "mid", "long"):
        with streaming.MDSWriter(out=str(ROOT / "mds" / name), columns={"ids": "ndarray:uint16"}) as out:
            for doc in np.load(ROOT / f"{name}.npy", allow_pickle=True):
                out.write({"ids": np.asarray(doc, dtype=np.uint16)})
    spec = importlib.util.spec_from_file_location("mixture", ROOT / "mosaicml" / "mosaicml_mixture.py")
    mixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mixture)
    clean_stale_shared_memory()
    tokens = Counter()
    for row in mixture.dataset(batch_size=8, shuffle=True):
        tokens[domain(row["ids"][0])] += len(row["ids"])
    report(f"mosaicml-streaming {streaming.__version__} (one epoch)", tokens)
