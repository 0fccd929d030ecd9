"""A corpus's source files through prepare: every format, the domain from a field, the valid split carved from
train, --count, and Hugging Face datasets folders (regmix.data.readers, regmix.data.sources)."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS, texts

from regmix.core.files import ConfigError
from regmix.data.prepare import main, prepare
from regmix.data.sources import Routing
from regmix.data.tokenizer import load_tokenizer


def write_format(path: Path, docs: list[str]) -> None:
    """The documents in the format the file's name says (the writers of the corpora people have)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import zstandard

    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps({"text": d, "meta": {"source": "test"}}) + "\n" for d in docs).encode()
    if path.name.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(lines))
    elif path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(lines))
    elif path.suffix == ".parquet":
        pq.write_table(pa.table({"id": list(range(len(docs))), "text": docs}), path, row_group_size=7)
    elif path.suffix == ".arrow":  # as `datasets`' save_to_disk writes its data files: an Arrow stream
        table = pa.table({"text": docs})
        with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=6):
                writer.write_batch(batch)
    else:
        path.write_bytes(lines)


@pytest.mark.parametrize("suffix", [".jsonl.zst", ".json.gz", ".parquet", ".arrow"])
def test_every_format_gives_the_tokens_of_plain_jsonl(corpus, tmp_path, suffix):
    reference = prepare(corpus, tmp_path / "plain", vocab_size=300, progress=False)
    tokenizer = str(tmp_path / "plain" / "tokenizer" / "tokenizer.json")
    for domain in WORDS:  # the same documents in another format
        (corpus / "train" / f"{domain}_0.jsonl").unlink()
        write_format(corpus / "train" / f"{domain}_0{suffix}", texts(domain, 40, list(WORDS).index(domain)))
    other = prepare(corpus, tmp_path / "other", tokenizer, progress=False)
    for domain in WORDS:
        assert other.tokens("train", domain) == reference.tokens("train", domain)
        ours = np.fromfile(tmp_path / "other" / "train" / f"{domain}_0.bin", dtype=other.dtype)
        assert np.array_equal(ours, np.fromfile(tmp_path / "plain" / "train" / f"{domain}_0.bin", dtype=other.dtype))
    assert {s.source for s in other.shards["train"]["prose"]} == {f"train/prose_0{suffix}"}


def test_unread_formats_and_bad_columns_are_one_error_naming_the_file(corpus, tmp_path):
    compressed = corpus / "train" / "prose_1.jsonl.bz2"
    compressed.write_bytes(b"BZh9")
    with pytest.raises(ConfigError, match=r"prose_1.jsonl.bz2: prepare does not read this format; supported: .jsonl, "):
        prepare(corpus, tmp_path / "out", vocab_size=300, progress=False)
    compressed.unlink()
    write_format(corpus / "train" / "prose_0.jsonl.zst", ["twice"])
    with pytest.raises(ConfigError, match="prose: two files of one name in two formats"):
        prepare(corpus, tmp_path / "out", vocab_size=300, progress=False)
    (corpus / "train" / "prose_0.jsonl.zst").unlink()
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": ["x"]}), corpus / "train" / "prose_2.parquet")
    with pytest.raises(ConfigError, match=r"prose_2.parquet: no 'text' column; it has \['content'\]"):
        prepare(corpus, tmp_path / "out", vocab_size=300, progress=False)
    (corpus / "train" / "prose_2.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(ConfigError, match="prose_2.parquet: cannot read: ArrowInvalid"):
        prepare(corpus, tmp_path / "out", vocab_size=300, progress=False)
    (corpus / "train" / "prose_2.parquet").unlink()
    (corpus / "train" / "prose_3.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd garbage")
    with pytest.raises(ConfigError, match="prose_3.jsonl.zst: cannot read: "):
        prepare(corpus, tmp_path / "out", vocab_size=300, progress=False)


def pile_style(root: Path) -> Path:
    """Two .jsonl.zst files of mixed domains, the domain in meta.pile_set_name, as The Pile ships them."""
    import zstandard

    rng = np.random.default_rng(5)
    names = {"code": "Github", "prose": "Pile-CC", "legal": "FreeLaw"}
    for k in range(2):
        lines = []
        for i in range(60):
            domain = ["code", "prose", "prose", "legal"][i % 4] if i < 58 else "legal"
            text = " ".join(rng.choice(WORDS[domain], size=rng.integers(20, 60))) + f" {k}-{i}."
            lines.append(json.dumps({"text": text, "meta": {"pile_set_name": names[domain]}}))
        lines.append(json.dumps({"text": "tiny domain " * 5, "meta": {"pile_set_name": "Ubuntu IRC"}}))
        path = root / "train" / f"{k:02d}.jsonl.zst"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(zstandard.ZstdCompressor().compress("\n".join(lines).encode()))
    return root


def test_a_pile_style_corpus_by_field_with_a_carved_valid_split(tmp_path, capsys):
    src = pile_style(tmp_path / "pile")
    args = [str(src), "--output", str(tmp_path / "out"), "--vocab-size", "300", "--domain-field", "meta.pile_set_name",
            "--rename", "Pile-CC=pile_cc", "Github=github", "--valid-fraction", "0.2", "--min-tokens", "100"]
    manifest = main(args)
    assert set(manifest.train_domains) == {"FreeLaw", "github", "pile_cc", "other"}  # Ubuntu IRC: tiny, merged
    assert set(manifest.valid_domains) <= set(manifest.train_domains) and "pile_cc" in manifest.valid_domains
    documents = {split: sum(s.documents for shards in manifest.shards[split].values() for s in shards)
                 for split in ("train", "valid")}
    assert documents["train"] + documents["valid"] == 2 * 61 and 0.1 < documents["valid"] / 122 < 0.3
    tokenizer, _ = load_tokenizer(tmp_path / "out" / "tokenizer")

    def texts_of(split: str) -> set[str]:
        out = set()
        for shards in manifest.shards[split].values():
            for shard in shards:
                ids = np.fromfile(tmp_path / "out" / shard.path, dtype=manifest.dtype)
                out |= {tokenizer.decode(d.tolist()) for d in np.split(ids, np.flatnonzero(ids == 0) + 1) if len(d)}
        return out

    assert not texts_of("train") & texts_of("valid")  # no document in both splits
    assert {Path(s.path).name for s in manifest.shards["train"]["github"]} == {"00--github.bin", "01--github.bin"}
    assert "2 tokenized" in capsys.readouterr().out
    main(args)  # nothing changed: nothing tokenized again
    assert "0 tokenized, 2 up to date" in capsys.readouterr().out
    main([*args[:-4], "--valid-fraction", "0.3"])  # another routing: prepared anew
    assert "2 tokenized" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="a valid/ folder and --valid-fraction"):
        (src / "valid").mkdir()
        prepare(src, tmp_path / "out", vocab_size=300, progress=False, routing=Routing("meta.pile_set_name",
                                                                                      valid_fraction=0.2))


def test_a_parquet_corpus_with_a_domain_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    for split, n in (("train", 40), ("valid", 8)):
        (tmp_path / "src" / split).mkdir(parents=True)
        docs = [texts(d, n, i) for i, d in enumerate(WORDS)]
        pq.write_table(pa.table({"text": [t for group in docs for t in group],
                                 "source": [d for d in WORDS for _ in range(n)]}),
                       tmp_path / "src" / split / "part-0.parquet")
    manifest = prepare(tmp_path / "src", tmp_path / "out", vocab_size=300, progress=False,
                       routing=Routing(domain_field="source"))
    assert set(manifest.train_domains) == set(WORDS) == set(manifest.valid_domains)
    assert all(manifest.shards["train"][d][0].documents == 40 for d in WORDS)
    with pytest.raises(ConfigError, match=r"part-0.parquet: no 'meta.kind' column; it has \['text', 'source'\]"):
        prepare(tmp_path / "src", tmp_path / "out2", vocab_size=300, progress=False,
                routing=Routing(domain_field="meta.kind"))


def test_count_estimates_the_prior_without_writing_shards(corpus, tmp_path, capsys):
    from regmix.search.synthesize import load_prior

    manifest = prepare(corpus, tmp_path / "out", vocab_size=300, progress=False)
    tokenizer = tmp_path / "out" / "tokenizer" / "tokenizer.json"
    assert main([str(corpus), "--output", str(tmp_path / "none"), "--tokenizer", str(tokenizer),
                 "--count", str(tmp_path / "prior.yaml")]) is None
    assert not (tmp_path / "none").exists()  # nothing prepared
    estimated, _ = load_prior(str(tmp_path / "prior.yaml"))
    # every document is in the sample here, so the estimate is the prepared count itself
    assert estimated.close_to(manifest.token_distribution(), atol=1e-6)
    assert "tokens (estimated)" in capsys.readouterr().out
    main([str(corpus), "--count", str(tmp_path / "chars.yaml")])  # no tokenizer: characters stand for tokens
    assert "characters" in (tmp_path / "chars.yaml").read_text().splitlines()[0]


def test_hugging_face_datasets_folders_as_the_corpus_or_in_place_of_files(corpus, tmp_path):
    datasets = pytest.importorskip("datasets")
    docs = {split: [(t, d) for i, d in enumerate(WORDS) for t in texts(d, n, i)] for split, n in (("train", 30),
                                                                                                   ("validation", 6))}
    whole = datasets.DatasetDict({split: datasets.Dataset.from_dict({"text": [t for t, _ in rows],
                                                                     "source": [d for _, d in rows]})
                                  for split, rows in docs.items()})
    whole.save_to_disk(str(tmp_path / "dict"))  # a DatasetDict: its train and validation splits
    manifest = prepare(tmp_path / "dict", tmp_path / "out", vocab_size=300, progress=False,
                       routing=Routing(domain_field="source"))
    assert set(manifest.train_domains) == set(WORDS) == set(manifest.valid_domains)
    assert all(sum(s.documents for s in manifest.shards["train"][d]) == 30 for d in WORDS)
    assert all(sum(s.documents for s in manifest.shards["valid"][d]) == 6 for d in WORDS)
    with pytest.raises(ConfigError, match="dict: a datasets folder's file names name no domain: give --domain-field"):
        prepare(tmp_path / "dict", tmp_path / "out2", vocab_size=300, progress=False)
    whole["train"].save_to_disk(str(tmp_path / "one"))  # a Dataset: the valid split is carved from it
    with pytest.raises(ConfigError, match="one: the datasets folder has no validation or valid split: carve one"):
        prepare(tmp_path / "one", tmp_path / "out2", vocab_size=300, progress=False, routing=Routing("source"))
    carved = prepare(tmp_path / "one", tmp_path / "out2", vocab_size=300, progress=False,
                     routing=Routing("source", valid_fraction=0.25))
    assert sum(s.documents for shards in carved.shards.values() for v in shards.values() for s in v) == 90

    # in RegMix's layout, a datasets folder named like a file stands for it
    reference = prepare(corpus, tmp_path / "plain", vocab_size=300, progress=False)
    (corpus / "train" / "code_0.jsonl").unlink()
    datasets.Dataset.from_dict({"text": texts("code", 40, 0)}).save_to_disk(str(corpus / "train" / "code_0"))
    other = prepare(corpus, tmp_path / "layout", str(tmp_path / "plain" / "tokenizer"), progress=False)
    assert other.tokens("train", "code") == reference.tokens("train", "code")
    assert other.shards["train"]["code"][0].path == "train/code_0-data-00000-of-00001.bin"
