"""The toy corpus of tests/test_export.py, exported for the two targets whose libraries cannot install beside
regmix (mosaicml, torchtitan); mosaicml_shares.py and torchtitan_shares.py load the exports in their own venvs.

    python bench/export_checks/make_exports.py   # in regmix's venv
"""

import shutil
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_export import LENGTHS, documents, make_toy  # noqa: E402

from regmix.export.__main__ import main  # noqa: E402

ROOT = Path("/tmp/regmix_export_checks")

if __name__ == "__main__":
    shutil.rmtree(ROOT, ignore_errors=True)
    corpus, config = make_toy(ROOT / "toy")
    for name in LENGTHS:
        np.save(ROOT / f"{name}.npy", np.array(documents(name), dtype=object), allow_pickle=True)
    main([str(config), "--to", "mosaicml", "--corpus", str(corpus), "--output", str(ROOT / "mosaicml"),
          "--paths", str(ROOT / "mds" / "{domain}")])
    main([str(config), "--to", "torchtitan", "--corpus", str(corpus), "--output", str(ROOT / "torchtitan"),
          "--paths", str(ROOT / "hf" / "{domain}")])
