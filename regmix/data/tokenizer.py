"""Tokenizers: any Hugging Face `tokenizers` tokenizer.json by path, or a byte-level BPE trained here.

A trained tokenizer takes seconds on a few MB of text, so a corpus without a tokenizer of its own
still gets a real one. Its identity (a hash of tokenizer.json) goes into the manifest, so shards
made with another tokenizer are never mixed up with these.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from regmix.core.files import ConfigError, replace_atomic
from regmix.data.corpus import TokenizerInfo

EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|eos|>", "<|end_of_text|>")
TOKENIZER_NAME = "tokenizer.json"


def _eos_token(path: Path, tokenizer: Tokenizer) -> str:
    config = path.parent / "tokenizer_config.json"
    if config.exists():
        try:
            eos = json.loads(config.read_text(encoding="utf-8")).get("eos_token")
        except ValueError:
            eos = None
        if isinstance(eos, dict):
            eos = eos.get("content")
        if isinstance(eos, str) and tokenizer.token_to_id(eos) is not None:
            return eos
    for token in EOS_CANDIDATES:
        if tokenizer.token_to_id(token) is not None:
            return token
    raise ConfigError(path, f"no end-of-text token found (looked for {EOS_CANDIDATES} and "
                            "tokenizer_config.json's eos_token)")


def load_tokenizer(path: str | os.PathLike) -> tuple[Tokenizer, TokenizerInfo]:
    """Load tokenizer.json (or the folder holding it) from a local path."""
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_NAME
    try:
        raw = path.read_bytes()
        tokenizer = Tokenizer.from_str(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(path, "tokenizer file not found") from None
    except Exception as exc:
        raise ConfigError(path, f"not a Hugging Face tokenizers file: {exc}") from None
    eos = _eos_token(path, tokenizer)
    info = TokenizerInfo(name=path.parent.name, sha256=hashlib.sha256(raw).hexdigest(),
                         vocab_size=tokenizer.get_vocab_size(with_added_tokens=True),
                         eos_id=tokenizer.token_to_id(eos), path=str(path.resolve()))
    return tokenizer, info


def train_bpe(texts: Iterable[str], vocab_size: int, output: str | os.PathLike) -> Path:
    """Train a byte-level BPE (GPT-2/NeoX style) with `<|endoftext|>` and save it as tokenizer.json."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    path = Path(output) / TOKENIZER_NAME
    replace_atomic(path, lambda tmp: tokenizer.save(str(tmp)))
    return path
