"""Preparation time of the embedded default corpus: cold (build corpus, train BPE, tokenize all),
then warm (everything up to date), against the 2-minute goal on 2 cores."""

import tempfile
import time
from pathlib import Path

from regmix.data.default_corpus import build_default_corpus
from regmix.data.prepare import prepare

if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        raw = build_default_corpus(Path(tmp) / "raw")
        built = time.perf_counter()
        manifest = prepare(raw, Path(tmp) / "out", progress=False)
        cold = time.perf_counter()
        prepare(raw, Path(tmp) / "out", progress=False)
        warm = time.perf_counter()
    tokens = sum(manifest.tokens(s, d) for s in ("train", "valid") for d in manifest.shards[s])
    print(f"default corpus: {len(manifest.train_domains)} domains, {tokens:,} tokens")
    print(f"  build corpus:          {built - start:6.1f} s")
    print(f"  prepare (cold):        {cold - built:6.1f} s   ({tokens / (cold - built):,.0f} tokens/s)")
    print(f"  total cold:            {cold - start:6.1f} s   (goal: < 120 s, {(cold - start) / 120:.0%} of it)")
    print(f"  prepare (warm re-run): {warm - cold:6.2f} s   ({(cold - built) / (warm - cold):.0f}x faster than cold)")
