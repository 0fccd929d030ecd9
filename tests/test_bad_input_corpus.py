"""Bad inputs to `python -m regmix.prepare` and a damaged prepared corpus opened by `python -m regmix.train_proxy`.

Every case: exit code 2, one stderr line naming the file or flag, no traceback, and the prepared corpus,
its source and the run folder left as they were (a damaged corpus is refused before any run folder exists).
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from conftest import TINY_VOCAB
from test_bad_input import check_bad_input

from regmix import train_proxy
from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.data.corpus import load_manifest, verify_corpus
from regmix.data.prepare import main as prepare_main
from regmix.data.prepare import prepare
from regmix.settings.run_config import RunConfig, save_run_config
from regmix.settings.training import TrainingSettings

WORDS = "the a river mountain def return import class hereby pursuant license party".split()


def write_jsonl(path: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"text": " ".join(rng.choice(WORDS, size=30))}) + "\n" for _ in range(count)))


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> tuple[Path, Path]:
    """A few KB of source jsonl (two domains) and its prepared corpus (vocabulary 300), made once."""
    root = tmp_path_factory.mktemp("prepared")
    for seed, domain in enumerate(("code", "prose")):
        write_jsonl(root / "src" / "train" / f"{domain}_0.jsonl", 20, seed)
        write_jsonl(root / "src" / "valid" / f"{domain}.jsonl", 4, 10 + seed)
    prepare(root / "src", root / "out", vocab_size=300, progress=False)
    return root / "src", root / "out"


@pytest.fixture
def copies(prepared, tmp_path) -> tuple[Path, Path]:
    """This test's own copy of the source and the prepared corpus, to damage."""
    return tuple(Path(shutil.copytree(p, tmp_path / p.name)) for p in prepared)


def append(text: str, relative: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        with (root / relative).open("a") as fh:
            fh.write(text)
    return damage


def replace_file(relative: str, data: bytes | None) -> Callable[[Path], None]:
    """Write `data` to a file (None: delete it, a folder: delete the folder)."""
    def damage(root: Path) -> None:
        path = root / relative
        if data is not None:
            path.write_bytes(data)
        elif path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    return damage


def become_folder(relative: str) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        (root / relative).unlink()
        (root / relative).mkdir()
    return damage


def flip_bit(relative: str) -> Callable[[Path], None]:
    """Flip the low bit of a token mid-shard: same size, a token id still in the vocabulary."""
    def damage(root: Path) -> None:
        data = bytearray((root / relative).read_bytes())
        data[len(data) // 4 * 2] ^= 1  # an even offset: the low byte of a little-endian uint16
        (root / relative).write_bytes(data)
    return damage


def poke_token(relative: str, token: int) -> Callable[[Path], None]:
    """Overwrite the shard's 6th token (same size: only the token ids or the checksum can tell)."""
    def damage(root: Path) -> None:
        tokens = np.fromfile(root / relative, dtype=np.uint16)
        tokens[5] = token
        tokens.tofile(root / relative)
    return damage


def edit_manifest(change: Callable[[dict], Any]) -> Callable[[Path], None]:
    def damage(root: Path) -> None:
        data = json.loads((root / "manifest.json").read_text())
        change(data)
        (root / "manifest.json").write_text(json.dumps(data))
    return damage


def first_shard(data: dict) -> dict:
    return data["shards"]["train"]["alpha"][0]


PREPARE = ["{src}", "--output", "{out}", "--vocab-size", "300"]
# (id, damage to the source, argv of prepare, what the error names); {src}, {out}, {tmp} are the copies
PREPARE_CASES = [
    ("vocab-size-zero", None, PREPARE + ["--vocab-size", "0"], "--vocab-size"),
    ("vocab-size-negative", None, PREPARE + ["--vocab-size", "-5"], "--vocab-size"),
    ("vocab-size-below-the-byte-alphabet", None, PREPARE + ["--vocab-size", "256"], "--vocab-size"),
    ("vocab-size-not-a-number", None, PREPARE + ["--vocab-size", "lots"], "--vocab-size"),
    ("workers-negative", None, PREPARE + ["--workers", "-2"], "--workers"),
    ("output-is-a-file", append("x", "notes.txt"), ["{src}", "--output", "{src}/notes.txt"], "{src}/notes.txt"),
    ("source-missing", None, ["{tmp}/nowhere", "--output", "{out}"], "{tmp}/nowhere: no such folder"),
    ("source-is-a-file", append("x", "notes.txt"), ["{src}/notes.txt", "--output", "{out}"], "{src}/notes.txt"),
    ("no-train-folder", replace_file("train", None), PREPARE, "{src}: no train/ folder"),
    ("no-valid-folder", replace_file("valid", None), PREPARE, "{src}: no valid/ folder"),
    ("no-jsonl-files", lambda src: [p.rename(p.with_suffix(".txt")) for p in (src / "train").iterdir()], PREPARE,
     "{src}/train: no <domain>_<k>.<format> files: it holds .txt files (2), which prepare does not read; "
     "supported: .jsonl, "),
    ("misnamed-train-file", append("", "train/nodigits.jsonl"), PREPARE, "{src}/train/nodigits.jsonl"),
    ("line-not-json", append("{oops\n", "train/prose_0.jsonl"), PREPARE,
     "{src}/train/prose_0.jsonl: line 21 is not valid JSON"),
    ("line-without-text", append('{"content": "x"}\n', "valid/code.jsonl"), PREPARE,
     "{src}/valid/code.jsonl: line 5 has no 'text' field"),
    ("text-not-a-string", append('{"text": ["x"]}\n', "train/code_0.jsonl"), PREPARE,
     "{src}/train/code_0.jsonl: line 21: 'text' is list"),
    ("empty-domain", append('\n{"text": ""}\n', "train/legal_0.jsonl"), PREPARE,
     "{src}/train/legal_0.jsonl: no documents"),
    ("tokenizer-missing", None, PREPARE + ["--tokenizer", "{tmp}/tok.json"], "{tmp}/tok.json"),
    ("verify-with-a-source", None, ["--verify", "{src}", "--output", "{out}"], "--verify"),
    ("verify-without-a-corpus", None, ["--verify", "--output", "{src}"], "{src}/manifest.json"),
]
# (id, damage to the prepared corpus, what the error names), through prepare --verify
VERIFY_CASES = [
    ("flipped-bit", flip_bit("train/prose_0.bin"), "{out}/train/prose_0.bin: sha256"),
    ("token-beyond-the-vocabulary", poke_token("valid/code.bin", 300), "{out}/valid/code.bin: token id 300"),
]
# (id, damage to the tiny corpus, what the error names), through train_proxy
CORPUS_CASES = [
    ("shard-missing", replace_file("train/alpha_1.bin", None), "{corpus}/train/alpha_1.bin: missing"),
    ("shard-truncated", replace_file("train/beta_0.bin", b"\0" * 1000),
     "{corpus}/train/beta_0.bin: 1000 bytes, the manifest says 4000 tokens (8000 bytes): truncated"),
    ("shard-odd-byte-count", append("x", "valid/gamma_0.bin"), "{corpus}/valid/gamma_0.bin: 1401 bytes is not"),
    ("shard-grown", append("xy", "train/delta_0.bin"), "{corpus}/train/delta_0.bin: 4002 bytes"),
    ("shard-a-folder", become_folder("train/delta_0.bin"), "{corpus}/train/delta_0.bin: not a file"),
    ("token-beyond-the-vocabulary", poke_token("train/gamma_1.bin", TINY_VOCAB), "{corpus}/train/gamma_1.bin"),
    ("manifest-not-json", replace_file("manifest.json", b'{"format_version": 1,'), "{corpus}/manifest.json"),
    ("manifest-missing", replace_file("manifest.json", None), "{corpus}/manifest.json: no prepared corpus"),
    ("manifest-old-format", edit_manifest(lambda d: d.update(format_version=0)), "{corpus}/manifest.json"),
    ("manifest-shard-outside-the-folder", edit_manifest(lambda d: first_shard(d).update(path="../../etc/x.bin")),
     "{corpus}/manifest.json: malformed manifest (shard path '../../etc/x.bin'"),
    ("manifest-negative-tokens", edit_manifest(lambda d: first_shard(d).update(tokens=-3)),
     "{corpus}/manifest.json"),
    ("manifest-unknown-dtype", edit_manifest(lambda d: d.update(dtype="float32")), "{corpus}/manifest.json"),
    ("manifest-vocabulary-too-big-for-the-dtype",
     edit_manifest(lambda d: d["tokenizer"].update(vocab_size=70000)), "{corpus}/manifest.json"),
]


@pytest.mark.parametrize("damage, argv, names", [c[1:] for c in PREPARE_CASES], ids=[c[0] for c in PREPARE_CASES])
def test_prepare_refuses(copies, tmp_path, capsys, damage, argv, names):
    src, out = copies
    if damage:
        damage(src)
    where = {"src": src, "out": out, "tmp": tmp_path}
    check_bad_input(prepare_main, [a.format(**where) for a in argv], capsys, names=[names.format(**where)],
                    watched=[src, out])


@pytest.mark.parametrize("damage, names", [c[1:] for c in VERIFY_CASES], ids=[c[0] for c in VERIFY_CASES])
def test_prepare_verify_refuses(copies, capsys, damage, names):
    src, out = copies
    damage(out)
    check_bad_input(prepare_main, ["--verify", "--output", out], capsys, names=[names.format(out=out)],
                    watched=[src, out])


@pytest.mark.parametrize("damage, names", [c[1:] for c in CORPUS_CASES], ids=[c[0] for c in CORPUS_CASES])
def test_train_proxy_refuses_a_damaged_corpus(tiny_corpus, tmp_path, capsys, damage, names):
    corpus = Path(shutil.copytree(tiny_corpus.root, tmp_path / "corpus"))
    damage(corpus)
    training = TrainingSettings(model_name="tinyllama_demo", global_batch_size=4, micro_batch_size=4, max_step=2,
                                warmup_steps=0, eval_step_interval=2, block_size=16, eval_tokens=64)
    save_run_config(RunConfig("n1", Mixture.from_dict({"alpha": 0.5, "beta": 0.5}), ("alpha",), training),
                    tmp_path / "configs" / "n1.yaml")
    runs = tmp_path / "runs"
    check_bad_input(train_proxy.main, ["--config", tmp_path / "configs", "--corpus", corpus, "--output", runs,
                                       "--wandb", "off", "--no-progress", "--device", "cpu"],
                    capsys, names=[names.format(corpus=corpus)], watched=[corpus, tmp_path / "configs"])
    assert not runs.exists()


def test_verify_corpus_finds_a_flipped_byte(copies):
    _, out = copies
    manifest = load_manifest(out)
    assert verify_corpus(manifest).checksums == len(manifest.all_shards())
    flip_bit("valid/prose.bin")(out)
    load_manifest(out)  # the size and token ids still hold: only the checksum can tell
    shard = re.escape(str(out / "valid" / "prose.bin"))
    with pytest.raises(ConfigError, match=f"^{shard}: sha256 .* is not the manifest's .* changed after prepare"):
        verify_corpus(manifest)


def test_disk_full_while_writing_a_shard_leaves_the_corpus_as_it_was(copies, capsys, monkeypatch):
    src, out = copies
    write_jsonl(src / "train" / "prose_0.jsonl", 25, 99)  # changed: tokenized again

    def disk_full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", disk_full)
    line = check_bad_input(prepare_main, [src, "--output", out, "--vocab-size", "300"], capsys,
                           names=[f"{out / 'train' / 'prose_0.bin'}: {os.strerror(errno.ENOSPC)}"], code=1,
                           watched=[out])
    assert "disk is full" in line
    monkeypatch.undo()
    manifest = prepare(src, out, vocab_size=300, progress=False)  # space freed: the same command finishes
    assert manifest.shards["train"]["prose"][0].documents == 25 and verify_corpus(manifest).checksums == 4
