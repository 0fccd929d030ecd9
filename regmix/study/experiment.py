"""An experiment: every setting of a mixture search, read from one YAML, and the steps all methods share.

Sections (all optional, the defaults are the embedded demo): `name`, `method` (any method of
`regmix.search`: regmix, random, bo, turbo, or an online method), `target` (valid domains to
minimise; default: the mean over every valid domain), `corpus`, `synthesis`, `proxy` (training
settings of every proxy), `sweep`, `fit`, `simulation` (the RegMix path; its `repetitions`,
`large_model`, `large_tokens` and `verify` hold for every method), `search` (budget, bounds and the method's
settings), `reuse` (an earlier optimum frozen as one domain when the domain set changed) and `larger` (larger
proxy scales on the swarm's first mixtures, for the scale-aware regressors: regmix.study.scales). The study
runner (`regmix.study.runner`) starts from its corpus (`regmix.study.corpus`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from regmix.cli import torch_device
from regmix.core.files import ConfigError, did_you_mean, noting, read_yaml
from regmix.core.objective import Objective
from regmix.core.schema import safe_name
from regmix.data.sources import Routing
from regmix.regression.fit import SELECTION
from regmix.regression.optimal_mixture import large_run_settings
from regmix.regression.regressors import REGRESSORS
from regmix.search import PROPOSERS
from regmix.search.synthesize import SynthesisSettings
from regmix.settings.training import PRESETS as TRAINING_PRESETS
from regmix.settings.training import TrainingSettings
from regmix.study.scales import LargerSettings, check_scales, larger_scales
from regmix.study.sections import apply_section, section_spelling
from regmix.train.executor import Executor, executor_from_args
from regmix.train.models import model_problem
from regmix.train.runlog import WANDB_MODES


@dataclass
class CorpusSettings:
    """Where the corpus is and how to tokenize it; `source: null` is the embedded default corpus. The domain may
    come from a field (`domain_field: meta.pile_set_name`), renamed (`rename: {Pile-CC: pile_cc}`), the tiny ones
    merged into `other` (`min_tokens`), and the valid split carved from train (`valid_fraction`): as
    `regmix prepare`'s flags (regmix.data.sources.Routing)."""

    source: str | None = None
    prepared: str = "data/default"
    tokenizer: str | None = None
    vocab_size: int = 2048
    domain_field: str | None = None
    text_field: str = "text"
    rename: dict[str, str] = field(default_factory=dict)
    valid_fraction: float = 0.0
    min_tokens: int = 0

    def routing(self) -> Routing:
        return Routing(self.domain_field, self.text_field, tuple(sorted(self.rename.items())), self.valid_fraction)


@dataclass
class SweepSettings:
    """`anchor_seeds`: the natural and the uniform mixture are trained with this many seeds as part of the
    sweep (regmix.study.verify: the noise floor; the regressors see them too); 0: none. `executor`: where the
    runs train (regmix.train.executor): `local`, `ray`, `ray:ADDRESS`, or a mapping of Executor's fields,
    e.g. {kind: ray, address: auto, gpus: 0.5, retries: 3}."""

    num_configs: int = 24  # the CPU demo's; RegMix's published sweep is 512
    anchor_seeds: int = 3
    workers: int = 0
    device: str | None = None
    wandb: str = "auto"
    executor: str | dict[str, Any] = "local"
    progress: bool = True  # progress bars of the sweeps

    def make_executor(self) -> Executor:
        if isinstance(self.executor, dict):
            return Executor(**self.executor)
        return Executor.parse(str(self.executor))

    def train_options(self) -> dict[str, Any]:
        """The keyword arguments of regmix.train.sweep.train_sweep these settings give."""
        return {"workers": self.workers, "device": self.device, "wandb_mode": self.wandb,
                "executor": self.make_executor(), "progress": self.progress}


@dataclass
class FitSettings:
    """The regressors CV chooses among, its folds, and the figure that chooses (regmix.regression.fit.SELECTION)."""

    regressors: list[str] = field(default_factory=lambda: ["linear", "lightgbm", "ensemble"])
    folds: int = 5
    select: str = "spearman"


@dataclass
class SimulationSettings:
    """How the optimum is chosen, for which large run. `large_model`: its model_name (a preset, a litgpt model
    name or a litgpt model_config.yaml: regmix.train.models); `large_tokens`: the tokens it trains (0: the
    large_1b recipe's 25,000 steps of 512 x 2048; others in whole steps of that batch), where a scale-aware
    regressor's optimum is chosen and what sets the repetition caps; `repetitions`: R, the epochs a domain may be
    repeated in the large run (regmix.regression.optimum; 0 turns the caps off); `optimum`: topk (RegMix: the
    mean of the `top_k` best candidates) or exact (regmix.regression.optimum.exact_optimum, seeded by them);
    `kl`: its pull toward the natural mixture; `guard_margin` (exact only): no target's predicted loss above
    natural's + margin. `uncertainty`: kappa of the pessimistic top-k choice (prediction + kappa x the
    regressor's own uncertainty; regmix.regression.simulate); `verify`: train the optimum as a proxy with the
    anchors' seeds and compare (regmix.study.verify, Welch's test at `significance`), adding seeds to the
    optimum and to each baseline it is not yet decided against until the test decides or each has
    `max_seeds`."""

    candidates: int = 1_000_000
    top_k: int = 128
    refine: int = 0
    large_model: str = "tinyllama_1_1b"
    large_tokens: float = 0
    repetitions: float = 4.0
    optimum: str = "topk"
    kl: float = 0.0
    guard_margin: float | None = None
    uncertainty: float = 1.0
    verify: bool = True
    max_seeds: int = 6
    significance: float = 0.05

    def large_run(self) -> TrainingSettings:
        """The large run's training settings: what optimal_mixture.yaml says to train, for its scale and caps."""
        return large_run_settings(self.large_model, self.large_tokens)


@dataclass
class SearchSettings:
    """A sequential search (`method:` other than regmix): rounds of `batch` proxies up to `budget` runs.

    `budget` counts every run, those started from included; `batch` 0 is the sweep's group size on
    CUDA (a GPU trains the batch at once) and the number of workers on CPU. `start_from`: a run folder
    (a RegMix sweep's `proxies/`) or `[mixture CSV, loss CSV]` whose runs the search starts with.
    `bounds`: {domain: [lower, upper]}; `settings`: the method's own (e.g. bo: initial, design), or by
    method for a comparison: {bo: {initial: 8}, aioli: {eta: 0.2}}.
    """

    budget: int = 24
    batch: int = 0
    seed: int = 0
    start_from: str | list[str] | None = None
    bounds: dict[str, list] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def for_method(self, method: str, own: str) -> dict[str, Any]:
        """The settings of `method`: its entry when `settings` is keyed by method, else the flat settings if it is
        the experiment's own method `own` (other methods of a comparison then run with their defaults)."""
        if self.settings and set(self.settings) <= set(PROPOSERS):
            return dict(self.settings.get(method) or {})
        return dict(self.settings) if method == own else {}


@dataclass
class ReuseSettings:
    """Mixture reuse (regmix.core.reuse): `previous`, an earlier study's optimal_mixture.yaml; its domains still in
    the corpus are searched as one domain `name` at their relative weights, beside the corpus's other domains,
    and the answer is written over every domain. Null: a full study."""

    previous: str | None = None
    name: str = "existing"


@dataclass
class Experiment:
    """Every setting of a pipeline run. `target`: valid domain weights; None = all valid domains equally."""

    name: str = "default"
    method: str = "regmix"
    target: Objective | None = None
    corpus: CorpusSettings = field(default_factory=CorpusSettings)
    synthesis: SynthesisSettings = field(default_factory=SynthesisSettings)
    proxy: TrainingSettings = field(default_factory=lambda: TrainingSettings.from_name("demo"))
    sweep: SweepSettings = field(default_factory=SweepSettings)
    fit: FitSettings = field(default_factory=FitSettings)
    simulation: SimulationSettings = field(default_factory=SimulationSettings)
    search: SearchSettings = field(default_factory=SearchSettings)
    reuse: ReuseSettings = field(default_factory=ReuseSettings)
    larger: list[LargerSettings] = field(default_factory=list)
    source: str = "<default experiment>"
    origins: dict[str, str] = field(default_factory=dict)  # a setting given by a flag: {"target": "--valid"}

    def origin(self, setting: str) -> str:
        """Where a setting came from, for errors: its flag, or the experiment file."""
        return self.origins.get(setting, self.source)

    @property
    def runs(self) -> Path:
        """The experiment's run folder: `proxies/` (every run, shared by its methods) and one folder per method."""
        return Path("runs") / self.name

    @property
    def configs(self) -> Path:
        """The config of every run of the experiment (`<run>.yaml`, the run's name)."""
        return Path("mixture_config") / self.name / "config_proxy"

    @property
    def scales(self) -> dict[str, LargerSettings]:
        """The larger scales by the name their trials keep (`larger`, `larger2`, ...; a run's name ends with it)."""
        return {"larger" if k == 0 else f"larger{k + 1}": larger for k, larger in enumerate(self.larger)}

    def training(self, scale: str | None) -> TrainingSettings:
        """The training settings of a trial's scale (None: the proxies')."""
        return self.proxy if scale is None else self.scales[scale].training(self.proxy)

    def as_method(self, method: str) -> Experiment:
        """The experiment as `method` runs in a comparison: its own search settings (flat ones are the experiment's
        method's; the others run with their defaults)."""
        search = dataclasses.replace(self.search, settings=self.search.for_method(method, self.method))
        return dataclasses.replace(self, method=method, search=search)

    def optimal(self, method: str | None = None) -> Path:
        """Where a method's answer goes: `mixture_config/<name>/<method>/optimal_mixture.yaml`."""
        return Path("mixture_config") / self.name / (method or self.method) / "optimal_mixture.yaml"


def proxy_base(section: Any, source: Path) -> TrainingSettings:
    """The proxies' settings a `proxy:` section starts from: its `preset:` (regmix.settings.training.PRESETS, e.g.
    demo_low_lr), else the demo's."""
    name = section.get("preset", "demo") if isinstance(section, dict) else "demo"
    if name not in TRAINING_PRESETS:
        raise ConfigError(source, f"unknown 'proxy.preset' {name!r}{did_you_mean(name, TRAINING_PRESETS)}; presets: "
                                  f"{sorted(TRAINING_PRESETS)}")
    return TrainingSettings.from_name(name)


def without_preset(section: Any) -> Any:
    return {k: v for k, v in section.items() if k != "preset"} if isinstance(section, dict) else section


def load_experiment(path: str | os.PathLike | None, problems: list[ConfigError] | None = None) -> Experiment:
    """Read an experiment YAML (None: the embedded default experiment); every section is optional and starts from
    the demo defaults. Its first problem is raised, or with `problems` every one is kept there (a bad section keeps
    its defaults, so the others are still checked: `regmix validate` and `--dry-run` list them all)."""
    found: list[ConfigError] = []
    experiment = _read_experiment(Path(path), found) if path is not None else Experiment()
    if problems is None and found:
        raise found[0]
    if problems is not None:
        problems.extend(found)
    return experiment


def _read_experiment(path: Path, problems: list[ConfigError]) -> Experiment:
    """The experiment of one file, each problem kept in `problems` and its setting left at the default."""
    experiment = Experiment(source=str(path))
    data: Any = {}
    with noting(problems, path):
        data = read_yaml(path) or {}
        if not isinstance(data, dict):
            data = {}
            raise ConfigError(path, "expected a mapping of experiment settings")
    top = ("name", "method", "target", "source", "origins")
    sections = [f.name for f in dataclasses.fields(Experiment) if f.name not in top]
    unknown = sorted(set(data) - set(sections) - set(top[:3]))
    if unknown:
        problems.append(ConfigError(path, f"unknown key{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}"
                                          f"{did_you_mean(unknown[0], [*top[:3], *sections])}; known: name, method, "
                                          f"target, {', '.join(sections)}"))
    with noting(problems, path):
        experiment.name = safe_name(data.get("name", experiment.name), "experiment name", path)
    experiment.method = str(data.get("method", experiment.method))
    if experiment.method not in PROPOSERS:
        problems.append(ConfigError(path, f"unknown method {experiment.method!r}"
                                          f"{did_you_mean(experiment.method, PROPOSERS)}; known: {sorted(PROPOSERS)}"))
        experiment.method = Experiment.method
    with noting(problems, path):
        experiment.target = Objective.parse(data.get("target"), path)
    for key in sections:
        if key == "larger" and key in data:
            with noting(problems, path):
                experiment.larger = larger_scales(data[key], path)
        elif key in data:
            with noting(problems, path):
                setattr(experiment, key, apply_section(proxy_base(data[key], path) if key == "proxy" else
                                                  getattr(experiment, key), without_preset(data[key]), path, key))
    checks: list[tuple[Callable[[Any, Path], None], Any]] = [
        (check_search_settings, experiment.search), (check_simulation_settings, experiment.simulation),
        (check_fit_settings, experiment.fit), (check_sweep_settings, experiment.sweep),
        (check_corpus_settings, experiment.corpus)]
    for check, section in checks:
        with noting(problems, path):
            check(section, path)
    with noting(problems, path):
        experiment.proxy.validate(path, section_spelling("proxy"))
    with noting(problems, path):
        experiment.synthesis.validate(path, section_spelling("synthesis"))
    with noting(problems, path):
        check_scales(experiment.larger, experiment.proxy, experiment.sweep.num_configs, path)
    return experiment


def check_corpus_settings(corpus: CorpusSettings, source: Path) -> None:
    """The `corpus:` section's routing, before any corpus is read."""
    checks = [(0 <= corpus.valid_fraction < 1, "'corpus.valid_fraction' must be in [0, 1)"),
              (corpus.min_tokens >= 0, "'corpus.min_tokens' must be >= 0"),
              (all(isinstance(k, str) and isinstance(v, str) and v for k, v in corpus.rename.items()),
               "'corpus.rename' maps domain names to new names")]
    for ok, problem in checks:
        if not ok:
            raise ConfigError(source, problem)


def check_sweep_settings(sweep: SweepSettings, source: Path) -> None:
    """The `sweep:` section, before any corpus is built: counts, the wandb mode, the device and the executor."""
    checks = [(sweep.num_configs >= 1, "'sweep.num_configs' must be >= 1"),
              (sweep.anchor_seeds >= 0, "'sweep.anchor_seeds' must be >= 0"),
              (sweep.workers >= 0, "'sweep.workers' must be >= 0 (0: one per GPU or core)"),
              (sweep.wandb in WANDB_MODES, f"'sweep.wandb' must be one of {list(WANDB_MODES)}")]
    for ok, problem in checks:
        if not ok:
            raise ConfigError(source, problem)
    try:
        if sweep.device is not None:
            torch_device(str(sweep.device))
        sweep.make_executor()
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(source, f"'sweep.device': {exc}") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, f"'sweep.executor': {exc}") from None


def with_executor(experiment: Experiment, args: argparse.Namespace) -> Experiment:
    """The experiment with the executor flags of regmix.train.executor.add_executor_arguments applied."""
    try:
        executor = executor_from_args(args, experiment.sweep.make_executor())
    except ValueError as exc:
        raise ConfigError("--executor", str(exc)) from None
    return dataclasses.replace(experiment, sweep=dataclasses.replace(experiment.sweep,
                                                                     executor=dataclasses.asdict(executor)))


def check_simulation_settings(simulation: SimulationSettings, source: Path) -> None:
    large_model = model_problem(simulation.large_model)
    checks = [(large_model is None, f"'simulation.large_model' {large_model}, got {simulation.large_model!r}"),
              (simulation.top_k >= 1 and simulation.candidates >= simulation.top_k,
               "'simulation.candidates' must be >= 'simulation.top_k' >= 1"),
              (0 <= simulation.large_tokens < float("inf"),
               "'simulation.large_tokens' must be a finite number >= 0 (0: the large_1b recipe's)"),
              (simulation.repetitions >= 0, "'simulation.repetitions' must be >= 0 (0: no repetition caps)"),
              (simulation.optimum in ("topk", "exact"), "'simulation.optimum' must be topk or exact"),
              (simulation.kl >= 0, "'simulation.kl' must be >= 0"),
              (simulation.uncertainty >= 0, "'simulation.uncertainty' must be >= 0"),
              (simulation.max_seeds >= 0, "'simulation.max_seeds' must be >= 0"),
              (0 < simulation.significance < 0.5, "'simulation.significance' must be in (0, 0.5)"),
              (simulation.guard_margin is None or (simulation.optimum == "exact" and simulation.guard_margin >= 0),
               "'simulation.guard_margin' must be >= 0 and needs 'simulation.optimum: exact'")]
    for ok, problem in checks:
        if not ok:
            raise ConfigError(source, problem)


def check_fit_settings(fit: FitSettings, source: Path) -> None:
    """The `fit:` section names known regressors, before any proxy trains for them."""
    if not isinstance(fit.regressors, list) or not fit.regressors or set(map(str, fit.regressors)) - set(REGRESSORS):
        raise ConfigError(source, f"'fit.regressors' must name regressors of {list(REGRESSORS)}, got {fit.regressors}")
    if fit.folds < 1:
        raise ConfigError(source, f"'fit.folds' must be >= 1 (1: no cross-validation), got {fit.folds}")
    if fit.select not in SELECTION:
        raise ConfigError(source, f"'fit.select' must be one of {list(SELECTION)}, got {fit.select!r}")


def check_search_settings(search: SearchSettings, source: Path) -> None:
    """The `search:` section's shapes, before anything trains."""
    start = search.start_from
    checks = [(search.budget >= 1, "'search.budget' must be >= 1"),
              (search.batch >= 0, "'search.batch' must be >= 0"),
              (search.bounds is None or isinstance(search.bounds, dict),
               "'search.bounds' must map a domain to [lower, upper]"),
              (isinstance(search.settings, dict), "'search.settings' must be a mapping of the method's settings"),
              (not isinstance(search.settings, dict) or not set(search.settings) <= set(PROPOSERS)
               or all(isinstance(v, dict) for v in search.settings.values()),
               "'search.settings' by method must map each method to a mapping of its settings"),
              (not isinstance(search.settings, dict) or "synthesis" not in search.settings,
               "'search.settings' cannot hold synthesis: the experiment's synthesis: section is the prior"),
              (start is None or isinstance(start, str)
               or (isinstance(start, list) and len(start) == 2 and all(isinstance(p, str) for p in start)),
               "'search.start_from' must be a run folder or [mixture CSV, loss CSV]")]
    for ok, problem in checks:
        if not ok:
            raise ConfigError(source, problem)
