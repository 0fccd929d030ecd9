"""Corpus preparation: shards and manifest, tokenization round trip, incremental re-runs, bad input."""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import WORDS, texts, write_jsonl

from regmix.cli import run_command
from regmix.core.files import ConfigError
from regmix.data.corpus import load_manifest, verify_corpus
from regmix.data.default_corpus import DOMAINS, build_default_corpus
from regmix.data.prepare import main, prepare, token_dtype
from regmix.data.tokenizer import load_tokenizer

SHARED_NEOX = Path(__file__).resolve().parents[2] / "shared" / "tokenizers" / "gpt-neox"

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


def test_a_domain_without_valid_data_is_named_by_prepare_and_synthesize(corpus, tmp_path, capsys):
    from regmix.search.synthesize import main as synthesize_main

    (corpus / "valid" / "legal.jsonl").unlink()
    manifest = main([str(corpus), "--output", str(tmp_path / "out"), "--vocab-size", "300"])
    assert "legal" in manifest.train_domains and "legal" not in manifest.valid_domains
    warned = capsys.readouterr().err
    assert "warning: no validation data for legal" in warned and "--valid-fraction" in warned
    synthesize_main(["--prior", str(tmp_path / "out"), "--num-configs", "4", "--output", str(tmp_path / "configs")])
    assert "warning: no validation data for legal" in capsys.readouterr().err
    synthesize_main(["--prior", str(tmp_path / "out"), "--num-configs", "4", "--output", str(tmp_path / "chosen"),
                     "--valid", "code"])  # the user chose the validation domains: nothing to warn about
    assert "warning" not in capsys.readouterr().err
