"""Shared test fixtures."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from regmix.data.corpus import CorpusManifest, Shard, TokenizerInfo

TINY_VOCAB = 64
TINY_TRAIN = {"alpha": (3000, 2500), "beta": (4000,), "gamma": (1500, 800), "delta": (2000,)}
TINY_VALID = {"alpha": 1200, "beta": 900, "gamma": 700}


@pytest.fixture(scope="session", autouse=True)
def one_blas_thread():
    """Tiny matrices only: BLAS threads just fight torch's on 2 cores (a GP fit: 10 s instead of 0.1 s)."""
    with threadpool_limits(1, user_api="blas"):
        yield


def _domain_tokens(index: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """A learnable stream per domain: a domain-specific stride through the vocabulary plus a little noise."""
    steps = (index + 1) * 3 + rng.integers(0, 2, count)
    return (np.cumsum(steps) % (TINY_VOCAB - 1) + 1).astype(np.uint16)


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> CorpusManifest:
    """A prepared corpus of four train domains (one in two shards) and three valid domains, made with numpy.

    Vocabulary 64, token 0 as end-of-text; same layout and manifest as `regmix.prepare` writes.
    """
    root = tmp_path_factory.mktemp("tiny_corpus")
    rng = np.random.default_rng(0)
    tokenizer = TokenizerInfo(name="tiny-test", sha256="0" * 64, vocab_size=TINY_VOCAB, eos_id=0, path="")
    manifest = CorpusManifest(root=root, source="tests", tokenizer=tokenizer, dtype="uint16")
    domains = list(TINY_TRAIN)
    for split, layout in (("train", TINY_TRAIN), ("valid", {d: (n,) for d, n in TINY_VALID.items()})):
        (root / split).mkdir()
        for domain, sizes in layout.items():
            shards = []
            for k, size in enumerate(sizes):
                relative = f"{split}/{domain}_{k}.bin"
                _domain_tokens(domains.index(domain), size, rng).tofile(root / relative)
                shards.append(Shard(path=relative, source=f"{split}/{domain}_{k}.jsonl", source_sha256="0" * 64,
                                    tokens=size, documents=1))
            manifest.shards[split][domain] = shards
    manifest.save()
    return manifest


# A small text corpus in RegMix's layout (JSON lines; one file gzipped), for prepare and its sources
WORDS = {
    "code": "def return import class self lambda yield for while if else None True False".split(),
    "prose": "the a river mountain quietly walked over under beneath sky light ancient story".split(),
    "legal": "hereby pursuant license warranty liability party agreement shall herein notice".split(),
}


def texts(domain: str, n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS[domain], size=rng.integers(20, 80))) + "." for _ in range(n)]


def write_jsonl(path: Path, docs: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"text": d}) + "\n" for d in docs)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(lines.encode()))
    else:
        path.write_text(lines)


@pytest.fixture
def corpus(tmp_path) -> Path:
    src = tmp_path / "src"
    for i, domain in enumerate(WORDS):
        write_jsonl(src / "train" / f"{domain}_0.jsonl", texts(domain, 40, i))
        write_jsonl(src / "valid" / f"{domain}.jsonl", texts(domain, 5, 10 + i))
    write_jsonl(src / "train" / "code_1.jsonl.gz", texts("code", 30, 99))
    return src


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A working folder with test_pipeline's tiny corpus and experiment (tiny.yaml), wandb off."""
    from test_pipeline import EXPERIMENT, write_corpus

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "disabled")
    write_corpus(tmp_path / "src")
    (tmp_path / "tiny.yaml").write_text(EXPERIMENT)
    return tmp_path
