"""Proxy model presets: RegMix's TinyLlama family on litgpt's `Config` / `GPT`.

A preset fixes the architecture; the corpus fixes the vocabulary (its tokenizer's vocab_size, padded
to a multiple of 64 as in RegMix) and the run config fixes the context length (block_size).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # litgpt takes seconds to import: commands that only read configs never need it
    from litgpt import GPT, Config

PADDING_MULTIPLE = 64

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


def model_config(model_name: str, vocab_size: int, block_size: int) -> Config:
    """litgpt `Config` of a preset for a tokenizer's vocabulary and a context length."""
    from litgpt import Config

    if model_name not in PRESETS:
        raise ValueError(f"unknown model_name {model_name!r}; presets: {sorted(PRESETS)}")
    return Config(name=model_name, vocab_size=vocab_size, block_size=block_size,
                  **TINYLLAMA, **PRESETS[model_name])


def build_model(model_name: str, vocab_size: int, block_size: int) -> GPT:
    """A freshly initialised litgpt GPT of the named preset (seed torch first for reproducibility)."""
    from litgpt import GPT

    return GPT(model_config(model_name, vocab_size, block_size))


def non_embedding_parameters(model: GPT) -> int:
    """Parameter count without token embedding and output head: the size RegMix names models by."""
    skip = {id(model.transformer.wte.weight), id(model.lm_head.weight)}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def model_size(model_name: str, vocab_size: int, block_size: int) -> int:
    """Non-embedding parameters of a preset, counted on the meta device: a plan names the 1.1B large run's size
    without allocating its 4 GB of weights."""
    import torch

    with torch.device("meta"):
        return non_embedding_parameters(build_model(model_name, vocab_size, block_size))
