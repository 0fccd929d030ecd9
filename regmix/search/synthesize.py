"""Mixture synthesis: RegMix's random proxy mixtures around the corpus' natural token distribution.

Published algorithm, vectorised: prior ** temperature, Dirichlet(prior * strength) with a strength
drawn per sample from log-spaced values, rejection of samples over the per-domain epoch bound,
sparsify + round to MINIMUM, de-duplicate, choose N at random.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from regmix.cli import ArgumentParser, integer_at_least, run_command
from regmix.core.files import ConfigError, check_output_folder, did_you_mean
from regmix.core.mixture import Mixture, load_distribution
from regmix.core.schema import safe_name
from regmix.core.space import usage_bounds
from regmix.data.corpus import unvalidated_warning
from regmix.settings.run_config import SAMPLING_KEYS, RunConfig, save_run_config
from regmix.settings.training import (
    TrainingSettings,
    add_settings_arguments,
    flag_name,
    setting_field,
    settings_from_args,
)

PRESETS = ("the_pile",)
MAX_UNITS = 1e9  # 1/minimum: weights in these units must fit the int64 de-duplication


@dataclass(frozen=True)
class SynthesisSettings:
    """Sampling constants; defaults are the published values."""

    temperature: float = setting_field(0.5, "prior = natural distribution ** temperature")
    min_strength: float = setting_field(0.1, "smallest Dirichlet strength (multiplies the prior)")
    max_strength: float = setting_field(5.0, "largest Dirichlet strength")
    num_strengths: int = setting_field(15, "log-spaced strengths between the two")
    maximum_usage: float = setting_field(15.0, "epochs a domain may be repeated: weight <= natural share x this")
    minimum: float = setting_field(2e-4, "weights below it become 0; weights are multiples of it")
    sample_multiplier: int = setting_field(100, "candidates drawn per config asked for, before rejection")
    seed: int = setting_field(42, "seed of the synthesis, also written as each run's seed")

    def as_config(self) -> dict[str, float | int]:
        """The settings recorded in each config file (RegMix's key names; `seed` is the run's seed)."""
        return {k: getattr(self, k) for k in SAMPLING_KEYS}

    def problems(self, spell: Callable[[str], str] = str, domains: int | None = None) -> list[str]:
        """Every constant the algorithm cannot work with, one line each (`spell`: as TrainingSettings').

        Weights are rounded to multiples of `minimum` that must still sum to 1, so 1/minimum is a whole
        number; with `domains` known it is at least their count, or a draw could lose every weight.
        """
        units = 1 / self.minimum if 0 < self.minimum <= 1 else math.nan
        checks = [(0 < self.temperature < math.inf, "temperature", "must be > 0 and finite"),
                  (0 < self.min_strength < math.inf, "min_strength", "must be > 0 and finite"),
                  (self.min_strength <= self.max_strength < math.inf, "max_strength",
                   f"must be >= {spell('min_strength')} and finite"),
                  (self.num_strengths >= 1, "num_strengths", "must be >= 1"),
                  (0 < self.maximum_usage < math.inf, "maximum_usage", "must be > 0 and finite"),
                  (units <= MAX_UNITS and abs(units - round(units)) <= 1e-6 * units, "minimum",
                   f"must be 1/k for a whole number k <= {MAX_UNITS:.0e} (weights are multiples of it and sum to "
                   "1; published: 0.0002 = 1/5000)"),
                  (domains is None or not units < domains, "minimum",
                   f"must be at most 1/{domains} for {domains} domains (a draw could lose every weight)"),
                  (self.sample_multiplier >= 1, "sample_multiplier", "must be >= 1"),
                  (0 <= self.seed < 2**63, "seed", "must be in [0, 2**63)")]
        return [f"{spell(name)} {problem}, got {getattr(self, name)!r}" for ok, name, problem in checks if not ok]

    def validate(self, source: str | os.PathLike, spell: Callable[[str], str] = str,
                 domains: int | None = None) -> None:
        """Raise one ConfigError naming `source` and every bad constant."""
        found = self.problems(spell, domains)
        if found:
            raise ConfigError(source, "; ".join(found))


def tempered_prior(natural: np.ndarray, temperature: float) -> np.ndarray:
    prior = natural ** temperature
    return prior / prior.sum()


def draw_dirichlet(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One Dirichlet draw per row of `alpha` (rows that underflow to all zeros are dropped)."""
    gamma = rng.standard_gamma(alpha)
    total = gamma.sum(axis=1, keepdims=True)
    keep = total[:, 0] > 0
    return gamma[keep] / total[keep]


def draw_mixtures(natural: np.ndarray, count: int, settings: SynthesisSettings,
                  rng: np.random.Generator) -> np.ndarray:
    """`count` raw draws from the synthesis prior, with the ones over their bound rejected."""
    prior = tempered_prior(natural, settings.temperature)
    strengths = np.logspace(np.log10(settings.min_strength), np.log10(settings.max_strength),
                            settings.num_strengths)
    chosen = strengths[rng.integers(0, len(strengths), size=count)]
    weights = draw_dirichlet(chosen[:, None] * prior[None, :], rng)
    return weights[(weights <= usage_bounds(natural, settings.maximum_usage)).all(axis=1)]


def sparsify(weights: np.ndarray, minimum: float) -> np.ndarray:
    """Zero weights under `minimum`, renormalise, round to multiples of it keeping the sum at 1."""
    weights = np.where(weights < minimum, 0.0, weights)
    weights = weights / weights.sum(axis=1, keepdims=True)
    units = np.rint(weights / minimum)
    total_units = int(round(1.0 / minimum))
    largest = units.argmax(axis=1)
    units[np.arange(len(units)), largest] += total_units - units.sum(axis=1)
    return units * minimum


def synthesize(natural: Mixture, num_configs: int, settings: SynthesisSettings = SynthesisSettings()
               ) -> list[Mixture]:
    """`num_configs` distinct proxy mixtures around the natural token distribution."""
    found = settings.problems(domains=len(natural.domains))
    if num_configs <= 0:
        found.append(f"num_configs must be > 0, got {num_configs}")
    if found:
        raise ValueError("; ".join(found))
    rng = np.random.default_rng(settings.seed)
    prior = natural.weights / natural.weights.sum()
    weights = sparsify(draw_mixtures(prior, num_configs * settings.sample_multiplier, settings, rng),
                       settings.minimum)
    # rounding can push the largest weight below 0 when 1/minimum is near the number of domains
    weights = weights[((weights >= 0) & (weights <= usage_bounds(prior, settings.maximum_usage) + 1e-12)).all(axis=1)]
    units = np.unique(np.rint(weights / settings.minimum).astype(np.int64), axis=0)
    if len(units) < num_configs:
        raise ValueError(f"only {len(units)} distinct mixtures pass the bounds, {num_configs} asked for: "
                         "raise --maximum-usage or --sample-multiplier")
    picked = units[np.sort(rng.choice(len(units), size=num_configs, replace=False))]
    rng.shuffle(picked)
    return [Mixture(natural.domains, row * settings.minimum) for row in picked]


def write_configs(mixtures: Sequence[Mixture], valid: Sequence[str], folder: Path,
                  training: TrainingSettings, settings: SynthesisSettings, replace: bool = False) -> list[Path]:
    """One RegMix config file per mixture: n1.yaml, n2.yaml, ...

    A folder that already holds n<i>.yaml configs is refused unless `replace` (which removes them
    first): a leftover n<i>.yaml of an older synthesis would otherwise join the sweep.
    """
    old = [p for p in folder.glob("n*.yaml") if re.fullmatch(r"n\d+\.yaml", p.name)] if folder.is_dir() else []
    if old and not replace:
        raise ConfigError(folder, f"already holds {len(old)} configs (n<i>.yaml); pass --replace to remove them "
                                  "first, or write to a new folder")
    for path in old:
        path.unlink()
    paths = []
    for i, mixture in enumerate(mixtures, start=1):
        path = folder / f"n{i}.yaml"
        save_run_config(RunConfig(path.stem, mixture, tuple(valid), training, settings.as_config()), path)
        paths.append(path)
    return paths


def plot_weights(mixtures: Sequence[Mixture], natural: Mixture, path: Path) -> None:
    """Per-domain spread of the sampled weights against the natural share."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    weights = np.stack([m.weights for m in mixtures])
    fig, ax = plt.subplots(figsize=(max(6, 0.55 * len(natural.domains)), 4.5))
    ax.boxplot([weights[:, j] for j in range(weights.shape[1])], showfliers=True,
               flierprops={"markersize": 2})
    ax.scatter(np.arange(1, len(natural.domains) + 1), natural.weights, color="crimson", zorder=3,
               label="natural token share")
    ax.set_xticks(np.arange(1, len(natural.domains) + 1), natural.domains, rotation=60, ha="right")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.set_ylim(0, 1)
    ax.set_ylabel("sampled weight")
    ax.set_title(f"{len(mixtures)} synthesized mixtures")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def load_prior(source: str) -> tuple[Mixture, tuple[str, ...]]:
    """Natural distribution and validation domains from a manifest, a YAML/JSON file or a preset name (a missing
    file whose name is near a preset's is more likely the preset misspelled: the error says which)."""
    path = Path(str(resources.files("regmix") / "presets" / f"{source}.yaml")) if source in PRESETS else Path(source)
    if not path.exists():
        raise ConfigError(source, f"no such file or folder, nor a preset{did_you_mean(source, PRESETS)}; presets: "
                                  f"{', '.join(PRESETS)}")
    if path.is_dir() or path.name == "manifest.json":
        from regmix.data.corpus import load_manifest
        manifest = load_manifest(path)
        natural, valid = manifest.token_distribution(), manifest.valid_domains
    else:
        natural, valid = load_distribution(path)
    for domain in natural.domains + tuple(valid):
        safe_name(domain, "domain", path)
    return natural, tuple(valid)


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m regmix.synthesize", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prior", default="the_pile",
                   help=f"prepared corpus folder (its manifest), a YAML/JSON token distribution, or a preset: "
                        f"{PRESETS} (default: %(default)s)")
    p.add_argument("--output", type=Path, default=Path("mixture_config/config_1m"),
                   help="folder for n<i>.yaml (default: %(default)s)")
    p.add_argument("--num-configs", type=integer_at_least(1, 10**6), default=512,
                   help="how many configs to write (default: %(default)s)")
    p.add_argument("--replace", action="store_true",
                   help="remove the n<i>.yaml configs already in --output first (their old runs are then "
                        "reported as another mixture's, never reused)")
    p.add_argument("--plot", action="store_true", help="save weights.png with the sampled weights per domain")
    p.add_argument("--valid", nargs="*", help="validation domains (default: those of the prior)")
    add_settings_arguments(p.add_argument_group("sampling (published defaults)"), SynthesisSettings())
    add_settings_arguments(p.add_argument_group("training settings written into each config"),
                           TrainingSettings(), skip=("seed",))
    return p


def main(argv: Sequence[str] | None = None) -> list[Path]:
    """Write the configs; a bad flag or prior raises ConfigError naming it before anything is written."""
    args = _parser().parse_args(argv)
    settings = settings_from_args(SynthesisSettings(), args)
    training = dataclasses.replace(settings_from_args(TrainingSettings(), args), seed=settings.seed)
    valid = [safe_name(domain, "validation domain", "--valid") for domain in args.valid or ()]
    natural, prior_valid = load_prior(args.prior)
    settings.validate("command line", flag_name, domains=len(natural.domains))
    training.validate("command line", flag_name)
    check_output_folder(args.output)
    mixtures = synthesize(natural, args.num_configs, settings)
    paths = write_configs(mixtures, valid or prior_valid, args.output, training, settings, args.replace)
    print(f"wrote {len(paths)} configs to {args.output}/")
    warning = None if args.valid else unvalidated_warning([d for d in natural.domains if d not in prior_valid])
    if warning:
        print(warning, file=sys.stderr)
    if args.plot:
        plot_weights(mixtures, natural, args.output / "weights.png")
        print(f"plot: {args.output / 'weights.png'}")
    return paths


if __name__ == "__main__":
    raise SystemExit(run_command(main))
