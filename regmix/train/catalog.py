"""`regmix models`: the models a run may name (`model_name:`, --model-name, --large-model), with their sizes.

Our TinyLlama presets, then every model litgpt knows by name, with parameter counts for a vocabulary
(a run's is its corpus tokenizer's, whatever the model's own: regmix.train.models), counted without
building the weights. `stacked: no` marks a model that the multi-proxy trainer cannot stack (not
LLaMA-style); its proxies train one at a time. A litgpt model_config.yaml may be named by its path too.

    regmix models --filter pythia
    regmix models --vocab-size 50304 --filter smollm
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from regmix.cli import ArgumentParser, integer_at_least, run_command
from regmix.data.prepare import DEFAULT_VOCAB_SIZE

if TYPE_CHECKING:  # litgpt: imported after the flags, so --help starts fast
    from litgpt import Config


@dataclass(frozen=True)
class ModelEntry:
    """One row of the listing."""

    name: str
    family: str
    architecture: str
    layers: int
    width: int
    non_embedding: int
    total: int
    stacked: bool


def model_catalog(vocab_size: int, text: str = "") -> list[ModelEntry]:
    """Presets and litgpt's models whose name, family or architecture contains `text` (any case)."""
    from litgpt.config import configs

    from regmix.train.models import PRESETS, model_config, parameter_counts
    from regmix.train.stacked import stack_problem

    entries = []
    for name in [*PRESETS, *(c["name"] for c in configs)]:
        config = model_config(name, vocab_size, 2048)
        family = "regmix (TinyLlama)" if name in PRESETS else config.hf_config.get("org", "")
        architecture = architecture_of(config)
        if text.lower() not in f"{name} {family} {architecture}".lower():
            continue
        non_embedding, total = parameter_counts(config)
        entries.append(ModelEntry(name, family, architecture, config.n_layer, config.n_embd, non_embedding, total,
                                  stack_problem(config) is None))
    return entries


def architecture_of(config: Config) -> str:
    """litgpt's block classes of a config, as a model_config.yaml names them, and what sets it apart."""
    parts = [config.norm_class_name, config.mlp_class_name]
    if config.parallel_residual:
        parts.append("parallel residual")
    if config.n_expert:
        parts.append(f"{config.n_expert} experts")
    if config.n_query_groups != config.n_head:
        parts.append(f"{config.n_query_groups} kv groups")
    return ", ".join(parts)


def count(n: int) -> str:
    """A parameter count as models are named: 1.19M, 135M, 1.1B."""
    for scale, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def format_catalog(entries: Sequence[ModelEntry], vocab_size: int) -> str:
    header = ("name", "family", "architecture", "layers", "width", "non-embedding", "total", "stacked")
    rows = [header] + [(e.name, e.family, e.architecture, str(e.layers), str(e.width), count(e.non_embedding),
                        count(e.total), "yes" if e.stacked else "no") for e in entries]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.rjust(w) if 3 <= i <= 6 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             .rstrip() for row in rows]
    return "\n".join(lines + [f"{len(entries)} models; parameters with a vocabulary of {vocab_size} tokens "
                                                "(a run's is its corpus tokenizer's, padded to a multiple of 64)"])


def main(argv: Sequence[str] | None = None) -> list[ModelEntry]:
    p = ArgumentParser(prog="regmix models", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--filter", default="", metavar="TEXT",
                   help="only models whose name, family or architecture contains TEXT (any case)")
    p.add_argument("--vocab-size", type=integer_at_least(1), default=DEFAULT_VOCAB_SIZE,
                   help="the tokenizer's vocabulary the counts are for (default: %(default)s, the BPE that "
                        "`regmix prepare` trains)")
    args = p.parse_args(argv)
    entries = model_catalog(args.vocab_size, args.filter)
    if not entries:
        raise ValueError(f"--filter {args.filter!r}: no model's name, family or architecture contains it")
    print(format_catalog(entries, args.vocab_size))
    return entries


if __name__ == "__main__":
    raise SystemExit(run_command(main))
