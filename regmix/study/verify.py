"""Does the optimum hold up? The seed noise of the proxies, and the optimum trained next to its baselines.

The sweep trains the natural and the uniform mixture with a few seeds each (anchors); the seed
standard deviation of their objective, pooled, is the noise floor the predicted gain of the optimum
is put next to. Verification trains the optimum as a proxy with the same seeds and compares it with
the anchors: predicted vs achieved objective, the seed spread, and per valid domain the change
against natural (wins and losses). The rule, stated: the optimum beats a baseline "beyond the
spread" when the gap between their mean objectives exceeds the larger of their two seed standard
deviations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from regmix.core.objective import Objective


@dataclass(frozen=True)
class SeedRuns:
    """One mixture's runs with several seeds: objective per seed and mean loss per valid domain."""

    name: str
    objectives: tuple[float, ...]
    domain_losses: dict[str, float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.objectives))

    @property
    def std(self) -> float:
        return float(np.std(self.objectives, ddof=1)) if len(self.objectives) > 1 else float("nan")


def seed_runs(name: str, losses: Sequence[Mapping[str, float]], objective: Objective) -> SeedRuns:
    """One mixture's finished runs (their valid losses, one record per seed) as SeedRuns."""
    if not losses:
        raise ValueError(f"no finished run of {name} to compare")
    domains = list(losses[0])
    return SeedRuns(name, tuple(objective.value(record) for record in losses),
                    {d: float(np.mean([record[d] for record in losses])) for d in domains})


def noise_floor(anchors: Sequence[SeedRuns]) -> float:
    """The seed standard deviation of the objective, pooled over the anchors (nan with one seed each)."""
    deviations = [(np.array(a.objectives) - a.mean) for a in anchors if len(a.objectives) > 1]
    dof = sum(len(d) - 1 for d in deviations)
    return float(np.sqrt(sum((d ** 2).sum() for d in deviations) / dof)) if dof else float("nan")


def beats(optimum: SeedRuns, baseline: SeedRuns) -> bool:
    """Lower mean objective by more than the larger seed std of the two (see the module docstring)."""
    spread = np.nanmax([optimum.std, baseline.std, 0.0])
    return bool(baseline.mean - optimum.mean > spread)


def verification(optimum: SeedRuns, baselines: Sequence[SeedRuns], predicted: float | None) -> dict[str, Any]:
    """The table of report.json: every mixture's mean, std and per-domain losses; wins against natural."""
    natural = next((b for b in baselines if b.name == "natural"), None)
    changes = {d: optimum.domain_losses[d] - natural.domain_losses[d] for d in optimum.domain_losses} if natural \
        else {}
    return {"predicted": predicted, "seeds": len(optimum.objectives),
            "mixtures": {s.name: {"mean": round(s.mean, 6), "std": round(s.std, 6), "objectives": list(s.objectives),
                                  "domain_losses": s.domain_losses} for s in (optimum, *baselines)},
            "beats": {b.name: beats(optimum, b) for b in baselines},
            "change_vs_natural": changes, "wins": sum(c < 0 for c in changes.values()),
            "losses": sum(c > 0 for c in changes.values())}


def format_verification(table: Mapping[str, Any], models: str = "proxies") -> list[str]:
    """The verification table and its verdict, in words (`models`: what was trained, for the heading)."""
    lines = [f"verification ({table['seeds']} seeds, {models}):   {'mean':>10}{'seed std':>10}"]
    for name, row in table["mixtures"].items():
        lines.append(f"  {name:<32}{row['mean']:>10.4f}{row['std']:>10.4f}")
    if table["predicted"] is not None:
        achieved = table["mixtures"]["optimal"]["mean"]
        lines.append(f"  predicted optimum {table['predicted']:.4f}, achieved {achieved:.4f}")
    if table["change_vs_natural"]:
        changes = table["change_vs_natural"]
        won = ", ".join(f"{d} {c:+.3f}" for d, c in sorted(changes.items(), key=lambda kv: kv[1]) if c < 0)
        lost = ", ".join(f"{d} {c:+.3f}" for d, c in sorted(changes.items(), key=lambda kv: -kv[1]) if c > 0)
        lines.append(f"  per domain against natural: the optimum wins {table['wins']} ({won or 'none'}), loses "
                     f"{table['losses']} ({lost or 'none'})")
    lost = [name for name, won in table["beats"].items() if not won]
    lines.append("  the optimum beats " + ", ".join(table["beats"]) + " beyond the seed spread" if not lost else
                 f"  the optimum does NOT beat {', '.join(lost)} beyond the seed spread")
    return lines


def gain_against_floor(natural: SeedRuns, predicted: float, floor: float) -> str:
    """One line: the predicted gain of the optimum over natural next to the proxies' noise floor."""
    gain = natural.mean - predicted
    verdict = "below the noise floor: the sweep cannot tell it from natural" if not gain > floor else \
        "above the noise floor"
    return f"predicted gain over natural {gain:+.4f} vs seed noise floor {floor:.4f}: {verdict}"
