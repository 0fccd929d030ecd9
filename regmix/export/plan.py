"""What every export needs from a mixture config: its phases, the corpus behind it, and the conversions.

A regmix mixture is a share of training *tokens* per domain (the sampler draws fixed-length sequences by
weight). Trainers weigh other units, so each target names the unit one of its samples is:
- "tokens": its weights are token shares already (olmo-core's target ratios, Olmix);
- "sequences": it samples fixed-length packed sequences (Megatron-LM's GPT datasets, litgpt's litdata
  token chunks, Levanter's caches): a sequence weight is a token weight;
- "documents": it samples whole documents (`interleave_datasets`, MosaicML streams of text): a domain of
  long documents needs fewer draws for the same tokens, so its weight is divided by its mean tokens per
  document (from the prepared corpus's manifest) and normalized.

The token budget (the target run's training tokens: `--tokens`, else the config's max_step x
global_batch_size x block_size with the large run's settings as defaults, as `pretrain` reads them) says how
many times each domain is repeated (its epochs), which targets with repetition settings are given.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from regmix.core.files import ConfigError, write_atomic
from regmix.core.mixture import Mixture
from regmix.data.corpus import CorpusManifest
from regmix.settings.run_config import RunConfig

Unit = Literal["tokens", "sequences", "documents"]
UNITS: tuple[Unit, ...] = ("tokens", "sequences", "documents")


@dataclass(frozen=True)
class Phase:
    """The mixture sampled from `start_step` until `end_step` (a static config is one phase)."""

    start_step: int
    end_step: int
    mixture: Mixture

    @property
    def steps(self) -> int:
        return self.end_step - self.start_step


@dataclass
class ExportPlan:
    """A mixture config made ready for a trainer: phases, data paths, budget, and the notes of what was converted.

    `paths` maps a domain to where the target's own copy of its data lies: a template with `{domain}` and
    `{split}` (`/data/pile/{split}/{domain}`); without one, exports that can read regmix's shards point at them.
    """

    name: str
    config: RunConfig
    source: str | os.PathLike
    corpus: CorpusManifest | None = None
    paths: str | None = None
    budget_tokens: int | None = None
    max_repetition: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def phases(self) -> tuple[Phase, ...]:
        if not self.config.stages:
            return (Phase(0, self.config.training.max_step, self.config.train),)
        starts = [0] + [s.until_step for s in self.config.stages[:-1]]
        return tuple(Phase(a, s.until_step, s.mixture) for a, s in zip(starts, self.config.stages))

    @property
    def domains(self) -> tuple[str, ...]:
        """Every domain with weight in some phase, in the config's order."""
        return tuple(dict.fromkeys(d for p in self.phases for d in p.mixture.active()))

    @property
    def tokens_per_step(self) -> int:
        t = self.config.training
        return t.global_batch_size * t.block_size

    def note(self, text: str) -> None:
        self.notes.append(text)

    def path(self, domain: str, split: str = "train") -> str:
        """Where the target reads `domain` of `split`: the --paths template filled in."""
        if self.paths is None:
            raise ConfigError(self.source, "this target reads its own copy of the data: give --paths with "
                                           "{domain} (and {split}), e.g. --paths '/data/{split}/{domain}'")
        return self.paths.format(domain=domain, split=split)

    def weights(self, mixture: Mixture, unit: Unit) -> dict[str, float]:
        """The target's weight per active domain for samples of `unit` (normalized)."""
        active = mixture.active()
        w = np.array([mixture[d] for d in active])
        if unit == "documents":
            w = w / np.array([self.tokens_per_document(d) for d in active])
        return {d: float(x) for d, x in zip(active, w / w.sum())}

    def token_files(self, domain: str) -> list[str]:
        """Raw token files of `domain` (OLMo-core's format, which regmix's shards are), or the --paths template."""
        if self.paths is None and self.corpus is not None:
            return [str(self.corpus.check_size(s).resolve()) for s in self.corpus.shards["train"][domain] if s.tokens]
        return [self.path(domain)]

    def tokens_per_document(self, domain: str) -> float:
        if self.corpus is None:
            raise ConfigError(self.source, "this target samples whole documents, so token shares become document "
                                           "shares by each domain's tokens per document: give --corpus (the "
                                           "prepared corpus), or --samples sequences if its samples are packed "
                                           "token sequences")
        shards = self.corpus.shards["train"].get(domain, [])
        documents = sum(s.documents for s in shards)
        if not documents:
            raise ConfigError(self.source, f"domain {domain!r} has no documents in the corpus {self.corpus.root}")
        return sum(s.tokens for s in shards) / documents

    def epochs(self) -> dict[str, float] | None:
        """Times each domain's training tokens are read over the whole run (None without a budget or a corpus):
        the run's mixture is the phases' step-weighted mean, `config.train`."""
        if self.budget_tokens is None or self.corpus is None:
            return None
        from regmix.regression.optimum import epochs  # SciPy and scikit-learn: not for --help

        tokens = {d: self.corpus.tokens("train", d) for d in self.config.train.active()}
        active = {d: w for d, w in self.config.train.to_dict().items() if w > 0}
        return epochs(active, tokens, self.budget_tokens)

    def repetition_cap(self) -> float | None:
        """The repetition a target should allow: --max-repetition, else the most any domain needs (rounded up
        to a tenth, at least 1); None when unknown."""
        if self.max_repetition is not None:
            return self.max_repetition
        epochs = self.epochs()
        return None if epochs is None else max(1.0, math.ceil(max(epochs.values()) * 10) / 10)

    def describe(self) -> list[str]:
        """The conversions every target shares: the budget and each domain's epochs, over the cap where it is."""
        lines = []
        if self.budget_tokens is not None:
            lines.append(f"token budget {self.budget_tokens:,} ({self.config.training.max_step:,} steps of "
                         f"{self.tokens_per_step:,} tokens)")
        epochs = self.epochs()
        if epochs is not None:
            cap = self.max_repetition
            over = {d: e for d, e in epochs.items() if cap is not None and e > cap}
            lines.append("epochs per domain: " + ", ".join(f"{d} {e:.2f}" for d, e in epochs.items()))
            if over:
                lines.append(f"over --max-repetition {cap:g}: {', '.join(sorted(over))}; the target caps them, so "
                             "their realized shares fall below the mixture's (choose the mixture with that cap)")
        elif self.corpus is None:
            lines.append("no --corpus: epochs per domain unknown (repetition not checked)")
        return lines


def write_text(path: Path, text: str, written: list[Path]) -> None:
    """Write one export file (whole, creating its folder) and record it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)
    written.append(path)


def phase_suffix(plan: ExportPlan, phase: Phase) -> str:
    """`""` for a static mixture, `_phase<k>` for each phase of a schedule (targets without phases)."""
    if len(plan.phases) == 1:
        return ""
    return f"_phase{plan.phases.index(phase) + 1}"


def unit_note(unit: Unit) -> str:
    """What the weights are per item, for the targets that draw items (documents or packed sequences)."""
    if unit == "documents":
        return "weights per document: each domain's token share divided by its tokens per document, normalized"
    return "weights per fixed-length sequence: the token shares unchanged"


def one_file_per_phase(plan: ExportPlan, target: str) -> None:
    if len(plan.phases) > 1:
        plan.note(f"{target} has no phases: one file per phase (_phase1, _phase2, ...), each trained to its end step "
                  "and resumed from the last checkpoint with the next")


def cap_source(plan: ExportPlan) -> str:
    """Where a target's repetition setting came from, for its note."""
    if plan.max_repetition is not None:
        return "--max-repetition"
    if plan.epochs() is None:
        return "epochs unknown without --corpus: give --max-repetition if a domain repeats"
    return "the most any domain needs under the budget; --max-repetition sets it"
