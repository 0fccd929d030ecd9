"""Run configs: RegMix's config YAML (`train:`, `valid:`, sampling and training settings).

A config may also carry a `schedule:` that changes the mixture during the run:
- piecewise: a list of stages, `[{until_step: 500, train: {train_a: 0.7, ...}}, {until_step: 1000, ...}]`;
  stage i is in force until its step; `train:` is then the stages' step-weighted mean (written for you);
- online: `{policy: <name>, ...policy settings}`, a policy of `regmix.online` that picks the next mixture
  from what the run measures; `train:` is the mixture it starts from.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import yaml

from regmix.core.files import ConfigError, did_you_mean, read_yaml, write_atomic
from regmix.core.mixture import Mixture
from regmix.core.schema import safe_name, strip_train, strip_valid, train_key, valid_key
from regmix.settings.training import TrainingSettings, setting_types, setting_value

_TRAINING_FIELDS = {f.name: f for f in dataclasses.fields(TrainingSettings)}
SAMPLING_KEYS = ("temperature", "min_strength", "max_strength", "minimum",
                 "sample_multiplier", "maximum_usage")
# Keys of RegMix's own configs that regmix has no use for (its launcher's device counts): accepted as written.
REGMIX_KEYS = ("total_devices", "num_of_devices")
# What regmix records in optimal_mixture.yaml beside the settings (how the mixture was found), read back as written.
RECORD_KEYS = ("predicted_loss", "predicted_loss_spread", "objective", "regressor", "num_candidates", "top_k",
               "top_k_loss_range", "method", "recommended_by", "epochs", "repetition_caps", "reuse", "predicted_at")
META = "meta"  # a section for anything else a user keeps with a config
SECTIONS = ("train", "valid", "schedule")


@dataclass(frozen=True)
class Stage:
    """One stage of a piecewise schedule: `mixture` is sampled until step `until_step`."""

    until_step: int
    mixture: Mixture


@dataclass
class RunConfig:
    """One run: the training mixture (and its schedule), validation domains and settings of one config file.

    `train` is the mixture asked for: static runs sample it throughout, piecewise runs on average
    (the stages' step-weighted mean), online runs start from it.
    """

    name: str
    train: Mixture
    valid: tuple[str, ...]
    training: TrainingSettings = field(default_factory=TrainingSettings)
    sampling: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    stages: tuple[Stage, ...] = ()
    policy: dict[str, Any] | None = None

    def to_yaml_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "train": {train_key(d): float(f"{w:.12g}") for d, w in zip(self.train.domains, self.train.weights)},
            "valid": {valid_key(d): 1.0 for d in self.valid},
        }
        if self.stages:
            data["schedule"] = [{"until_step": s.until_step,
                                 "train": {train_key(d): float(f"{w:.12g}") for d, w in s.mixture.to_dict().items()}}
                                for s in self.stages]
        elif self.policy is not None:
            data["schedule"] = dict(self.policy)
        data.update(self.sampling)
        data.update(dataclasses.asdict(self.training))
        data.update(self.extra)
        return data

    def check_corpus(self, manifest: Any, source: str | os.PathLike) -> None:
        """Raise if the config names domains the prepared corpus lacks (`manifest`: CorpusManifest)."""
        empty = manifest.empty_domains("train")
        self.train.check_domains(manifest.train_domains, source, empty)
        for stage in self.stages:
            stage.mixture.check_domains(manifest.train_domains, source, empty)
        missing = [d for d in self.valid if d not in manifest.valid_domains]
        if missing:
            raise ConfigError(source, f"unknown valid domains {missing}; the corpus has {list(manifest.valid_domains)}")


def train_mixture(raw: dict, source: str | os.PathLike) -> Mixture:
    """A `train:` section (`train_<domain>: weight`) as a mixture; a domain names shard files and columns."""
    return Mixture.from_dict({safe_name(strip_train(str(k)), "domain", source): v for k, v in raw.items()}, source)


def _stages(raw: Any, source: str | os.PathLike, max_step: int) -> tuple[Stage, ...]:
    stages, previous = [], 0
    for i, item in enumerate(raw):
        if not isinstance(item, dict) or set(item) != {"until_step", "train"}:
            raise ConfigError(source, f"schedule stage {i + 1} must be {{until_step: <step>, train: {{...}}}}")
        until = item["until_step"]
        if isinstance(until, bool) or not isinstance(until, int) or until <= previous:
            raise ConfigError(source, f"schedule stage {i + 1}: until_step must be an integer above {previous}, "
                                      f"got {until!r}")
        if not isinstance(item["train"], dict):
            raise ConfigError(source, f"schedule stage {i + 1}: 'train:' must map train_<domain> to a weight")
        stages.append(Stage(until, train_mixture(item["train"], source)))
        previous = until
    if not stages:
        raise ConfigError(source, "'schedule:' has no stages")
    if previous < max_step:
        raise ConfigError(source, f"the last schedule stage ends at step {previous}, before max_step {max_step}")
    return tuple(stages)


def stages_mean(stages: Sequence[Stage], max_step: int) -> Mixture:
    """The mixture a piecewise schedule samples on average over `max_step` steps."""
    domains = tuple(dict.fromkeys(d for s in stages for d in s.mixture.domains))
    total, start = np.zeros(len(domains)), 0
    for stage in stages:
        steps = max(0, min(stage.until_step, max_step) - start)
        total += steps * stage.mixture.vector(domains)
        start = stage.until_step
    return Mixture(domains, total / total.sum())


def _schedule(data: dict, source: str | os.PathLike, training: TrainingSettings
              ) -> tuple[tuple[Stage, ...], dict[str, Any] | None]:
    raw = data.get("schedule")
    if raw is None:
        return (), None
    if isinstance(raw, list):
        return _stages(raw, source, training.max_step), None
    if isinstance(raw, dict) and isinstance(raw.get("policy"), str):
        return (), dict(raw)
    raise ConfigError(source, "'schedule:' must be a list of {until_step, train} stages or {policy: <name>, ...}")


def run_config_from_dict(data: Any, source: str | os.PathLike, name: str,
                         defaults: TrainingSettings | None = None) -> RunConfig:
    """A config from parsed YAML; training settings the file lacks come from `defaults` (RegMix's proxies)."""
    defaults = defaults or TrainingSettings()
    if not isinstance(data, dict):
        raise ConfigError(source, "expected a mapping with 'train:' and 'valid:' sections")
    settings, sampling, extra = {}, {}, {}
    for key, value in data.items():
        if key in SECTIONS:
            continue
        if key in _TRAINING_FIELDS:
            settings[key] = value
        elif key in SAMPLING_KEYS:
            sampling[key] = value
        elif key in REGMIX_KEYS or key in RECORD_KEYS or key == META:
            extra[key] = value
        else:
            raise ConfigError(source, unknown_key(key))
    kinds = setting_types(TrainingSettings)
    training = dataclasses.replace(defaults, **{key: setting_value(key, value, kinds[key], source)
                                                for key, value in settings.items()})
    training.validate(source)
    stages, policy = _schedule(data, source, training)
    train_raw = data.get("train")
    if stages and train_raw is None:
        train = stages_mean(stages, training.max_step)
    else:
        if train_raw is None:
            raise ConfigError(source, "missing the 'train:' section")
        if not isinstance(train_raw, dict) or not train_raw:
            raise ConfigError(source, "the 'train:' section has no domains")
        train = train_mixture(train_raw, source)
        if stages and not train.close_to(stages_mean(stages, training.max_step), atol=1e-6):
            raise ConfigError(source, "'train:' differs from the schedule's step-weighted mean; leave it out "
                                      "and it is computed")
    if policy is not None:
        from regmix.online import make_policy  # policies use this module's settings helpers

        make_policy(policy, train, source, training.max_step)  # a bad policy fails its own config, before training
    valid_raw = data.get("valid") or {}
    if not isinstance(valid_raw, dict):
        raise ConfigError(source, "the 'valid:' section must map valid_<domain> to a weight")
    valid = tuple(safe_name(strip_valid(str(k)), "valid domain", source) for k in valid_raw)
    return RunConfig(name=name, train=train, valid=valid, training=training, sampling=sampling, extra=extra,
                     stages=stages, policy=policy)


def unknown_key(key: Any) -> str:
    """Why a config key is refused: a misspelled setting would otherwise train with the default, silently
    (`max_steps: 5` ran RegMix's 1000 steps)."""
    known = (*SECTIONS, *_TRAINING_FIELDS, *SAMPLING_KEYS, *REGMIX_KEYS, *RECORD_KEYS, META)
    return (f"unknown key {key!r}{did_you_mean(key, known)}; a config holds {', '.join(SECTIONS)}, the training "
            f"settings ({', '.join(_TRAINING_FIELDS)}), the sampling settings ({', '.join(SAMPLING_KEYS)}) and "
            f"what regmix records ({', '.join(RECORD_KEYS)}); keep anything else under '{META}:'")


def load_run_config(path: str | os.PathLike, defaults: TrainingSettings | None = None) -> RunConfig:
    """Read one RegMix config file (ours or RegMix's own); the run name is the file's stem."""
    path = Path(path)
    return run_config_from_dict(read_yaml(path), path, safe_name(path.stem, "run name (the file's name)", path),
                                defaults)


def run_config_text(config: RunConfig) -> str:
    """The config file's text; a config that records an objective says how it differs from `valid:`."""
    text = yaml.safe_dump(config.to_yaml_dict(), sort_keys=False, default_flow_style=False)
    if "objective" not in config.extra:
        return text
    return ("# valid: the domains the run evaluates (RegMix's format: 1.0 each, not weights);\n"
            "# objective: what this mixture minimizes, the weights of those losses (summing to 1).\n" + text)


def save_run_config(config: RunConfig, path: str | os.PathLike) -> None:
    write_atomic(path, run_config_text(config))


def _natural_key(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.stem))


def run_config_paths(folder: str | os.PathLike) -> list[Path]:
    """Config files of a sweep folder in natural order (n2 before n10); hidden files are not configs, and a
    file name that cannot name a run folder is refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(folder, "not a folder of config files")
    paths = [p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith(".")]
    for path in paths:
        safe_name(path.stem, "run name (the file's name)", path)
    return sorted(paths, key=_natural_key)
