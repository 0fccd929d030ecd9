"""`regmix validate EXPERIMENT.yaml`: every problem of an experiment before anything trains, or what would train.

The experiment is read as `regmix pipeline` reads it (regmix.study.experiment.load_experiment, keeping every
problem of the file, not only the first); its corpus is found as the pipeline finds it (regmix.study.corpus) but only
read: the prepared manifest, and the source files' names for a corpus not yet (or not freshly) prepared. The
objective is checked against the valid domains, and on the corpus as last prepared the search space, reuse and
each method's settings (regmix.study.study.study_on, regmix.study.runner.study_proposer). Each problem is one
line naming its file (exit code 1); with none, the plan: per method the proxy runs it trains (with the anchors
and the verification the study adds), their tokens, the proxy model, the large run, and the time on this
machine from two timed optimizer steps (regmix.train.estimate). Nothing is written. `--dry-run` on the commands
that run studies (pipeline, compare, search, online, reuse) prints the same.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from regmix.cli import ArgumentParser, run_command
from regmix.core.files import ConfigError, noting
from regmix.search import PROPOSERS

if TYPE_CHECKING:
    from regmix.data.corpus import CorpusManifest
    from regmix.study.experiment import Experiment


@dataclass
class CorpusView:
    """What is known of an experiment's corpus without preparing it: its manifest as last prepared (if it still
    fits the source files) and the domains (None where only preparing tells them: a domain field)."""

    said: str
    manifest: CorpusManifest | None
    train: Sequence[str] | None
    valid: Sequence[str] | None
    empty: Sequence[str]
    vocab_size: int


def validate(experiment: Experiment, methods: Sequence[str], problems: Sequence[ConfigError] = (),
             timed: bool = True, domains: Sequence[str] | None = None, report: Callable[[str], None] = print) -> int:
    """Check `experiment` for `methods` (with `problems` already found reading it; `domains`: a subset trained, as
    `regmix online --domains`); print every problem and return 1, or print what would train and return 0. Reads,
    never writes."""
    from regmix.study.corpus import corpus_objective
    from regmix.study.imports import imported_runs
    from regmix.study.runner import study_proposer
    from regmix.study.study import study_on

    found = list(problems)
    corpus = read_corpus(experiment, found)
    objective = None
    if corpus.valid is not None:
        with noting(found, experiment.source):
            objective = corpus_objective(experiment, corpus.valid, corpus.empty, len(corpus.train or ()))
    started = 0
    if objective is not None and corpus.manifest is not None:
        for method in methods:
            with noting(found, experiment.source):
                study = study_on(experiment.as_method(method), corpus.manifest, objective, method,
                                 domains, report=lambda line: None)
                study_proposer(study)
                if experiment.search.start_from:
                    started = len(imported_runs(experiment.search.start_from, study.space.domains, objective,
                                                experiment.proxy))
    if found:
        for problem in found:
            print(f"error: {problem}", file=sys.stderr)
        report(f"{experiment.source}: {len(found)} problem{'s' * (len(found) > 1)}; nothing was trained")
        return 1
    report(f"{experiment.source}: no problems found")
    report(f"corpus: {corpus.said}")
    if objective is not None:
        report(f"objective: {objective.describe()}")
    for line in plan(experiment, methods, corpus.vocab_size, started, timed):
        report(line)
    report("nothing was trained or written")
    return 0


def read_corpus(experiment: Experiment, problems: list[ConfigError]) -> CorpusView:
    """The corpus as the pipeline would find it (corpus_location), read only; its problems go to `problems`."""
    from regmix.data.corpus import MANIFEST_NAME, load_manifest
    from regmix.data.default_corpus import DOMAINS
    from regmix.data.prepare import check_vocab_size
    from regmix.data.sources import find_sources
    from regmix.data.tokenizer import load_tokenizer
    from regmix.study.corpus import corpus_location

    settings, source = experiment.corpus, experiment.source
    vocab_size = settings.vocab_size
    try:
        where = corpus_location(experiment)
    except ConfigError as exc:
        problems.append(exc)
        return CorpusView("?", None, None, None, (), vocab_size)
    names: dict[str, list[str]] | None = None
    with noting(problems, source):
        if where.kind == "default":
            said = f"the embedded default corpus, built into {where.source} and prepared into {where.prepared} first"
            names = {"train": [d.name for d in DOMAINS], "valid": [d.name for d in DOMAINS]}
        elif where.kind == "source":
            said = f"{where.source}, prepared into {where.prepared} first (incrementally)"
            if settings.domain_field is None:  # the files' names are the domains
                found = find_sources(where.source, settings.routing())
                names = {split: list(found[split]) for split in found}
        else:
            said = f"{where.prepared} as prepared (no 'corpus.source')"
    if names is not None:
        names = {split: sorted({settings.rename.get(d, d) for d in domains}) for split, domains in names.items()}
        if settings.valid_fraction > 0:
            names["valid"] = names["train"]
    with noting(problems, source):
        if settings.tokenizer:
            vocab_size = load_tokenizer(settings.tokenizer)[1].vocab_size
        elif where.kind != "prepared":
            check_vocab_size(vocab_size)
    manifest = None
    if (where.prepared / MANIFEST_NAME).exists():
        with noting(problems, source):
            manifest = load_manifest(where.prepared)
    if manifest is not None and names is not None and (
            set(names["valid"]) != set(manifest.valid_domains)
            or (not settings.min_tokens and set(names["train"]) != set(manifest.train_domains))):
        said += f"; the manifest in {where.prepared} is of other domains (preparing updates it)"
        manifest = None
    if manifest is not None:
        said += (f"; as last prepared: {len(manifest.train_domains)} training domains, "
                 f"{sum(manifest.tokens('train', d) for d in manifest.train_domains):,} training tokens, valid "
                 f"domains {', '.join(manifest.valid_domains)}")
        return CorpusView(said, manifest, manifest.train_domains, list(manifest.shards["valid"]),
                          manifest.empty_domains("valid"), manifest.tokenizer.vocab_size)
    if names is None:  # a problem above, or domains only preparing reads (a domain field)
        if settings.domain_field:
            said += f"; its domains come from the field {settings.domain_field!r} when it is prepared (checked then)"
        return CorpusView(said, None, None, None, (), vocab_size)
    said += f"; domains {', '.join(names['train'])}, valid {', '.join(names['valid'])}"
    return CorpusView(said + " (the search space is checked once it is prepared)", None, names["train"],
                      names["valid"], (), vocab_size)


def plan(experiment: Experiment, methods: Sequence[str], vocab_size: int, started: int, timed: bool) -> list[str]:
    """What would train: per method its runs, the anchors they share, the verification, the proxies' size, tokens
    and time here (regmix.train.estimate), and the large run."""
    from regmix.regression.optimum import large_run_tokens
    from regmix.search import ONLINE
    from regmix.train.estimate import estimate
    from regmix.train.models import model_size

    sweep, simulation = experiment.sweep, experiment.simulation
    seeds = sweep.anchor_seeds
    verified = seeds if simulation.verify else 0
    extra = 2 * max(0, simulation.max_seeds - verified) if verified else 0  # the optimum's and a baseline's
    lines, least, most, counted = [], 2 * seeds, 2 * seeds, []
    for method in methods:
        if method in ONLINE:
            lines.append(f"method {method}: its own sequence of runs (regmix.search.online; not counted here)"
                         + (f", then {verified} verification runs" if verified else ""))
            least, most = least + verified, most + verified + extra
            continue
        budget = sweep.num_configs if method == "regmix" else experiment.search.budget
        runs = max(0, budget - started)
        for scale, larger in experiment.scales.items() if method == "regmix" else ():
            training = experiment.training(scale)
            lines.append(f"method regmix: {larger.count(sweep.num_configs)} of its mixtures again at a larger scale "
                         f"({training.model_name}, {training.max_step} steps; runs named <run>_{scale}), not timed "
                         "below")
        counted.append(method)
        lines.append(f"method {method}: {runs} proxy runs" + (f" (+{started} it starts from)" if started else "")
                     + (f", then {verified} verification runs of its answer (up to {verified + extra} with the seeds "
                        f"Welch's test may add, simulation.max_seeds {simulation.max_seeds})" if verified else
                        ", no verification")
                     + f" -> {experiment.optimal(method)}")
        least, most = least + runs + verified, most + runs + verified + extra
    lines.append(f"anchors: natural and uniform x {seeds} seeds = {2 * seeds} runs, trained once and shared")
    pool = experiment.runs / "proxies"
    finished = len(list(pool.glob("*/result.json"))) if pool.is_dir() else 0
    if finished:
        lines.append(f"{pool} holds {finished} finished runs: those of this study are not trained again")
    lines += estimate(experiment.proxy, least, vocab_size, sweep.device, sweep.workers, timed)
    if most > least:
        lines.append(f"  (at least {least} runs as counted; up to {most} if the verification adds every seed)")
    executor = sweep.make_executor()
    if executor.kind == "ray":
        lines.append(f"executor {executor}: the runs train as Ray tasks over the cluster, not on this machine's "
                     "workers; the time above is this machine's")
    large = simulation.large_run()
    size = model_size(large.model_name, vocab_size, large.block_size)
    lines.append(f"large run: {large.model_name} ({size / 1e6:,.0f}M non-embedding parameters), "
                 f"{large.max_step:,} steps x {large.global_batch_size} x {large.block_size} = "
                 f"{large_run_tokens(large):,} tokens (the repetition caps' budget, R = {simulation.repetitions:g}); "
                 "not trained by the study")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = ArgumentParser(prog="regmix validate", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", type=Path, help="experiment YAML")
    p.add_argument("--methods", nargs="+", choices=sorted(PROPOSERS), metavar="METHOD",
                   help=f"methods to plan, of {sorted(PROPOSERS)} (default: the experiment's `method:`)")
    p.add_argument("--no-timing", action="store_true", help="skip the two timed optimizer steps")
    args = p.parse_args(argv)
    from regmix.study.experiment import load_experiment

    problems: list[ConfigError] = []
    experiment = load_experiment(args.config, problems)
    return validate(experiment, args.methods or [experiment.method], problems, timed=not args.no_timing)


if __name__ == "__main__":
    raise SystemExit(run_command(main))
