"""prepare's throughput and peak memory on a generated multi-GB Pile-style corpus, against the tokenizers
library's own batch encoding of the same documents in the same run.

The corpus: `.jsonl.zst` files of mixed domains, the domain in `meta.pile_set_name` (The Pile's layout),
documents of random words from five vocabularies, written once to --corpus. Two measurements, each in a
fresh process (its own peak resident memory): the baseline reads every document and calls
`tokenizer.encode_batch` on batches of 1024, writing nothing; ours is `regmix.data.prepare.prepare` with
`--domain-field meta.pile_set_name --valid-fraction 0.01` (read, route, tokenize, write the shards, hash them,
the manifest). Printed: tokens/s and peak RSS of each, and ours against the baseline.

    python bench/prepare_throughput.py --gigabytes 2 --tokenizer ../shared/tokenizers/gpt-neox
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from regmix.data.prepare import prepare
from regmix.data.readers import iter_documents
from regmix.data.sources import Routing

VOCABULARIES = {
    "Pile-CC": "the a of river mountain city people said year new time could would first".split(),
    "Github": "def return import class self lambda yield for while if else None True int".split(),
    "FreeLaw": "court hereby pursuant plaintiff defendant shall appeal judgment order motion".split(),
    "ArXiv": "theorem proof lemma we show let equation model results figure section data".split(),
    "PubMed": "patients study clinical treatment cells protein expression mice disease".split(),
}
FILE_BYTES = 256 * 1024 * 1024


def write_corpus(folder: Path, gigabytes: float) -> int:
    """Pile-style .jsonl.zst files of `gigabytes` of JSON lines in all (uncompressed); their count."""
    import zstandard

    (folder / "train").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    names = list(VOCABULARIES)
    total, k = int(gigabytes * 1024 ** 3), 0
    while total > 0:
        path = folder / "train" / f"{k:02d}.jsonl.zst"
        size = min(FILE_BYTES, total)
        if not path.exists():
            with path.open("wb") as raw, zstandard.ZstdCompressor(level=3).stream_writer(raw) as out:
                written = 0
                while written < size:
                    domain = names[int(rng.integers(0, len(names)))]
                    words = rng.choice(VOCABULARIES[domain], size=int(rng.integers(100, 1500)))
                    line = (json.dumps({"text": " ".join(words), "meta": {"pile_set_name": domain}}) + "\n").encode()
                    out.write(line)
                    written += len(line)
        total -= size
        k += 1
    return k


def baseline(corpus: str, tokenizer: str) -> tuple[float, int, int]:
    """Read every document and encode it with tokenizers' batch encoding: (seconds, tokens, peak RSS bytes)."""
    from regmix.data.tokenizer import load_tokenizer

    tok = load_tokenizer(tokenizer)[0]
    started, tokens = time.perf_counter(), 0
    for path in sorted(Path(corpus, "train").iterdir()):
        documents = (text for text, _ in iter_documents(path, "text", "meta.pile_set_name"))
        while batch := [t for _, t in zip(range(1024), documents)]:
            tokens += sum(len(e.ids) + 1 for e in tok.encode_batch(batch, add_special_tokens=False))
    return time.perf_counter() - started, tokens, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def ours(corpus: str, tokenizer: str, output: str) -> tuple[float, int, int]:
    """regmix's prepare, routed by the domain field, valid carved: (seconds, tokens, peak RSS bytes)."""
    shutil.rmtree(output, ignore_errors=True)
    started = time.perf_counter()
    manifest = prepare(corpus, output, tokenizer, progress=False,
                       routing=Routing(domain_field="meta.pile_set_name", valid_fraction=0.01))
    tokens = sum(s.tokens for s in manifest.all_shards())
    return time.perf_counter() - started, tokens, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def in_fresh_process(function, *args) -> tuple[float, int, int]:
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gigabytes", type=float, default=2.0, help="JSON lines to generate, uncompressed")
    p.add_argument("--corpus", type=Path, default=Path("data/bench_pile"))
    p.add_argument("--tokenizer", default=str(Path(__file__).resolve().parents[2] / "shared/tokenizers/gpt-neox"))
    args = p.parse_args()
    started = time.perf_counter()
    files = write_corpus(args.corpus, args.gigabytes)
    print(f"corpus: {files} .jsonl.zst files, {args.gigabytes:g} GB of JSON lines "
          f"({sum(f.stat().st_size for f in (args.corpus / 'train').iterdir()) / 1024 ** 3:.2f} GB compressed; "
          f"{time.perf_counter() - started:.0f} s to write); {os.cpu_count()} cores")
    measured = {"tokenizers encode_batch (baseline)": in_fresh_process(baseline, str(args.corpus), args.tokenizer),
                "regmix prepare": in_fresh_process(ours, str(args.corpus), args.tokenizer,
                                                   str(args.corpus.with_name(args.corpus.name + "_prepared")))}
    for name, (seconds, tokens, rss) in measured.items():
        print(f"{name:<36} {tokens:>14,} tokens in {seconds:7.1f} s: {tokens / seconds:>12,.0f} tokens/s, "
              f"peak RSS {rss / 1024 ** 2:,.0f} MiB")
    (base_s, base_t, base_rss), (our_s, our_t, our_rss) = measured.values()
    print(f"prepare against the baseline: {our_t / our_s / (base_t / base_s):.2f}x the tokens/s, "
          f"{our_rss / base_rss:.2f}x the peak memory (same tokens: {our_t == base_t})")


if __name__ == "__main__":
    main()
