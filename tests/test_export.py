"""`regmix export`: every target's files loaded by the trainer's own library, and the shares it realizes.

The toy corpus has documents of very different lengths per domain (8, 30 and 120 tokens), so a target that
samples documents realizes the mixture's token shares only if the export divided by tokens per document.
"""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import yaml

from regmix.core.files import ConfigError
from regmix.data.corpus import CorpusManifest, Shard, TokenizerInfo
from regmix.export.__main__ import main

LENGTHS = {"short": 8, "mid": 30, "long": 120}  # tokens per document, end-of-text included
DOCUMENTS = {"short": 9000, "mid": 3000, "long": 900}
MIXTURE = {"short": 0.5, "mid": 0.3, "long": 0.2}
EOS = 0


def documents(domain: str) -> list[np.ndarray]:
    """The domain's documents: a domain-specific id range, each ending with end-of-text."""
    base = 1 + 100 * list(LENGTHS).index(domain)
    rng = np.random.default_rng(len(domain))
    return [np.append(rng.integers(base, base + 99, LENGTHS[domain] - 1), EOS).astype(np.uint16)
            for _ in range(DOCUMENTS[domain])]


@pytest.fixture(scope="module")
def toy(tmp_path_factory) -> tuple[Path, Path]:
    return make_toy(tmp_path_factory.mktemp("export_corpus"))


def make_toy(root: Path) -> tuple[Path, Path]:
    """A prepared corpus (two shards for `short`) and a mixture config: 1000 steps of 8 x 32 tokens."""
    tokenizer = TokenizerInfo(name="toy", sha256="0" * 64, vocab_size=400, eos_id=EOS, path="")
    manifest = CorpusManifest(root=root / "corpus", source="tests", tokenizer=tokenizer, dtype="uint16")
    for split in ("train", "valid"):
        (manifest.root / split).mkdir(parents=True)
        for domain in LENGTHS:
            docs = documents(domain) if split == "train" else documents(domain)[:10]
            parts = np.array_split(np.arange(len(docs)), 2 if domain == "short" and split == "train" else 1)
            shards = []
            for k, part in enumerate(parts):
                tokens = np.concatenate([docs[i] for i in part])
                tokens.tofile(manifest.root / split / f"{domain}_{k}.bin")
                shards.append(Shard(f"{split}/{domain}_{k}.bin", f"{split}/{domain}_{k}.jsonl", "0" * 64, len(tokens),
                                    len(part)))
            manifest.shards[split][domain] = shards
    manifest.save()
    config = root / "mix.yaml"
    config.write_text(yaml.safe_dump({"train": {f"train_{d}": w for d, w in MIXTURE.items()},
                                      "valid": {"valid_long": 1.0}, "max_step": 1000, "global_batch_size": 8,
                                      "micro_batch_size": 8, "block_size": 32}))
    return manifest.root, config


def loader(path: Path):
    """Import an exported loader module from its file, as a user would."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def token_shares(tokens: Counter) -> dict[str, float]:
    total = sum(tokens.values())
    return {d: tokens[d] / total for d in MIXTURE}


def domain_of(token: int) -> str:
    return list(LENGTHS)[(int(token) - 1) // 100]


def test_megatron_blends_over_the_corpus_shards_load_in_megatron_core(toy, tmp_path):
    pytest.importorskip("megatron.core")
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig
    from megatron.core.datasets.indexed_dataset import IndexedDataset
    from megatron.core.datasets.utils import get_blend_from_list
    from megatron.core.tokenizers.text.libraries.null_tokenizer import NullTokenizer

    corpus, config = toy
    main([str(config), "--to", "megatron", "--corpus", str(corpus), "--output", str(tmp_path)])
    per_split = json.loads((tmp_path / "per_split_data_args.json").read_text())
    assert (tmp_path / "data_args.txt").read_text().split() == per_split["train"]
    prefixes = per_split["train"][1::2]
    assert len(prefixes) == 4  # one per shard: `short` has two
    indexed = IndexedDataset(next(p for p in prefixes if p.endswith("short_1")))  # our .idx over the shard itself
    docs = documents("short")[4500:]
    assert len(indexed) == len(docs) and all(np.array_equal(indexed[i], docs[i]) for i in (0, 1, 4499))

    cfg = GPTDatasetConfig(random_seed=1, sequence_length=32, split=None, tokenizer=NullTokenizer(vocab_size=400),
                           blend_per_split=[get_blend_from_list(per_split[s]) for s in ("train", "valid")] + [None],
                           reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
                           path_to_cache=None)
    train, valid, _ = BlendedMegatronDatasetBuilder(GPTDataset, [1000, 50, 0], lambda: True, cfg).build()
    tokens = Counter()
    for i in range(len(train)):  # all: the blend interleaves deterministically, a stride would alias
        sample = train[i]["tokens"].numpy()  # one dataset's window, end-of-text ids counted with it
        tokens[domain_of(sample[sample != EOS][0])] += len(sample)
    assert token_shares(tokens) == pytest.approx(MIXTURE, abs=0.02)
    assert {domain_of(t) for t in valid[0]["tokens"].numpy() if t != EOS} == {"long"}


def test_olmo_core_reads_the_shards_with_the_repetition_the_budget_needs(toy, tmp_path, capsys):
    pytest.importorskip("olmo_core")
    corpus, config = toy
    main([str(config), "--to", "olmo-core", "--corpus", str(corpus), "--output", str(tmp_path)])
    spec = yaml.safe_load((tmp_path / "source_mixture.yaml").read_text())
    needed = {d: MIXTURE[d] * 1000 * 8 * 32 / (LENGTHS[d] * DOCUMENTS[d]) for d in MIXTURE}  # epochs
    assert spec["source_mixture"]["sources"][0]["max_repetition_ratio"] == pytest.approx(max(needed.values()), abs=0.1)
    out = capsys.readouterr().out
    assert "epochs per domain: " in out and all(f"{d} {needed[d]:.2f}" in out for d in MIXTURE)
    built = loader(tmp_path / "olmo_core_mixture.py").source_mixture().build(npdtype=np.uint16, sequence_length=32)
    tokens = Counter({s.name: sum(p.tokens for p in s.path_tokens) for s in built.sources})
    assert token_shares(tokens) == pytest.approx(MIXTURE, abs=0.01)

    main([str(config), "--to", "olmo-core", "--corpus", str(corpus), "--output", str(tmp_path / "capped"),
          "--max-repetition", "1.5"])
    assert "over --max-repetition 1.5: short" in capsys.readouterr().out
    with pytest.raises(Exception, match="(?i)insufficient"):  # OLMo-core refuses: short needs 1.78 epochs
        loader(tmp_path / "capped" / "olmo_core_mixture.py").source_mixture().build(npdtype=np.uint16,
                                                                                    sequence_length=32)


def test_litdata_and_hf_datasets_sampling_documents_realize_the_token_shares(toy, tmp_path):
    """Both draw whole documents: without dividing by tokens per document, `long` would take 3.5x its share."""
    pytest.importorskip("litdata")
    datasets = pytest.importorskip("datasets")
    from litdata.streaming.writer import BinaryWriter

    corpus, config = toy
    for domain in LENGTHS:
        writer = BinaryWriter(str(tmp_path / "litdata" / domain), chunk_bytes="1MB")
        for i, doc in enumerate(documents(domain)):
            writer[i] = doc
        writer.done()
        writer.merge()
        datasets.Dataset.from_dict({"ids": documents(domain)}).save_to_disk(str(tmp_path / "hf" / domain))

    main([str(config), "--to", "litdata", "--corpus", str(corpus), "--samples", "documents", "--output",
          str(tmp_path / "out_litdata"), "--paths", str(tmp_path / "litdata" / "{domain}")])
    combined = loader(tmp_path / "out_litdata" / "litdata_mixture.py").combined_dataset()
    tokens = Counter()
    for _, item in zip(range(8000), combined):
        tokens[domain_of(item[0])] += len(item)
    assert token_shares(tokens) == pytest.approx(MIXTURE, abs=0.03)

    main([str(config), "--to", "hf-datasets", "--corpus", str(corpus), "--output", str(tmp_path / "out_hf"),
          "--paths", str(tmp_path / "hf" / "{domain}")])
    spec = json.loads((tmp_path / "out_hf" / "hf_datasets_mixture.json").read_text())
    assert spec["stopping_strategy"] == "all_exhausted"  # short and mid repeat under the budget
    mixed = loader(tmp_path / "out_hf" / "hf_datasets_mixture.py").mixture()
    tokens = Counter()
    for _, row in zip(range(8000), mixed):
        tokens[domain_of(row["ids"][0])] += len(row["ids"])
    assert token_shares(tokens) == pytest.approx(MIXTURE, abs=0.03)


def test_mosaicml_streams_realize_the_token_shares(toy, tmp_path):
    streaming = pytest.importorskip("streaming")  # not installable beside regmix (numpy < 2.2, transformers < 5)
    from streaming.base.util import clean_stale_shared_memory

    corpus, config = toy
    for domain in LENGTHS:
        with streaming.MDSWriter(out=str(tmp_path / "mds" / domain), columns={"ids": "ndarray:uint16"}) as out:
            for doc in documents(domain):
                out.write({"ids": doc})
    main([str(config), "--to", "mosaicml", "--corpus", str(corpus), "--output", str(tmp_path / "out"),
          "--paths", str(tmp_path / "mds" / "{domain}")])
    clean_stale_shared_memory()
    dataset = loader(tmp_path / "out" / "mosaicml_mixture.py").dataset(batch_size=8, shuffle=True)
    tokens = Counter()
    for row in dataset:
        tokens[domain_of(row["ids"][0])] += len(row["ids"])
    assert token_shares(tokens) == pytest.approx(MIXTURE, abs=0.02)


def test_levanter_stages_start_on_mixture_blocks_and_olmix_mixes_token_shares(toy, tmp_path, capsys):
    corpus, config = toy
    staged = tmp_path / "staged.yaml"
    staged.write_text(yaml.safe_dump({"schedule": [
        {"until_step": 30, "train": {"train_short": 0.8, "train_long": 0.2}},
        {"until_step": 100, "train": {f"train_{d}": w for d, w in MIXTURE.items()}}],
        "valid": {"valid_long": 1.0}, "max_step": 100, "global_batch_size": 12, "micro_batch_size": 12,
        "block_size": 32}))
    main([str(staged), "--to", "levanter", "olmix", "--corpus", str(corpus), "--output", str(tmp_path / "out"),
          "--paths", "gs://bucket/{split}/{domain}-*.jsonl.gz"])
    data = yaml.safe_load((tmp_path / "out" / "levanter" / "levanter_data.yaml").read_text())["data"]
    assert data["train_weights"] == [[0, {"short": 0.8, "long": 0.2, "mid": 0.0}],
                                     [30, {"short": 0.5, "mid": 0.3, "long": 0.2}]]
    assert data["mixture_block_size"] == 8  # 30 steps x 12 sequences = 360 = 8 x 45
    assert data["components"]["long"]["source"] == {"type": "url", "train_urls": ["gs://bucket/train/long-*.jsonl.gz"],
                                                    "validation_urls": ["gs://bucket/valid/long-*.jsonl.gz"]}
    assert "mixture_block_size 8" in capsys.readouterr().out
    first = yaml.safe_load((tmp_path / "out" / "olmix" / "olmix_mix_phase1.yaml").read_text())
    assert first["mix"]["short"]["weight"] == 0.8 and "mid" not in first["mix"]
    assert {s["name"]: s["paths"] for s in first["data"]["sources"]}["short"] == ["gs://bucket/train/short-*.jsonl.gz"]


def test_bad_exports_fail_before_writing_anything(toy, tmp_path):
    corpus, config = toy
    with pytest.raises(ConfigError, match="samples whole documents.*give --corpus"):
        main([str(config), "--to", "megatron", "hf-datasets", "--paths", "/d/{domain}", "--output", str(tmp_path)])
    assert not any(tmp_path.iterdir())  # megatron came first and wrote nothing either
    online = tmp_path / "online.yaml"
    online.write_text(config.read_text() + "schedule: {policy: aioli}\n")
    with pytest.raises(ConfigError, match="online.yaml: an online schedule decides its mixture during the run"):
        main([str(online), "--to", "olmix", "--corpus", str(corpus), "--output", str(tmp_path / "o")])
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text().replace("train_mid", "train_code"))
    with pytest.raises(ConfigError, match=r"other.yaml: unknown domains \['code'\]"):
        main([str(other), "--to", "olmix", "--corpus", str(corpus), "--output", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="give --paths with \\{domain\\}"):
        main([str(config), "--to", "litdata", "--output", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="--paths: '/d/all' has no \\{domain\\}: every domain would read the same"):
        main([str(config), "--to", "litdata", "--paths", "/d/all", "--output", str(tmp_path / "o")])
    with pytest.raises(ConfigError, match="--paths: '/d/\\{dom\\}' is not a template of \\{domain\\} and \\{split\\}"):
        main([str(config), "--to", "litdata", "--paths", "/d/{dom}", "--output", str(tmp_path / "o")])
