"""Does the optimum hold up? The seed noise of the proxies, and the optimum trained next to its baselines.

The sweep trains the natural and the uniform mixture with a few seeds each (anchors); the seed
standard deviation of their objective, pooled, is the noise floor the predicted gain of the optimum
is put next to before verification (the optimum's own spread may be larger: it is measured by the
verification, not assumed). Verification trains the optimum as a proxy with the same seeds and
compares it with the anchors, every figure on the held-out validation part: predicted against achieved
gain over natural, the seed spread, and per valid domain the change against natural.

The rule, stated: Welch's t-test (unequal variances), one-sided, at `significance` (0.05). The optimum
*wins* against a baseline when its mean objective is lower with p < significance, *loses* when higher
with p < significance, and is *undecided* otherwise; the runner adds seeds to the undecided pairs up to
a seed budget (simulation.max_seeds). Adding seeds until the test decides is a sequential test: its
false-win rate is somewhat above the nominal level (at most a few points at these budgets); the seeds
it needed are reported with the verdict.
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


def welch_p(optimum: SeedRuns, baseline: SeedRuns) -> float:
    """One-sided p-value of Welch's t-test that the optimum's mean objective is below the baseline's (nan without
    two seeds each; 0 or 1 when both are exactly repeatable)."""
    a, b = np.array(optimum.objectives), np.array(baseline.objectives)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if a.var() == 0 and b.var() == 0:
        return 0.0 if a.mean() < b.mean() else 1.0
    from scipy.stats import ttest_ind  # SciPy: not needed for the commands' --help

    return float(ttest_ind(a, b, equal_var=False, alternative="less").pvalue)


def verdict(optimum: SeedRuns, baseline: SeedRuns, significance: float = 0.05) -> str:
    """wins, loses or undecided, by Welch's test (module docstring)."""
    p = welch_p(optimum, baseline)
    return "wins" if p < significance else "loses" if 1 - p < significance else "undecided"


def gain_check(optimum: SeedRuns, natural: SeedRuns, predicted_gain: float) -> dict[str, Any]:
    """Predicted against achieved gain over natural, and whether the prediction was optimistic: above the achieved
    gain's one-sided 95% upper bound (mean difference + 1.645 standard errors)."""
    achieved = natural.mean - optimum.mean
    error = float(np.sqrt(np.nan_to_num(optimum.std) ** 2 / len(optimum.objectives)
                          + np.nan_to_num(natural.std) ** 2 / len(natural.objectives)))
    return {"predicted": predicted_gain, "achieved": achieved, "standard_error": error,
            "optimistic": bool(predicted_gain > achieved + 1.645 * error)}


def verification(optimum: SeedRuns, baselines: Sequence[SeedRuns], predicted: float | None,
                 significance: float = 0.05, predicted_gain: float | None = None,
                 measured: float | None = None) -> dict[str, Any]:
    """The table of report.json: every mixture's mean, std and per-domain losses; the verdicts; wins against
    natural; predicted against achieved gain (`predicted_gain`: over natural, on the part the method measured);
    `measured`: the optimum's mean objective on that part (what `predicted` predicts)."""
    natural = next((b for b in baselines if b.name == "natural"), None)
    changes = {d: optimum.domain_losses[d] - natural.domain_losses[d] for d in optimum.domain_losses} if natural \
        else {}
    verdicts = {b.name: verdict(optimum, b, significance) for b in baselines}
    return {"predicted": predicted, "measured": measured, "seeds": len(optimum.objectives), "test": "welch",
            "significance": significance,
            "mixtures": {s.name: {"mean": round(s.mean, 6), "std": round(s.std, 6), "objectives": list(s.objectives),
                                  "domain_losses": s.domain_losses} for s in (optimum, *baselines)},
            "verdicts": verdicts, "p_values": {b.name: welch_p(optimum, b) for b in baselines},
            "beats": {name: v == "wins" for name, v in verdicts.items()},
            "gain": None if natural is None or predicted_gain is None else gain_check(optimum, natural, predicted_gain),
            "change_vs_natural": changes, "wins": sum(c < 0 for c in changes.values()),
            "losses": sum(c > 0 for c in changes.values())}


def format_verification(table: Mapping[str, Any], models: str = "proxies") -> list[str]:
    """The verification table and its verdict, in words (`models`: what was trained, for the heading)."""
    lines = [f"verification ({models}, held-out part):  {'mean':>11}{'seed std':>10}{'seeds':>7}"]
    for name, row in table["mixtures"].items():
        lines.append(f"  {name:<32}{row['mean']:>10.4f}{row['std']:>10.4f}{len(row['objectives']):>7}")
    if table["predicted"] is not None:
        achieved = table["mixtures"]["optimal"]["mean"]
        measured = table.get("measured")
        probed = "" if measured is None else f"{measured:.4f} on the part methods measure, "
        lines.append(f"  predicted optimum {table['predicted']:.4f}, achieved {probed}{achieved:.4f} held out")
    gain = table.get("gain")
    if gain:
        lines.append(f"  gain over natural: predicted {gain['predicted']:+.4f}, achieved {gain['achieved']:+.4f} "
                     f"± {gain['standard_error']:.4f}" + (": the prediction was OPTIMISTIC" if gain["optimistic"]
                                                          else ""))
    if table["change_vs_natural"]:
        changes = table["change_vs_natural"]
        won = ", ".join(f"{d} {c:+.3f}" for d, c in sorted(changes.items(), key=lambda kv: kv[1]) if c < 0)
        lost = ", ".join(f"{d} {c:+.3f}" for d, c in sorted(changes.items(), key=lambda kv: -kv[1]) if c > 0)
        lines.append(f"  per domain against natural: the optimum wins {table['wins']} ({won or 'none'}), loses "
                     f"{table['losses']} ({lost or 'none'})")
    verdicts = table.get("verdicts") or {n: "wins" if won else "undecided" for n, won in table["beats"].items()}
    p_values = table.get("p_values", {})
    said = {"wins": "beats", "loses": "is WORSE than", "undecided": "does NOT beat"}
    test = f"Welch's t-test, one-sided, p < {table['significance']:g}" if "significance" in table else "seed spread"
    if p_values and not any(np.isfinite(p) for p in p_values.values()):
        lines.append(f"  verdict: none, a test needs 2 seeds of each mixture ({table['seeds']} of the optimum here)")
        return lines
    lines.append(f"  verdict ({test}, {table['seeds']} seeds of the optimum): " + "; ".join(
        f"{said[v]} {n}" + (f" (p = {p_values[n]:.3f})" if n in p_values and np.isfinite(p_values[n]) else "")
        for n, v in verdicts.items()))
    return lines


def gain_against_floor(natural: SeedRuns, predicted: float, floor: float) -> str:
    """One line: the predicted gain of the optimum over natural next to the anchors' noise floor (before
    verification; the optimum's own seed spread may be larger)."""
    gain = natural.mean - predicted
    said = "below the anchors' noise floor: the sweep cannot tell it from natural" if not gain > floor else \
        "above the anchors' noise floor (the optimum's own spread is measured by the verification)"
    return f"predicted gain over natural {gain:+.4f} vs seed noise floor {floor:.4f}: {said}"
