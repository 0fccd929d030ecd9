"""Training settings of a run, named as in RegMix's config files, with one registry of named presets
(litgpt's Config.from_name), and how settings are read: from files (`setting_value`, the one coercion
every file reader uses) and from command-line flags (`add_settings_arguments`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from regmix.core.files import ConfigError, did_you_mean
from regmix.train.models import model_problem


def setting_field(default: Any, help: str) -> Any:
    """A settings field with the help text its `--flag` shows (see add_settings_arguments)."""
    return field(default=default, metadata={"help": help})


@dataclass
class TrainingSettings:
    """Training settings of a run, named as in RegMix's config files (defaults: RegMix's 1M proxies)."""

    model_name: str = setting_field("tinyllama_1M", "model: a preset (tinyllama_demo, tinyllama_1M, tinyllama_60M, "
                                                    "tinyllama_1_1b), a litgpt model name (pythia-14m, SmolLM2-135M) "
                                                    "or a litgpt model_config.yaml; `regmix models` lists them with "
                                                    "their sizes")
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
    eval_tokens: int = setting_field(1_048_576, "validation tokens per valid domain and part (fixed, so runs compare)")
    probe_share: float = setting_field(0.5, "share of each valid domain's documents methods may measure (probes, "
                                            "choices, fits); runs are scored on the rest, held out (0: no split)")
    split_seed: int = setting_field(0, "seed of the split of the valid documents into probe and held-out parts")
    seed: int = setting_field(42, "seed of the weights and the data order")
    beta1: float = setting_field(0.9, "AdamW beta1 (TinyLlama's pre-training optimizer)")
    beta2: float = setting_field(0.95, "AdamW beta2")
    weight_decay: float = setting_field(0.1, "AdamW weight decay")
    grad_clip: float = setting_field(1.0, "gradient norm clipped to this, per model")

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> TrainingSettings:
        """A named preset (see PRESETS) with some fields overridden, as litgpt's Config.from_name."""
        if name not in PRESETS:
            raise ValueError(f"unknown training preset {name!r}{did_you_mean(name, PRESETS)}; presets: "
                             f"{sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def problems(self, spell: Callable[[str], str] = str) -> list[str]:
        """Every setting the trainer cannot work with, one line each; `spell` names a field as the input
        does (`--max-step` on a command line, `proxy.max_step` in an experiment)."""
        checks = [(getattr(self, name) > 0, name, "must be > 0") for name in
                  ("global_batch_size", "micro_batch_size", "max_step", "eval_step_interval", "save_step_interval",
                   "block_size", "eval_tokens", "grad_clip")]
        model = model_problem(self.model_name)
        checks += [(model is None, "model_name", model or ""),
                   (self.micro_batch_size <= 0 or self.global_batch_size % self.micro_batch_size == 0,
                    "global_batch_size", f"must be a multiple of {spell('micro_batch_size')} {self.micro_batch_size}"),
                   (0 < self.learning_rate < math.inf, "learning_rate", "must be > 0 and finite"),
                   (0 <= self.min_lr < math.inf, "min_lr", "must be >= 0 and finite"),
                   (self.lr_schedule != "cosine" or self.min_lr <= self.learning_rate, "min_lr",
                    f"must be at most {spell('learning_rate')} {self.learning_rate} (the cosine decays to it)"),
                   (self.lr_schedule in ("constant", "cosine"), "lr_schedule", "must be constant or cosine"),
                   (self.warmup_steps >= 0, "warmup_steps", "must be >= 0"),
                   (0 <= self.beta1 < 1, "beta1", "must be in [0, 1)"),
                   (0 <= self.beta2 < 1, "beta2", "must be in [0, 1)"),
                   (0 <= self.weight_decay < math.inf, "weight_decay", "must be >= 0 and finite"),
                   (0 <= self.seed < 2**63, "seed", "must be in [0, 2**63)"),
                   (0 <= self.probe_share < 1, "probe_share", "must be in [0, 1)"),
                   (0 <= self.split_seed < 2**63, "split_seed", "must be in [0, 2**63)"),
                   # beyond these no machine holds the tensors (torch would fail deep inside the run)
                   (self.block_size <= MAX_BLOCK_SIZE, "block_size", f"must be at most {MAX_BLOCK_SIZE}"),
                   (self.global_batch_size * self.block_size <= MAX_BATCH_TOKENS, "global_batch_size",
                    f"times {spell('block_size')} must be at most {MAX_BATCH_TOKENS:,} tokens a step")]
        return [f"{spell(name)} {problem}, got {getattr(self, name)!r}" for ok, name, problem in checks if not ok]

    def validate(self, source: str | os.PathLike, spell: Callable[[str], str] = str) -> None:
        """Raise one ConfigError naming `source` and every bad setting, before anything trains."""
        found = self.problems(spell)
        if found:
            raise ConfigError(source, "; ".join(found))


MAX_BLOCK_SIZE = 1 << 20
MAX_BATCH_TOKENS = 1 << 34


def flag_name(field_name: str) -> str:
    """How a settings field is spelled on the command line (add_settings_arguments): `--max-step`."""
    return "--" + field_name.replace("_", "-")


PRESETS: dict[str, TrainingSettings] = {
    # RegMix's published proxies: tinyllama_1M, 1000 steps of 512 x 2048 tokens, constant LR.
    "regmix_1m": TrainingSettings(),
    # The CPU demo: tinyllama_demo, 100 steps of 16 x 128 tokens, one evaluation at the end (the only one a
    # regression reads); about 7 s on one core. 200 steps (an evaluation at 100) made `make demo` 9 minutes.
    "demo": TrainingSettings(
        model_name="tinyllama_demo", global_batch_size=16, micro_batch_size=16, max_step=100,
        learning_rate=3e-3, min_lr=3e-4, warmup_steps=10, lr_schedule="cosine", eval_step_interval=100,
        save_step_interval=50, block_size=128, eval_tokens=16_384),
    # The demo with a tenth of its learning rate, for proxies whose ranking should transfer: "Can Small Training
    # Runs Reliably Guide Data Curation?" (Wang et al. 2025) finds that proxies trained with a small learning rate
    # rank data recipes as tuned large runs do (GPT-2 125M proxies at 1e-5 to 1e-6 against Pythia-1B, trained far
    # longer than our 100 steps). A tenth of the demo's rate. Measured by bench/proxy_lr_transfer.py on the default
    # corpus (8 mixtures, against tinyllama_1M tuned per mixture): it ranks worse than the demo's (Spearman 0.24
    # against 0.91; its pick costs 0.84 of loss): at 100 steps it has not learned the mixtures apart. With 300-step
    # proxies (`proxy: {preset: demo_low_lr, max_step: 300}`) it ranks better than the demo's rate (0.98 against
    # 0.93, both picking the target's best): an option for longer proxies, not the 100-step demo's default.
    "demo_low_lr": TrainingSettings(
        model_name="tinyllama_demo", global_batch_size=16, micro_batch_size=16, max_step=100,
        learning_rate=3e-4, min_lr=3e-5, warmup_steps=10, lr_schedule="cosine", eval_step_interval=100,
        save_step_interval=50, block_size=128, eval_tokens=16_384),
    # The large run: TinyLlama-1.1B recipe at RegMix's 25B-token scale.
    "large_1b": TrainingSettings(
        model_name="tinyllama_1_1b", global_batch_size=512, micro_batch_size=8, max_step=25_000,
        learning_rate=4e-4, min_lr=4e-5, warmup_steps=2_000, lr_schedule="cosine", eval_step_interval=1_000,
        save_step_interval=1_000),
    # The large run's path in seconds on a CPU: a tiny model, a few steps.
    "smoke": TrainingSettings(
        model_name="tinyllama_demo", global_batch_size=4, micro_batch_size=2, max_step=4, warmup_steps=1,
        eval_step_interval=2, save_step_interval=2, block_size=64, eval_tokens=512, learning_rate=4e-4,
        min_lr=4e-5, lr_schedule="cosine"),
    # The transfer check's target model: the 60M preset, 1000 steps of 64 x 1024 tokens.
    "transfer_60m": TrainingSettings(
        model_name="tinyllama_60M", max_step=1000, global_batch_size=64, micro_batch_size=8, block_size=1024,
        learning_rate=1e-3, min_lr=1e-4, lr_schedule="cosine", eval_step_interval=250),
}


def add_settings_arguments(parser: argparse._ActionsContainer, defaults: Any, skip: Sequence[str] = (),
                           only_given: str | None = None) -> None:
    """One `--flag` per field of a settings dataclass, defaulting to `defaults`' values.

    With `only_given` (where the defaults come from, in words), a flag left out is absent from the
    parsed arguments, so `settings_from_args` overrides only what the command line gives.
    """
    for f in dataclasses.fields(defaults):
        if f.name not in skip:
            value = getattr(defaults, f.name)
            shown = f"{only_given}, else {value}" if only_given else "%(default)s"
            parser.add_argument(flag_name(f.name), type=type(value),
                                default=argparse.SUPPRESS if only_given else value,
                                help=f"{f.metadata.get('help', f.name)} (default: {shown})")


def settings_from_args(defaults: Any, args: argparse.Namespace) -> Any:
    """`defaults` with every field that `args` has (the flags of add_settings_arguments)."""
    return dataclasses.replace(defaults, **{f.name: getattr(args, f.name) for f in dataclasses.fields(defaults)
                                            if hasattr(args, f.name)})


def parse_settings(items: Sequence[str], flag: str = "--setting") -> dict[str, Any]:
    """`KEY=VALUE` command-line settings; a value is JSON where it parses (numbers, lists), else a string."""
    settings = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError("command line", f"{flag} {item!r} is not KEY=VALUE")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def setting_value(key: str, value: Any, kind: Any, source: str | os.PathLike) -> Any:
    """A setting read from a file as its field's type, the one coercion of every file reader (run configs,
    experiments): `1e3` steps are 1000 and YAML's `800e9` a number; `1.5` steps, `true` steps or "yes" for a
    flag are refused. `kind` is a field's type (`int`, `float | None`, ...); other types pass unchecked."""
    options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
    if value is None and type(None) in options:
        return None
    containers = [typing.get_origin(k) or k for k in options if (typing.get_origin(k) or k) in (list, dict)]
    if any(isinstance(value, container) for container in containers):
        return value  # a list or mapping setting: its own check says what it must hold
    kind = next((k for k in options if k in (int, float, str, bool)), None)
    if kind is None:
        return value
    if kind is str:
        if isinstance(value, str):
            return value
    elif kind is bool:
        if isinstance(value, bool):
            return value
    elif not isinstance(value, bool):
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            number = None
        if number is not None and (kind is float or number.is_integer()):
            return kind(number)
    spelled = {int: "a whole number", float: "a number", bool: "true or false", str: "a string"}[kind]
    raise ConfigError(source, f"{key} must be {spelled}, got {value!r}")


def setting_types(settings: type) -> dict[str, Any]:
    """A settings dataclass's field types, resolved (the annotations are strings here)."""
    return typing.get_type_hints(settings)
