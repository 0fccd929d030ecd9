"""Online policies: each update on hand-made losses gives the mixture its formula says, probes draw exact
counts, and weights stay on the simplex (never NaN) on constant or diverging losses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from regmix.config import RunConfig, TrainingSettings
from regmix.data.sampler import exact_counts
from regmix.files import ConfigError
from regmix.mixture import Mixture
from regmix.online import make_policy
from regmix.online.aioli import Aioli, AioliSettings, interaction_matrix, smoothed_one_hot
from regmix.train.sweep import train_proxies

DOMAINS = ("a", "b", "c")


def drive(policy: Aioli, losses_at: list[dict[str, float]], steps: range) -> list[Mixture | None]:
    """Call on_interval at `steps`, each measurement returning the next scripted losses."""
    script = iter(losses_at)
    return [policy.on_interval(step, {}, lambda: next(script)) for step in steps]


def test_aioli_round_gives_the_mixture_of_its_formula():
    settings = AioliSettings(update_steps=20, sweeps=1, lp_steps=2, one_hot_factor=0.6, eta=0.5, ema=-1, seed=0)
    policy = Aioli(Mixture.uniform(DOMAINS), settings)
    order = [int(j) for j in np.random.default_rng([0, 0]).permutation(3)]
    # losses of the valid domains x and y before the round and after each probe
    measured = [{"x": 3.0, "y": 4.0}, {"x": 2.8, "y": 3.9}, {"x": 2.7, "y": 3.6}, {"x": 2.65, "y": 3.55}]
    mixtures = drive(policy, measured, range(0, 8, 2))
    for probe, j in enumerate(order):  # each probe trains the smoothed one-hot of the domain in turn
        np.testing.assert_allclose(mixtures[probe].weights, smoothed_one_hot(3, j, 0.6))
    G = np.zeros((2, 3))
    for k, j in enumerate(order):
        G[:, j] = [measured[k]["x"] - measured[k + 1]["x"], measured[k]["y"] - measured[k + 1]["y"]]
    W = np.array([[0.6, 0.2, 0.2], [0.2, 0.6, 0.2], [0.2, 0.2, 0.6]])
    A = np.linalg.solve(W, G.T).T
    A = (A - min(A.min(), 0)) / (A - min(A.min(), 0)).sum()
    expected = np.full(3, 1 / 3) * np.exp(0.5 * A.sum(axis=0))
    np.testing.assert_allclose(mixtures[3].weights, expected / expected.sum())
    assert drive(policy, [], range(8, 20, 2)) == [None] * 6  # the rest of the round trains on p


def test_aioli_moving_average_update_is_a_softmax_of_the_averaged_column_sums():
    G1, G2 = np.array([[0.3, 0.1], [0.2, 0.0]]), np.array([[0.0, 0.4], [0.1, 0.1]])
    A1, A2 = interaction_matrix(G1, 0.625), interaction_matrix(G2, 0.625)
    policy = Aioli(Mixture.uniform(("a", "b")), AioliSettings(update_steps=10, sweeps=1, lp_steps=1,
                                                                 one_hot_factor=0.625, eta=0.2, ema=0.1))
    policy._update(G1)
    policy._update(G2)
    E = 0.9 * A2 + 0.1 * A1
    expected = np.exp(0.2 * E.sum(axis=0))
    np.testing.assert_allclose(policy.weights, expected / expected.sum())


@pytest.mark.parametrize("kind", ["constant", "diverging", "nan"])
def test_aioli_weights_stay_on_the_simplex(kind):
    policy = Aioli(Mixture.uniform(DOMAINS), AioliSettings(update_steps=8, sweeps=1, lp_steps=1, ema=-1, eta=5.0))
    values = {"constant": lambda t: 2.0, "diverging": lambda t: 2.0 * 10.0 ** t,
              "nan": lambda t: float("nan") if t > 3 else 1.0}[kind]
    losses = [{"x": values(t), "y": values(t) + 1} for t in range(40)]
    for step in range(40):
        mixture = policy.on_interval(step, {}, lambda t=step: losses[t]) or Mixture(DOMAINS, policy.weights)
        assert np.isfinite(mixture.weights).all() and mixture.weights.sum() == pytest.approx(1.0)
        assert (mixture.weights >= 0).all()


def test_aioli_probes_draw_exactly_their_counts(tiny_corpus, tmp_path, monkeypatch):
    settings = TrainingSettings(model_name="tinyllama_demo", global_batch_size=8, micro_batch_size=4, max_step=12,
                                warmup_steps=1, eval_step_interval=12, block_size=32, eval_tokens=128, seed=1)
    policy = {"policy": "aioli", "update_steps": 12, "lp_steps": 2, "sweeps": 1, "one_hot_factor": 0.55}
    start = Mixture.from_dict({"alpha": 0.4, "beta": 0.3, "gamma": 0.2, "delta": 0.1})
    seen: list[tuple[int, dict[str, int], Mixture | None]] = []
    original = Aioli.on_interval

    def recording(self, step, counts, measure):
        chosen = original(self, step, counts, measure)
        seen.append((step, dict(counts), chosen))
        return chosen

    monkeypatch.setattr(Aioli, "on_interval", recording)
    result = train_proxies([RunConfig("aioli", start, ("alpha", "beta", "gamma"), settings, policy=policy)],
                           tiny_corpus, [tmp_path / "aioli"], wandb_mode="off")[0]
    assert result.ok
    for (step, before, probe), (_, after, _) in zip(seen[:4], seen[1:5]):  # the four probes of round one
        drawn = {d: after.get(d, 0) - before.get(d, 0) for d in after if after.get(d, 0) - before.get(d, 0)}
        assert drawn == exact_counts(probe, 2 * 8), step


def test_aioli_settings_are_checked_when_the_config_is_read():
    start = Mixture.uniform(DOMAINS)
    for spec, problem in (({"lp_steps": 3}, "update_steps must be a multiple of lp_steps"),
                          ({"update_steps": 20, "sweeps": 4, "lp_steps": 2}, "the probes take .* 24 steps"),
                          ({"ema": 1.5}, "ema must be in"), ({"interval": 5}, "sets its own interval")):
        with pytest.raises(ConfigError, match=f"exp.yaml: policy 'aioli': {problem}|exp.yaml: .*{problem}"):
            make_policy({"policy": "aioli", **spec}, start, "exp.yaml")
    assert dataclasses.fields(AioliSettings)  # every setting documented in --help comes from here
