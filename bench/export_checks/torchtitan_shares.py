"""`regmix export --to torchtitan` loaded by torchtitan (0.3) itself, in a venv of its own (it needs datasets < 4.8).
First `python make_exports.py` in regmix's venv, then here:

    python torchtitan_shares.py   # in a venv with torchtitan and datasets
"""

import importlib.util
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
from datasets import Dataset
from shares import domain, report
from torchtitan.components.tokenizer import BaseTokenizer
from torchtitan.hf_datasets.text_datasets import InterleavedHuggingFaceTextDataLoader

ROOT = Path("/tmp/regmix_export_checks")


class IdTokenizer(BaseTokenizer):
    """The toy documents are their token ids as text: `encode` reads them back (end-of-text 0)."""

    def __init__(self):
        super().__init__()
        self.eos_id, self.bos_id = 0, 399

    def encode(self, text, add_bos=True, add_eos=True):
        return [int(x) for x in text.split()] + ([0] if add_eos else [])

    def decode(self, ids):
        return ""

    def get_vocab_size(self):
        return 400


if __name__ == "__main__":
    shutil.rmtree(ROOT / "hf", ignore_errors=True)
    for name in ("short", "mid", "long"):
        docs = np.load(ROOT / f"{name}.npy", allow_pickle=True)
        texts = [" ".join(map(str, doc[:-1])) for doc in docs]
        Dataset.from_dict({"text": texts}).save_to_disk(str(ROOT / "hf" / name))
    spec = importlib.util.spec_from_file_location("mixture", ROOT / "torchtitan" / "torchtitan_mixture.py")
    mixture = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mixture)
    loader = InterleavedHuggingFaceTextDataLoader(mixture.dataloader_config(), dp_world_size=1, dp_rank=0,
                                                  tokenizer=IdTokenizer(), seq_len=32, local_batch_size=8)
    tokens = Counter()
    for _, (inputs, _labels) in zip(range(500), loader):
        for row in inputs["input"]:
            tokens[domain(row[row > 0][0])] += len(row)
    report("torchtitan 0.3.0 (4,000 packed sequences)", tokens)
