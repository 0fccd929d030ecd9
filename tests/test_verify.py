"""The noise floor of the anchors and the verification verdict: their formulas and their words."""

from __future__ import annotations

import numpy as np
import pytest

from regmix.core.objective import Objective
from regmix.study.verify import (
    SeedRuns,
    format_verification,
    gain_against_floor,
    noise_floor,
    seed_runs,
    verdict,
    verification,
    welch_p,
)

OBJECTIVE = Objective({"x": 1.0, "y": 1.0})


def runs(*losses: tuple[float, float]) -> list[dict[str, float]]:
    """Each seed's valid losses."""
    return [{"x": x, "y": y} for x, y in losses]


def test_noise_floor_is_the_pooled_seed_std():
    natural = seed_runs("natural", runs((3.0, 3.2), (3.1, 3.3), (2.9, 3.1)), OBJECTIVE)
    uniform = seed_runs("uniform", runs((3.0, 3.0), (3.2, 3.2)), OBJECTIVE)
    assert natural.objectives == pytest.approx((3.1, 3.2, 3.0)) and natural.mean == pytest.approx(3.1)
    deviations = np.array([0.0, 0.1, -0.1, -0.1, 0.1])
    assert noise_floor([natural, uniform]) == pytest.approx(np.sqrt((deviations ** 2).sum() / 3))


def test_the_verdict_is_welchs_one_sided_test():
    from scipy.stats import ttest_ind

    optimum = seed_runs("optimal", runs((2.9, 3.0), (2.95, 3.05), (2.92, 3.0)), OBJECTIVE)
    close = seed_runs("natural", runs((3.0, 3.0), (2.9, 3.02), (3.05, 2.98)), OBJECTIVE)  # within the noise
    far = seed_runs("uniform", runs((3.2, 3.2), (3.3, 3.3), (3.25, 3.2)), OBJECTIVE)
    worse = seed_runs("worse", runs((2.5, 2.5), (2.52, 2.5), (2.49, 2.5)), OBJECTIVE)
    expected = ttest_ind(optimum.objectives, close.objectives, equal_var=False, alternative="less").pvalue
    assert welch_p(optimum, close) == pytest.approx(expected)
    assert (verdict(optimum, close), verdict(optimum, far), verdict(optimum, worse)) == ("undecided", "wins", "loses")
    assert np.isnan(welch_p(seed_runs("one", runs((1.0, 1.0)), OBJECTIVE), far))  # one seed: no test
    table = verification(optimum, [close, far], predicted=5.9, predicted_gain=0.2)
    assert table["beats"] == {"natural": False, "uniform": True}
    assert table["verdicts"] == {"natural": "undecided", "uniform": "wins"}
    assert table["wins"] == 1 and table["losses"] == 1  # x is lower than natural's, y higher
    assert table["gain"]["achieved"] == pytest.approx(close.mean - optimum.mean)
    assert table["gain"]["optimistic"]  # 0.2 predicted, about 0.03 achieved
    text = "\n".join(format_verification(table))
    assert "does NOT beat natural" in text and "beats uniform" in text and "predicted optimum 5.9000" in text
    assert "the prediction was OPTIMISTIC" in text and "Welch" in text
    honest = verification(optimum, [close, far], predicted=5.9, predicted_gain=0.03)
    assert not honest["gain"]["optimistic"]


def test_a_gain_below_the_floor_is_said_plainly():
    natural = seed_runs("natural", runs((3.0, 3.0), (3.1, 3.1)), OBJECTIVE)
    assert "below the anchors' noise floor" in gain_against_floor(natural, predicted=3.04, floor=0.07)
    assert "above the anchors' noise floor" in gain_against_floor(natural, predicted=2.8, floor=0.07)
    with pytest.raises(ValueError, match="no finished run of optimal"):
        seed_runs("optimal", [], OBJECTIVE)


def test_report_md_bottom_line_says_what_to_train():
    from regmix.study.report import bottom_line

    objective = Objective({"web": 1.0})

    def runs(name: str, losses: list[float]) -> SeedRuns:
        return seed_runs(name, [{"web": v} for v in losses], objective)

    baselines = [runs("natural", [3.30, 3.31, 3.32]), runs("uniform", [3.20, 3.21, 3.19])]
    wins = verification(runs("optimal", [3.10, 3.11, 3.09]), baselines, 3.08)
    line = bottom_line({"method": "regmix", "predicted_loss": 3.08, "verification": wins})
    assert line.startswith("Use the regmix optimum: 3.1000 ± 0.0100 beats natural 3.3100")
    ties = verification(runs("optimal", [3.19, 3.25, 3.16]), baselines, 3.08)
    line = bottom_line({"method": "regmix", "predicted_loss": 3.08, "verification": ties})
    assert line.startswith("The regmix optimum (3.2000 ± 0.0458) does not beat uniform (3.2000 ± 0.0100)")
    assert "add seeds (simulation.max_seeds) or proxies to decide" in line
    unverified = bottom_line({"method": "bo", "predicted_loss": 3.08})
    assert unverified.startswith("Not verified") and "simulation.verify" in unverified
