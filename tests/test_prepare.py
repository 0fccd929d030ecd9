"""Corpus preparation: shards and manifest, tokenization round trip, incremental re-runs, bad input."""

import gzip
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from regmix.cli import run_command
from regmix.core.files import ConfigError
from regmix.data.corpus import load_manifest, verify_corpus
from regmix.data.default_corpus import DOMAINS, build_default_corpus
from regmix.data.prepare import main, prepare, token_dtype
from regmix.data.sources import Routing
from regmix.data.tokenizer import load_tokenizer

SHARED_NEOX = Path(__file__).resolve().parents[2] / "shared" / "tokenizers" / "gpt-neox"
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


def test_manifest_and_shards(corpus, tmp_path):
    manifest = prepare(corpus, tmp_path / "out", vocab_size=400, progress=False)
    assert manifest.train_domains == ("code", "legal", "prose")
    assert manifest.valid_domains == ("code", "legal", "prose")
    assert manifest.dtype == "uint16"
    assert [s.path for s in manifest.shards["train"]["code"]] == ["train/code_0.bin", "train/code_1.bin"]
    reloaded = load_manifest(tmp_path / "out")
    assert reloaded.to_json() == manifest.to_json()
    for split in ("train", "valid"):
        for domain in manifest.shards[split]:
            arrays = manifest.open_tokens(split, domain)
            assert sum(len(a) for a in arrays) == manifest.tokens(split, domain) > 0
            assert all(a.dtype == np.uint16 for a in arrays)
    share = manifest.token_distribution()
    assert share.weights.sum() == pytest.approx(1.0)
    assert share["code"] > share["legal"], "code has 70 documents, legal 40"
    assert manifest.shards["train"]["code"][1].documents == 30


def test_tokenization_round_trip(corpus, tmp_path):
    manifest = prepare(corpus, tmp_path / "out", vocab_size=400, progress=False)
    tokenizer, info = load_tokenizer(manifest.tokenizer.path)
    tokens = np.asarray(manifest.open_tokens("train", "prose")[0])
    documents = np.split(tokens, np.flatnonzero(tokens == info.eos_id) + 1)[:-1]
    originals = texts("prose", 40, list(WORDS).index("prose"))
    assert len(documents) == len(originals)
    for doc, original in zip(documents, originals):
        assert doc[-1] == info.eos_id
        assert tokenizer.decode(doc[:-1].tolist()) == original


def test_incremental_rerun(corpus, tmp_path):
    out = tmp_path / "out"
    prepare(corpus, out, vocab_size=400, progress=False)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.bin")}
    prepare(corpus, out, vocab_size=400, progress=False)
    assert {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.bin")} == stamps

    write_jsonl(corpus / "train" / "legal_0.jsonl", texts("legal", 60, 5))
    (corpus / "train" / "code_1.jsonl.gz").unlink()
    manifest = prepare(corpus, out, vocab_size=400, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "train").glob("*.bin")}
    assert after["prose_0.bin"] == stamps["prose_0.bin"] and after["code_0.bin"] == stamps["code_0.bin"]
    assert after["legal_0.bin"] != stamps["legal_0.bin"]
    assert "code_1.bin" not in after
    assert manifest.shards["train"]["legal"][0].documents == 60

    (out / "tokenizer" / "vocab_size").unlink()  # a crash between training the BPE and stamping it
    manifest_file = out / "manifest.json"
    manifest_file.write_text(manifest_file.read_text().replace('"format_version": ', '"format_version": -'))
    again = prepare(corpus, out, vocab_size=400, progress=False)  # an old-format manifest: prepared anew
    assert again.shards["train"]["legal"][0].documents == 60 and (out / "tokenizer" / "vocab_size").exists()


def test_given_tokenizer_by_path(corpus, tmp_path):
    first = prepare(corpus, tmp_path / "a", vocab_size=300, progress=False)
    second = prepare(corpus, tmp_path / "b", tokenizer=first.tokenizer.path, progress=False)
    assert second.tokenizer.sha256 == first.tokenizer.sha256
    assert not (tmp_path / "b" / "tokenizer").exists()
    assert second.tokens("train", "code") == first.tokens("train", "code")


@pytest.mark.skipif(not SHARED_NEOX.exists(), reason="../shared/tokenizers/gpt-neox is optional")
def test_gpt_neox_tokenizer(corpus, tmp_path):
    manifest = prepare(corpus, tmp_path / "out", tokenizer=SHARED_NEOX, progress=False)
    assert manifest.tokenizer.vocab_size == 50277 and manifest.tokenizer.eos_id == 0
    assert manifest.dtype == "uint16"


def test_dtype_widens_for_large_vocabularies():
    assert token_dtype(50277) == "uint16" and token_dtype(65536) == "uint16"
    assert token_dtype(65537) == "uint32" and token_dtype(151_936) == "uint32"


@pytest.mark.parametrize("line, problem", [
    ("{not json", "line 3 is not valid JSON"),
    ('{"content": "x"}', "line 3 has no 'text' field"),
    ('{"text": 5}', "line 3: 'text' is int, not a string"),
])
def test_bad_lines_name_file_and_line(corpus, tmp_path, line, problem):
    bad = corpus / "train" / "prose_0.jsonl"
    bad.write_text(json.dumps({"text": "fine"}) + "\n" + json.dumps({"text": "also fine"}) + "\n" + line + "\n")
    with pytest.raises(ConfigError) as err:
        prepare(corpus, tmp_path / "out", vocab_size=300, progress=False)
    assert str(err.value) == f"{bad}: {problem}"


def test_error_keeps_what_was_finished(corpus, tmp_path):
    (corpus / "valid" / "prose.jsonl").write_text("oops\n")
    with pytest.raises(ConfigError, match="prose.jsonl: line 1"):
        prepare(corpus, tmp_path / "out", vocab_size=300, progress=False)
    kept = load_manifest(tmp_path / "out")
    assert kept.tokens("train", "code") > 0 and kept.tokens("train", "prose") > 0


def test_layout_errors(tmp_path, corpus):
    with pytest.raises(ConfigError, match="missing: no such folder"):
        prepare(tmp_path / "missing", tmp_path / "out", progress=False)
    (tmp_path / "missing").mkdir()
    with pytest.raises(ConfigError, match="missing: no train/ folder"):
        prepare(tmp_path / "missing", tmp_path / "out", progress=False)
    (corpus / "train" / "nodigits.jsonl").write_text("")
    with pytest.raises(ConfigError, match=r"nodigits.jsonl: name must be <domain>_<k>.<format> \(.jsonl, "):
        prepare(corpus, tmp_path / "out", progress=False)


def test_cli_reports_one_clear_error(tmp_path, capsys):
    assert run_command(main, [str(tmp_path / "nowhere"), "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == f"error: python -m regmix.prepare: argument source: {tmp_path / 'nowhere'}: " \
                                      "no such folder (expected train/<domain>_<k>.<format> and " \
                                      "valid/<domain>.<format>, formats .jsonl, .jsonl.gz, .jsonl.zst, .json.gz, " \
                                      ".json.zst, .parquet, .arrow) " \
                                      "(see --help)\n"
    assert not (tmp_path / "out").exists()


def test_shard_checksums_are_recorded_verified_and_added_to_old_manifests(corpus, tmp_path, capsys):
    out = tmp_path / "out"
    manifest = prepare(corpus, out, vocab_size=300, progress=False)
    shards = manifest.all_shards()
    assert all(s.sha256 == hashlib.sha256((out / s.path).read_bytes()).hexdigest() for s in shards)
    assert run_command(main, ["--verify", "--output", str(out)]) == 0
    tokens = sum(s.tokens for s in shards)
    assert capsys.readouterr().out.strip() == \
        f"verified {len(shards)} shards ({tokens:,} tokens): sizes and token ids and sha256 checksums"

    old = json.loads((out / "manifest.json").read_text())  # as written before shards had checksums
    for split in old["shards"].values():
        for domain in split.values():
            for shard in domain:
                del shard["sha256"]
    (out / "manifest.json").write_text(json.dumps(old))
    assert run_command(main, ["--verify", "--output", str(out)]) == 0
    assert f"cannot verify the checksums of {len(shards)} shards" in capsys.readouterr().out
    stamps = {p.name: p.stat().st_mtime_ns for p in out.rglob("*.bin")}
    again = prepare(corpus, out, vocab_size=300, progress=False)  # records them, tokenizing nothing
    assert again.to_json() == manifest.to_json()
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*.bin")} == stamps


def test_prepare_again_replaces_a_damaged_shard(corpus, tmp_path):
    out = tmp_path / "out"
    manifest = prepare(corpus, out, vocab_size=300, progress=False)
    shard = out / "train" / "legal_0.bin"
    damaged = bytearray(shard.read_bytes())
    damaged[10] ^= 1  # same size: only the checksum tells
    shard.write_bytes(damaged)
    (out / "valid" / "code.bin").write_bytes(b"\0" * 6)
    again = prepare(corpus, out, vocab_size=300, progress=False)
    assert again.to_json() == manifest.to_json()
    assert verify_corpus(load_manifest(out)).checksums == len(manifest.all_shards())


@pytest.fixture(scope="module")
def default_raw(tmp_path_factory) -> Path:
    return build_default_corpus(tmp_path_factory.mktemp("default") / "raw")


def test_default_corpus_layout_and_determinism(default_raw, tmp_path):
    domains = {d.name for d in DOMAINS}
    assert len(domains) >= 5
    assert {p.name for p in (default_raw / "valid").iterdir()} == {f"{d}.jsonl" for d in domains}
    assert {p.name.rsplit("_", 1)[0] for p in (default_raw / "train").iterdir()} == domains
    size = sum(p.stat().st_size for p in default_raw.rglob("*.jsonl"))
    assert 3e6 < size < 40e6
    again = build_default_corpus(tmp_path / "again")
    for path in default_raw.rglob("*.jsonl"):
        assert path.read_bytes() == (again / path.relative_to(default_raw)).read_bytes()
    other_seed = build_default_corpus(tmp_path / "other", seed=1)
    assert (other_seed / "valid" / "python_code.jsonl").read_bytes() != \
           (default_raw / "valid" / "python_code.jsonl").read_bytes()


def test_default_corpus_prepares(default_raw, tmp_path):
    os.environ["RAYON_NUM_THREADS"] = "2"
    manifest = prepare(default_raw, tmp_path / "out", vocab_size=2048, progress=False)
    assert len(manifest.train_domains) >= 5
    assert all(manifest.tokens("valid", d) > 10_000 for d in manifest.valid_domains)
    assert manifest.tokens("train", "python_code") > 500_000


def test_new_vocab_size_retrains_the_tokenizer(corpus, tmp_path):
    first = prepare(corpus, tmp_path / "out", vocab_size=300, progress=False)
    same = prepare(corpus, tmp_path / "out", vocab_size=300, progress=False)
    assert same.tokenizer.sha256 == first.tokenizer.sha256
    bigger = prepare(corpus, tmp_path / "out", vocab_size=400, progress=False)
    assert bigger.tokenizer.vocab_size == 400 != first.tokenizer.vocab_size
    assert bigger.tokens("train", "code") < first.tokens("train", "code")


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
