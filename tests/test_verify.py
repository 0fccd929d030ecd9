"""The noise floor of the anchors and the verification verdict: their formulas and their words."""

from __future__ import annotations

import numpy as np
import pytest

from regmix.core.objective import Objective
from regmix.study.verify import beats, format_verification, gain_against_floor, noise_floor, seed_runs, verification

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


def test_the_optimum_beats_a_baseline_only_beyond_the_larger_seed_std():
    optimum = seed_runs("optimal", runs((2.9, 3.0), (2.95, 3.05)), OBJECTIVE)  # mean 2.975, std 0.035
    close = seed_runs("natural", runs((3.0, 3.0), (3.0, 3.02)), OBJECTIVE)  # 0.03 better: within the spread
    far = seed_runs("uniform", runs((3.2, 3.2), (3.3, 3.3)), OBJECTIVE)  # mean 3.25, std 0.07
    assert not beats(optimum, close) and beats(optimum, far)
    table = verification(optimum, [close, far], predicted=2.95)
    assert table["beats"] == {"natural": False, "uniform": True}
    assert table["wins"] == 1 and table["losses"] == 1  # x is lower than natural's, y higher
    text = "\n".join(format_verification(table))
    assert "does NOT beat natural beyond the seed spread" in text and "predicted optimum 2.9500" in text


def test_a_gain_below_the_floor_is_said_plainly():
    natural = seed_runs("natural", runs((3.0, 3.0), (3.1, 3.1)), OBJECTIVE)
    assert "below the noise floor" in gain_against_floor(natural, predicted=3.04, floor=0.07)
    assert "above the noise floor" in gain_against_floor(natural, predicted=2.8, floor=0.07)
    with pytest.raises(ValueError, match="no finished run of optimal"):
        seed_runs("optimal", [], OBJECTIVE)
