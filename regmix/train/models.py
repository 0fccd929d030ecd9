"""The model a run trains: one of our TinyLlama presets, any model litgpt knows by name, or a litgpt
model_config.yaml, as litgpt's `Config` / `GPT`.

The name fixes the architecture; the corpus fixes the vocabulary (its tokenizer's vocab_size, padded
to a multiple of 64 as in RegMix) and the run config fixes the context length (block_size).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from regmix.core.files import ConfigError, did_you_mean, read_yaml

if TYPE_CHECKING:  # litgpt takes seconds to import: commands that only read configs never need it
    from litgpt import GPT, Config

PADDING_MULTIPLE = 64
CONFIG_FILE_SUFFIXES = (".yaml", ".yml")  # a model_name ending so is a litgpt model_config.yaml, not a name

# Shared by the whole family: LLaMA blocks (RMSNorm, SwiGLU MLP, full rotary, no bias, serial residual).
TINYLLAMA: dict[str, Any] = dict(
    norm_class_name="RMSNorm",
    norm_eps=1e-5,
    mlp_class_name="LLaMAMLP",
    rotary_percentage=1.0,
    parallel_residual=False,
    bias=False,
    padding_multiple=PADDING_MULTIPLE,
)

# Sizes as published by RegMix (1M proxies, 60M proxies, 1.1B target model), plus a CPU demo size.
PRESETS: dict[str, dict[str, Any]] = {
    # CPU demo: ~0.1M non-embedding parameters, trains at demo scale in seconds on 2 cores.
    "tinyllama_demo": dict(n_layer=2, n_head=4, n_embd=64, intermediate_size=128),
    # RegMix's 1M proxy: ~1M non-embedding parameters.
    "tinyllama_1M": dict(n_layer=2, n_head=8, n_embd=256, intermediate_size=512),
    # RegMix's 60M proxy (same numbers as its lit-gpt config): ~59M non-embedding parameters.
    "tinyllama_60M": dict(n_layer=10, n_head=8, n_embd=768, intermediate_size=1536),
    # TinyLlama 1.1B, RegMix's target model: grouped-query attention with 4 key/value groups.
    "tinyllama_1_1b": dict(n_layer=22, n_head=32, n_query_groups=4, n_embd=2048, intermediate_size=5632),
}


def known_names() -> dict[str, str]:
    """Every model name by lower case: ours, litgpt's and their Hugging Face `org/name`. litgpt's lookup is
    case-sensitive, ours forgives `smollm2-135m`."""
    from litgpt.config import configs

    names = {name.lower(): name for name in PRESETS}
    names.update({c["name"].lower(): c["name"] for c in configs})
    names.update({f"{c['hf_config']['org']}/{c['hf_config']['name']}".lower(): c["name"] for c in configs
                  if c.get("hf_config")})
    return names


def model_config(model_name: str, vocab_size: int, block_size: int) -> Config:
    """litgpt `Config` of a preset, a litgpt model name or a litgpt model_config.yaml (a path ending .yaml).

    The vocabulary is always the corpus tokenizer's (vocab_size and padded_vocab_size overridden): a
    `pythia-14m` proxy has pythia's blocks but trains on our tokenizer, so its embedding and output layer
    are sized for our vocabulary, not pythia's 50k tokens. block_size is the run config's.
    """
    from litgpt import Config

    ours = dict(vocab_size=vocab_size, padded_vocab_size=None, padding_multiple=PADDING_MULTIPLE,
                block_size=block_size)
    if Path(model_name).suffix in CONFIG_FILE_SUFFIXES:
        fields = read_yaml(model_name)
        if not isinstance(fields, dict):
            raise ConfigError(model_name, "not a litgpt model config (a mapping of Config fields)")
        try:
            return Config(**{**fields, **ours})
        except (TypeError, ValueError, AssertionError) as exc:
            raise ConfigError(model_name, f"not a litgpt model config: {exc}") from None
    name = model_name if model_name in PRESETS else known_names().get(model_name.lower())
    if name is None:
        raise ValueError(f"unknown model_name {model_name!r}: it {unknown_model(model_name)}")
    if name in PRESETS:
        return Config(name=name, **{**TINYLLAMA, **PRESETS[name], **ours})
    return Config.from_name(name, **ours)


def unknown_model(model_name: str) -> str:
    """What a model_name must be, with the closest name to a misspelled one."""
    close = did_you_mean(model_name, set(known_names().values()))
    return (f"must be a model preset ({', '.join(PRESETS)}), a litgpt model name or a litgpt model_config.yaml"
            f"{close}; `regmix models` lists them")


def model_problem(model_name: str) -> str | None:
    """Why `model_name` names no model (None if it does), for a settings check that names the file it came
    from. A preset answers at once; a litgpt name or file imports litgpt (seconds, once)."""
    if model_name in PRESETS:
        return None
    if Path(model_name).suffix in CONFIG_FILE_SUFFIXES:
        try:
            model_config(model_name, PADDING_MULTIPLE, PADDING_MULTIPLE)
        except ValueError as exc:
            return f"names an unusable model file: {exc}"
        return None
    return None if model_name.lower() in known_names() else unknown_model(model_name)


def build_model(model_name: str, vocab_size: int, block_size: int) -> GPT:
    """A freshly initialised litgpt GPT of the named model (seed torch first for reproducibility)."""
    from litgpt import GPT

    return GPT(model_config(model_name, vocab_size, block_size))


def non_embedding_parameters(model: GPT) -> int:
    """Parameter count without token embedding and output head: the size RegMix names models by."""
    skip = {id(model.transformer.wte.weight), id(model.lm_head.weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def parameter_counts(config: Config) -> tuple[int, int]:
    """(non-embedding, total) parameters of the GPT `config` builds, without building it: one block of each
    kind on torch's meta device, times its count (the whole of a 235B mixture of experts takes seconds even
    on meta). Blocks differ only where the first `first_k_dense_replace` have a dense MLP."""
    import torch
    from litgpt.model import Block

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    with torch.device("meta"):
        dense = min(config.first_k_dense_replace or 0, config.n_layer)
        blocks = dense * count(Block(config, 0)) if dense else 0
        if dense < config.n_layer:
            blocks += (config.n_layer - dense) * count(Block(config, config.n_layer - 1))
        final_norm = count(config.norm_class(config.n_embd, eps=config.norm_eps))
    head_bias = config.padded_vocab_size if config.lm_head_bias else 0
    non_embedding = blocks + final_norm + head_bias
    return non_embedding, non_embedding + 2 * config.padded_vocab_size * config.n_embd


def model_size(model_name: str, vocab_size: int, block_size: int) -> int:
    """Non-embedding parameters of a named model, counted without allocating it: a plan names the 1.1B large run's
    size without its 4 GB of weights."""
    return parameter_counts(model_config(model_name, vocab_size, block_size))[0]
