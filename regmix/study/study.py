"""What one method's study runs on: the experiment, its prepared corpus, the objective and the search space
(with the large run's repetition caps), and where its files go. The runner and the report both read it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.results import RunResult
from regmix.core.reuse import FrozenMixture, frozen_mixture
from regmix.core.space import SearchSpace
from regmix.data.corpus import CorpusManifest
from regmix.regression.optimum import RepetitionCaps, large_run_tokens, repetition_caps
from regmix.settings.run_config import load_run_config
from regmix.study.corpus import prepare_experiment_corpus
from regmix.study.experiment import Experiment, check_search_settings


@dataclass
class Study:
    """What one method runs on: the experiment, its corpus, objective and space, and where things go."""

    experiment: Experiment
    method: str
    manifest: CorpusManifest
    objective: Objective
    space: SearchSpace
    caps: RepetitionCaps | None
    frozen: FrozenMixture | None = None  # mixture reuse: the space's first domain stands for an earlier optimum

    def expand(self, mixture: Mixture) -> Mixture:
        """A mixture of the space as the corpus's domains are trained on (itself without reuse)."""
        return mixture if self.frozen is None else self.frozen.expand(mixture)

    def reduce(self, mixture: Mixture) -> Mixture:
        """A mixture over the corpus's domains as the space's (itself without reuse)."""
        return mixture if self.frozen is None else self.frozen.reduce(mixture)

    def reduce_result(self, result: RunResult) -> RunResult:
        """A run's result with its mixtures over the space's domains, as methods learn from it."""
        if self.frozen is None:
            return result
        return dataclasses.replace(result, achieved=self.reduce(result.mixture),
                                   requested=self.reduce(result.requested))

    @property
    def folder(self) -> Path:
        return self.experiment.runs / self.method

    @property
    def pool(self) -> Path:
        return self.experiment.runs / "proxies"

    @property
    def natural(self) -> Mixture:
        return self.space.mixture(self.space.prior)

    @property
    def uniform(self) -> Mixture:
        if self.frozen is not None:  # the frozen optimum counts as one domain
            return Mixture.uniform(self.space.domains)
        return self.manifest.uniform(self.space.domains)

    @property
    def seeds(self) -> list[int]:
        """The anchors' seeds (the verification's first ones)."""
        return [self.seed(k) for k in range(self.experiment.sweep.anchor_seeds)]

    def seed(self, k: int) -> int:
        """The k-th seed of a mixture trained with several (anchors, verification)."""
        return self.experiment.proxy.seed + k

    @property
    def budget(self) -> int:
        return self.experiment.sweep.num_configs if self.method == "regmix" else self.experiment.search.budget


def open_study(experiment: Experiment, method: str | None = None, domains: Sequence[str] | None = None,
               report: Callable[[str], None] = print) -> Study:
    """Prepare the corpus and build the study's objective and space; `domains`: a subset of the training domains
    (without a target, the objective is then the mean over those of them that are valid domains)."""
    check_search_settings(experiment.search, experiment.source)
    manifest, objective = prepare_experiment_corpus(experiment, report)
    return study_on(experiment, manifest, objective, method, domains, report)


def study_on(experiment: Experiment, manifest: CorpusManifest, objective: Objective, method: str | None = None,
             domains: Sequence[str] | None = None, report: Callable[[str], None] = print) -> Study:
    """The study of a prepared corpus and its objective (open_study's second half; `regmix validate` checks an
    experiment's space and reuse with it, on the corpus as last prepared, writing nothing)."""
    method = method or experiment.method
    natural = manifest.token_distribution()
    empty = set(manifest.empty_domains("train"))
    if domains is not None:
        unknown = sorted(set(domains) - set(manifest.train_domains))
        if unknown:
            raise ConfigError("--domains", f"unknown domains {unknown}; the corpus has {list(manifest.train_domains)}")
        if set(domains) & empty:
            raise ConfigError("--domains", f"{sorted(set(domains) & empty)} have no training tokens")
        natural = Mixture.from_dict({d: natural[d] for d in domains}, normalize=True)
        subset = [d for d in domains if d in manifest.valid_domains]
        if experiment.target is None and subset:  # the default objective: the valid ones of the domains
            objective = Objective.mean(subset)
    simulation = experiment.simulation
    tokens = {d: manifest.tokens("train", d) for d in natural.domains}
    caps = repetition_caps(tokens, natural.domains, large_run_tokens(simulation.large_run()),
                           simulation.repetitions) if simulation.repetitions else None
    frozen = None
    if experiment.reuse.previous:
        if experiment.search.start_from:
            raise ConfigError(experiment.source, "'reuse.previous' and 'search.start_from': a reuse study starts from "
                                                 "its own small swarm; drop one of them")
        previous = load_run_config(experiment.reuse.previous).train
        frozen = frozen_mixture(previous, [d for d in natural.domains if d not in empty], experiment.reuse.name,
                                experiment.reuse.previous)
        report(f"[reuse] {', '.join(frozen.members.domains)} searched as one domain {frozen.name!r} at the relative "
               f"weights of {experiment.reuse.previous}" + (f"; no longer in the corpus: {', '.join(frozen.removed)}"
                                                             if frozen.removed else ""))
        if caps is not None:
            caps = dataclasses.replace(caps, domains=frozen.reduced_domains(natural.domains),
                                       caps=frozen.caps(caps.caps, natural.domains))
        natural = frozen.reduce(natural).on_domains(frozen.reduced_domains(natural.domains))
    space = SearchSpace.around(natural, experiment.synthesis.maximum_usage, experiment.search.bounds,
                               experiment.source, caps=None if caps is None else caps.caps)
    return Study(experiment, method, manifest, objective, space, caps, frozen)
