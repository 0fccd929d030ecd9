"""Megatron-LM: `--data-args-path` (train blend) and `--per-split-data-args-path` (train and valid blends).

Megatron's GPT datasets sample fixed-length sequences from each prefix's token stream and `normalize` the
weights (divide by their sum), so a blend weight is a sequence weight, which is a token weight: regmix's
weights go in unchanged. Each domain of a prefix per domain (--paths, the prefix of `<prefix>.bin/.idx`), or,
from a prepared corpus, one prefix per shard with the domain's weight split by the shards' tokens: regmix's
shards are Megatron's `.bin` (token ids end to end); the `.idx` beside each (Megatron's MMIDIDX index: one
sequence per document, cut at the end-of-text ids) is written into the export folder next to a link to the
shard. uint32 shards are indexed as int32 (Megatron has no uint32; ids below 2^31 read the same).
Megatron has no phased blends: a schedule becomes one blend per phase, each trained to its end step and
resumed from the last checkpoint with the next one.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np

from regmix.export.plan import ExportPlan, Phase, Unit, phase_suffix, write_text

UNIT: Unit = "sequences"
UNITS: tuple[Unit, ...] = ("sequences",)
INDEX_HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {"uint16": 8, "uint32": 4}  # megatron.core.datasets.indexed_dataset.DType (uint32 read as int32)
SCAN_TOKENS = 1 << 26  # tokens read at a time when finding document ends: constant memory on big shards


def document_lengths(tokens: np.ndarray, eos_id: int) -> np.ndarray:
    """Tokens per document (each ending with its end-of-text id; a tail without one is a document too)."""
    ends = [np.flatnonzero(tokens[i:i + SCAN_TOKENS] == eos_id) + i for i in range(0, len(tokens), SCAN_TOKENS)]
    stops = np.concatenate(ends + [np.array([], dtype=np.int64)]) + 1
    if not len(stops) or stops[-1] != len(tokens):
        stops = np.append(stops, len(tokens))
    return np.diff(np.concatenate([[0], stops])).astype(np.int64)


def write_index(path: Path, lengths: np.ndarray, dtype: str) -> None:
    """Megatron's `.idx` for a `.bin` of documents of `lengths` tokens (one sequence per document)."""
    itemsize = np.dtype(dtype).itemsize
    pointers = np.concatenate([[0], np.cumsum(lengths[:-1] * itemsize)]).astype(np.int64)
    with path.open("wb") as fh:
        fh.write(INDEX_HEADER + struct.pack("<Q", 1) + struct.pack("<B", DTYPE_CODES[dtype]))
        fh.write(struct.pack("<Q", len(lengths)) + struct.pack("<Q", len(lengths) + 1))
        fh.write(lengths.astype(np.int32).tobytes() + pointers.tobytes())
        fh.write(np.arange(len(lengths) + 1, dtype=np.int64).tobytes())


def shard_prefixes(plan: ExportPlan, output: Path, split: str, domain: str) -> list[tuple[float, str]]:
    """(share of the domain's tokens, prefix) per shard, its `.idx` written and `.bin` linked under `output`."""
    corpus = plan.corpus
    assert corpus is not None
    shards = [s for s in corpus.shards[split].get(domain, []) if s.tokens]
    total = sum(s.tokens for s in shards)
    prefixes = []
    for shard in shards:
        prefix = output / "data" / Path(shard.path).with_suffix("")
        prefix.parent.mkdir(parents=True, exist_ok=True)
        index = prefix.with_suffix(".idx")
        if not index.exists() or index.stat().st_mtime < corpus.check_size(shard).stat().st_mtime:
            write_index(index, document_lengths(corpus.open_shard(shard), corpus.tokenizer.eos_id), corpus.dtype)
        link = prefix.with_suffix(".bin")
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(corpus.check_size(shard).resolve(), link)
        prefixes.append((shard.tokens / total, str(prefix.resolve())))
    return prefixes


def blend(plan: ExportPlan, output: Path, split: str, weights: dict[str, float]) -> list[str]:
    """Megatron's `w1 p1 w2 p2 ...` for `weights` over domains."""
    items: list[str] = []
    for domain, weight in weights.items():
        if plan.paths is None and plan.corpus is not None:
            pairs = shard_prefixes(plan, output, split, domain)
        else:
            pairs = [(1.0, plan.path(domain, split))]
        items += [token for share, prefix in pairs for token in (f"{weight * share:.12g}", prefix)]
    return items


def write(plan: ExportPlan, output: Path, unit: Unit) -> list[Path]:
    written: list[Path] = []
    valid = {d: 1.0 / len(plan.config.valid) for d in plan.config.valid} if plan.config.valid else {}
    valid_blend = blend(plan, output, "valid", valid) if valid else None
    for phase in plan.phases:
        suffix = phase_suffix(plan, phase)
        train = blend(plan, output, "train", plan.weights(phase.mixture, unit))
        write_text(output / f"data_args{suffix}.txt", " ".join(train) + "\n", written)
        per_split = {"train": train, "valid": valid_blend, "test": None}
        write_text(output / f"per_split_data_args{suffix}.json", json.dumps(per_split, indent=1) + "\n", written)
        plan.note(command(plan, phase, suffix))
    plan.note("weights are per sequence (Megatron's unit), which for fixed-length sequences are the token weights "
              "unchanged" + ("" if plan.paths else "; one prefix per shard of the corpus, a domain's weight split "
                             "by its shards' tokens"))
    if valid:
        plan.note(f"valid blend: the objective's domains {list(valid)} at equal weight")
    if len(plan.phases) > 1:
        ends = ",".join(str(p.end_step) for p in plan.phases[:-1])
        plan.note(f"Megatron-LM runs phases as relaunches: --phase-transition-iterations {ends} (it saves and exits "
                  "there), each relaunch with the next phase's file")
    return written


def command(plan: ExportPlan, phase: Phase, suffix: str) -> str:
    t = plan.config.training
    return (f"steps {phase.start_step}-{phase.end_step}: --per-split-data-args-path per_split_data_args{suffix}.json "
            f"--train-iters {phase.end_step} --global-batch-size {t.global_batch_size} --seq-length {t.block_size}")
