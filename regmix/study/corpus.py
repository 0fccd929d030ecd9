"""An experiment's corpus: where it comes from, preparing it, and the experiment's objective on it.

`corpus_location` decides once, for the pipeline (`prepare_experiment_corpus`: build, tokenize) and for
`regmix validate` (which only reads), whether the corpus is a prepared manifest used as it is, the
embedded default corpus to build, or text to tokenize incrementally.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from regmix.core.files import ConfigError
from regmix.core.objective import Objective
from regmix.data.corpus import MANIFEST_NAME, CorpusManifest, load_manifest
from regmix.data.default_corpus import build_default_corpus
from regmix.data.prepare import prepare
from regmix.study.experiment import Experiment
from regmix.study.sections import section_spelling


@dataclass(frozen=True)
class CorpusLocation:
    """Where an experiment's corpus comes from, decided in one place for the pipeline and for `regmix validate`:
    `kind` is `prepared` (a manifest used as it is), `default` (the embedded corpus, built into `source` first) or
    `source` (text in `source`, tokenized incrementally into `prepared`)."""

    kind: str
    prepared: Path
    source: Path


def corpus_location(experiment: Experiment) -> CorpusLocation:
    """The experiment's corpus, without reading or writing any of it."""
    corpus = experiment.corpus
    prepared = Path(corpus.prepared)
    if prepared.exists() and not prepared.is_dir():
        raise ConfigError(experiment.source, f"'corpus.prepared' is {prepared}, a file; it names a folder")
    source = Path(corpus.source) if corpus.source else prepared / "raw"
    if corpus.source is None and (prepared / MANIFEST_NAME).exists() and not (source / "train").is_dir():
        # a corpus prepared from other text: use it as it is, never replace it with the embedded one
        return CorpusLocation("prepared", prepared, source)
    if corpus.source is None and not (source / "train").is_dir():
        return CorpusLocation("default", prepared, source)
    return CorpusLocation("source", prepared, source)


def prepare_experiment_corpus(experiment: Experiment, report: Callable[[str], None] = print
                              ) -> tuple[CorpusManifest, Objective]:
    """Build the default corpus if needed, tokenize (incrementally); the manifest and the checked objective."""
    corpus, where = experiment.corpus, corpus_location(experiment)
    if where.kind == "prepared":
        report(f"[prepare] using the prepared corpus in {where.prepared} (no 'corpus.source': nothing is "
               "re-tokenized)")
        manifest = load_manifest(where.prepared)
        return manifest, _checked_corpus(experiment, manifest, Path(manifest.source), report)
    if where.kind == "default":
        report("[corpus] building the embedded default corpus")
        build_default_corpus(where.source)
    report("[prepare] tokenizing (incremental)")
    manifest = prepare(where.source, where.prepared, corpus.tokenizer, corpus.vocab_size, progress=True,
                       routing=corpus.routing(), min_tokens=corpus.min_tokens)
    return manifest, _checked_corpus(experiment, manifest, where.source, report)


def corpus_objective(experiment: Experiment, valid: Sequence[str], empty: Sequence[str], train_domains: int
                     ) -> Objective:
    """The experiment's objective on a corpus's valid domains (`empty`: those without tokens), its synthesis settings
    checked against the number of training domains: after preparing, and before it in `regmix validate`."""
    objective = Objective.for_domains(experiment.target, valid, empty, experiment.origin("target"))
    experiment.synthesis.validate(experiment.source, section_spelling("synthesis"), train_domains)
    return objective


def _checked_corpus(experiment: Experiment, manifest: CorpusManifest, source: Path,
                    report: Callable[[str], None]) -> Objective:
    """The experiment's objective on this corpus, its synthesis settings checked against it, empty domains said."""
    objective = corpus_objective(experiment, list(manifest.shards["valid"]), manifest.empty_domains("valid"),
                                 len(manifest.train_domains))
    for split, consequence in (("train", "they get weight 0"), ("valid", "they are not validated on")):
        if manifest.empty_domains(split):
            report(f"[prepare] warning: no {split} tokens for {list(manifest.empty_domains(split))} in "
                   f"{source / split} (empty files?): {consequence}")
    return objective
