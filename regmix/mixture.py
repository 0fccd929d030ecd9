"""Mixtures and proxy-run configs: the one place that knows domain order and RegMix's YAML layout.

A `Mixture` keeps its domains in a fixed order, and every conversion to a vector names the order it
wants, because mixing up column order between mixtures, priors and bounds is the classic bug of
mixture tools. `RunConfig` is one RegMix config file (`train:`, `valid:`, sampling and training
settings); it reads RegMix's own files and writes files RegMix's tools read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import yaml

TRAIN_PREFIX = "train_"
VALID_PREFIX = "valid_"
SUM_TOLERANCE = 1e-3


class ConfigError(ValueError):
    """A bad input file. The message starts with the file so the user knows what to fix."""

    def __init__(self, source: str | os.PathLike, problem: str):
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{self.source}: {problem}")


def _as_weight(value: Any, domain: str, source: str | os.PathLike) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(source, f"weight of domain '{domain}' is {value!r}, not a number")
    weight = float(value)
    if math.isnan(weight):
        raise ConfigError(source, f"weight of domain '{domain}' is NaN")
    if weight < 0 or math.isinf(weight):
        raise ConfigError(source, f"weight of domain '{domain}' is {weight}, must be finite and >= 0")
    return weight


@dataclass(frozen=True)
class Mixture:
    """Sampling weights over named training domains, in a fixed domain order."""

    domains: tuple[str, ...]
    weights: np.ndarray

    def __post_init__(self) -> None:
        weights = np.array(self.weights, dtype=np.float64).reshape(-1)
        if len(weights) != len(self.domains):
            raise ValueError(f"{len(self.domains)} domains but {len(weights)} weights")
        if len(set(self.domains)) != len(self.domains):
            raise ValueError(f"duplicate domains in {self.domains}")
        weights.setflags(write=False)
        object.__setattr__(self, "domains", tuple(self.domains))
        object.__setattr__(self, "weights", weights)

    @classmethod
    def from_dict(
        cls,
        weights: Mapping[str, Any],
        source: str | os.PathLike = "<mixture>",
        normalize: bool = False,
        tolerance: float = SUM_TOLERANCE,
    ) -> "Mixture":
        """Validated mixture from a mapping; `normalize` accepts any non-negative amounts (token counts)."""
        if not isinstance(weights, Mapping) or not weights:
            raise ConfigError(source, "the mixture has no domains")
        values = np.array([_as_weight(v, str(k), source) for k, v in weights.items()])
        total = float(values.sum())
        if total <= 0:
            raise ConfigError(source, "all domain weights are 0")
        if normalize:
            values = values / total
        elif abs(total - 1.0) > tolerance:
            raise ConfigError(source, f"weights sum to {total:.6g}, not 1 (tolerance {tolerance:g})")
        return cls(tuple(str(k) for k in weights), values)

    @classmethod
    def uniform(cls, domains: Sequence[str]) -> "Mixture":
        return cls(tuple(domains), np.full(len(domains), 1.0 / len(domains)))

    def to_dict(self) -> dict[str, float]:
        return {d: float(w) for d, w in zip(self.domains, self.weights)}

    def __getitem__(self, domain: str) -> float:
        return float(self.weights[self.domains.index(domain)])

    def vector(self, domains: Sequence[str]) -> np.ndarray:
        """Weights in the order of `domains`; a domain of ours missing there is an error, theirs get 0."""
        unknown = [d for d in self.domains if d not in set(domains) and self[d] > 0]
        if unknown:
            raise ValueError(f"mixture has weight on domains {unknown} that are not in {list(domains)}")
        lookup = self.to_dict()
        return np.array([lookup.get(d, 0.0) for d in domains])

    def close_to(self, other: "Mixture", atol: float = 1e-9) -> bool:
        """Same weight on every domain (a domain missing on one side counts as 0)."""
        domains = list(dict.fromkeys(self.domains + other.domains))
        return bool(np.allclose(self.vector(domains), other.vector(domains), rtol=0.0, atol=atol))

    def active(self) -> tuple[str, ...]:
        """Domains with non-zero weight: the only ones a trainer may read."""
        return tuple(d for d, w in zip(self.domains, self.weights) if w > 0)

    def check_domains(
        self, known: Iterable[str], source: str | os.PathLike, empty: Iterable[str] = ()
    ) -> None:
        """Raise if a weighted domain is unknown to the corpus or has no tokens."""
        known, empty = set(known), set(empty)
        unknown = [d for d in self.domains if d not in known]
        if unknown:
            raise ConfigError(source, f"unknown domains {unknown}; the corpus has {sorted(known)}")
        hollow = [d for d in self.active() if d in empty]
        if hollow:
            raise ConfigError(source, f"domains {hollow} have weight but no tokens in the corpus")


def setting_field(default: Any, help: str) -> Any:
    """A settings field with the help text its `--flag` shows (see add_settings_arguments)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainingSettings:
    """Training settings of a proxy run, named as in RegMix's config files."""

    model_name: str = setting_field("tinyllama_1M", "model preset (regmix.models)")
    global_batch_size: int = setting_field(512, "sequences per optimizer step")
    micro_batch_size: int = setting_field(16, "sequences per forward pass (gradient accumulation makes up the rest)")
    max_step: int = setting_field(1000, "optimizer steps")
    learning_rate: float = setting_field(4e-4, "peak learning rate (AdamW)")
    min_lr: float = setting_field(4e-4, "final learning rate of the cosine schedule")
    warmup_steps: int = setting_field(100, "linear warm-up steps")
    lr_schedule: str = setting_field("constant", "after warm-up: constant (as published) or cosine")
    eval_step_interval: int = setting_field(100, "steps between validation evaluations")
    save_step_interval: int = setting_field(2000, "steps between checkpoints (also saved at each evaluation)")
    block_size: int = setting_field(2048, "tokens per sequence")
    eval_tokens: int = setting_field(1_048_576, "validation tokens per valid domain (fixed, so runs compare)")
    seed: int = setting_field(42, "seed of the weights and the data order")

    def validate(self, source: str | os.PathLike) -> None:
        positive = ["global_batch_size", "micro_batch_size", "max_step", "eval_step_interval",
                    "save_step_interval", "block_size", "eval_tokens"]
        for name in positive:
            if getattr(self, name) <= 0:
                raise ConfigError(source, f"{name} must be > 0, got {getattr(self, name)}")
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(source, f"global_batch_size {self.global_batch_size} is not a multiple "
                                      f"of micro_batch_size {self.micro_batch_size}")
        if self.warmup_steps < 0 or not self.learning_rate > 0 or self.min_lr < 0:
            raise ConfigError(source, "learning_rate must be > 0, min_lr and warmup_steps >= 0")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ConfigError(source, f"lr_schedule must be 'constant' or 'cosine', not {self.lr_schedule!r}")


LARGE_RUN = TrainingSettings(  # TinyLlama-1.1B recipe at RegMix's 25B-token scale: what pretrain trains
    model_name="tinyllama_1_1b", global_batch_size=512, micro_batch_size=8, max_step=25_000,
    learning_rate=4e-4, min_lr=4e-5, warmup_steps=2_000, lr_schedule="cosine", eval_step_interval=1_000,
    save_step_interval=1_000, block_size=2048, eval_tokens=1_048_576, seed=42)


def add_settings_arguments(parser: argparse._ActionsContainer, defaults: Any, skip: Sequence[str] = ()) -> None:
    """One `--flag` per field of a settings dataclass, defaulting to `defaults`' values."""
    for f in dataclasses.fields(defaults):
        if f.name not in skip:
            value = getattr(defaults, f.name)
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(value), default=value,
                                help=f"{f.metadata.get('help', f.name)} (default: %(default)s)")


def settings_from_args(defaults: Any, args: argparse.Namespace) -> Any:
    """`defaults` with every field that `args` has (the flags of add_settings_arguments)."""
    return dataclasses.replace(defaults, **{f.name: getattr(args, f.name) for f in dataclasses.fields(defaults)
                                            if hasattr(args, f.name)})


_TRAINING_FIELDS = {f.name: f for f in dataclasses.fields(TrainingSettings)}
SAMPLING_KEYS = ("temperature", "min_strength", "max_strength", "minimum",
                 "sample_multiplier", "maximum_usage")


@dataclass
class RunConfig:
    """One proxy run: the training mixture, validation domains and settings of one config file."""

    name: str
    train: Mixture
    valid: tuple[str, ...]
    training: TrainingSettings = field(default_factory=TrainingSettings)
    sampling: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_yaml_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "train": {TRAIN_PREFIX + d: float(f"{w:.12g}") for d, w in zip(self.train.domains, self.train.weights)},
            "valid": {VALID_PREFIX + d: 1.0 for d in self.valid},
        }
        data.update(self.sampling)
        data.update(dataclasses.asdict(self.training))
        data.update(self.extra)
        return data

    def check_corpus(self, manifest: "Any", source: str | os.PathLike) -> None:
        """Raise if the config names domains the prepared corpus lacks (`manifest`: CorpusManifest)."""
        self.train.check_domains(manifest.train_domains, source, manifest.empty_domains("train"))
        missing = [d for d in self.valid if d not in manifest.valid_domains]
        if missing:
            raise ConfigError(source, f"unknown valid domains {missing}; the corpus has {list(manifest.valid_domains)}")


def _strip(key: str, prefix: str) -> str:
    return key[len(prefix):] if key.startswith(prefix) else key


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML or JSON file, turning every failure into one ConfigError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(path, "file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, f"cannot read: {exc}") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(path, f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None


def read_json_in(path: str | os.PathLike, file_name: str, missing: str) -> tuple[Path, Any]:
    """Parse a JSON file given by its path or by the folder holding it as `file_name`."""
    path = Path(path)
    if path.is_dir():
        path = path / file_name
    if not path.exists():
        raise ConfigError(path, missing)
    return path, read_yaml(path)


def run_config_from_dict(data: Any, source: str | os.PathLike, name: str) -> RunConfig:
    if not isinstance(data, dict):
        raise ConfigError(source, "expected a mapping with 'train:' and 'valid:' sections")
    if "train" not in data:
        raise ConfigError(source, "missing the 'train:' section")
    train_raw = data["train"]
    if not isinstance(train_raw, dict) or not train_raw:
        raise ConfigError(source, "the 'train:' section has no domains")
    train = Mixture.from_dict({_strip(str(k), TRAIN_PREFIX): v for k, v in train_raw.items()}, source)
    valid_raw = data.get("valid") or {}
    if not isinstance(valid_raw, dict):
        raise ConfigError(source, "the 'valid:' section must map valid_<domain> to a weight")
    valid = tuple(_strip(str(k), VALID_PREFIX) for k in valid_raw)
    settings, sampling, extra = {}, {}, {}
    for key, value in data.items():
        if key in ("train", "valid"):
            continue
        if key in _TRAINING_FIELDS:
            settings[key] = value
        elif key in SAMPLING_KEYS:
            sampling[key] = value
        else:
            extra[key] = value
    defaults = TrainingSettings()
    for key, value in list(settings.items()):
        kind = type(getattr(defaults, key))
        try:
            settings[key] = kind(value) if kind is not int else int(float(value))
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(source, f"{key} must be a {kind.__name__}, got {value!r}") from None
    training = TrainingSettings(**settings)
    training.validate(source)
    return RunConfig(name=name, train=train, valid=valid, training=training, sampling=sampling, extra=extra)


def load_run_config(path: str | os.PathLike) -> RunConfig:
    """Read one RegMix config file (ours or RegMix's own); the run name is the file's stem."""
    path = Path(path)
    return run_config_from_dict(read_yaml(path), path, path.stem)


_UMASK = os.umask(0)
os.umask(_UMASK)


def write_atomic(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file and rename, so a crash never leaves half a file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files owner-only; others on a shared sweep read them too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_run_config(config: RunConfig, path: str | os.PathLike) -> None:
    write_atomic(path, yaml.safe_dump(config.to_yaml_dict(), sort_keys=False, default_flow_style=False))


def _natural_key(path: Path) -> tuple:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.stem))


def run_config_paths(folder: str | os.PathLike) -> list[Path]:
    """Config files of a sweep folder in natural order (n2 before n10)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(folder, "not a folder of config files")
    paths = [p for p in folder.iterdir() if p.suffix in (".yaml", ".yml") and not p.name.startswith(".")]
    return sorted(paths, key=_natural_key)


def load_distribution(path: str | os.PathLike) -> tuple[Mixture, tuple[str, ...]]:
    """A token distribution from YAML/JSON, `{train: {train_<d>: x}, valid: {...}}` or a flat `{<d>: x}`
    (any scale), and the validation domains it names (its own domains when it names none)."""
    data = read_yaml(path)
    valid: Any = None
    if isinstance(data, dict) and isinstance(data.get("train"), dict):
        data, valid = data["train"], data.get("valid")
    if not isinstance(data, dict):
        raise ConfigError(path, "expected a mapping of domain -> token share")
    if valid is not None and not isinstance(valid, dict):
        raise ConfigError(path, "the 'valid:' section must map valid_<domain> to a weight")
    natural = Mixture.from_dict({_strip(str(k), TRAIN_PREFIX): v for k, v in data.items()}, path, normalize=True)
    return natural, tuple(_strip(str(k), VALID_PREFIX) for k in valid or {}) or natural.domains
