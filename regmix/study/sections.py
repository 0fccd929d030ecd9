"""Settings sections of an experiment file: a YAML mapping applied to a settings dataclass, and how the file
names a setting in an error. Shared by the experiment (regmix.study.experiment) and its larger scales
(regmix.study.scales)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from regmix.core.files import ConfigError, did_you_mean
from regmix.settings.training import setting_types, setting_value


def apply_section(base: Any, data: Any, source: Path, name: str) -> Any:
    """`base` with the keys of one YAML section applied; unknown keys and bad types name the file."""
    if not isinstance(data, dict):
        raise ConfigError(source, f"'{name}:' must be a mapping")
    known = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(source, f"unknown key{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))} in '{name}:'"
                                  f"{did_you_mean(unknown[0], known)}; known: {sorted(known)}")
    values, kinds = {}, setting_types(type(base))
    for key, value in data.items():
        if isinstance(getattr(base, key), list) and isinstance(value, str):
            value = [value]
        values[key] = setting_value(f"'{name}.{key}'", value, kinds[key], source)
    return dataclasses.replace(base, **values)


def section_spelling(section: str) -> Callable[[str], str]:
    """How an experiment file names a setting of one of its sections: `'proxy.max_step'`."""
    return lambda name: f"'{section}.{name}'"
