"""Online policies: each update on hand-made losses gives the mixture its formula says, probes draw exact
counts, and weights stay on the simplex (never NaN) on constant or diverging losses."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.data.sampler import exact_counts
from regmix.online import make_policy
from regmix.online.aioli import Aioli, AioliSettings, interaction_matrix, smoothed_one_hot
from regmix.online.doge import DoGE, DoGESettings
from regmix.online.doremi import DoReMi, DoReMiSettings
from regmix.online.skillit import SkillIt, SkillItSettings
from regmix.settings.run_config import RunConfig
from regmix.settings.training import TrainingSettings
from regmix.train.sweep import train_proxies

DOMAINS = ("a", "b", "c")


class Scripted:
    """A probe whose validations return scripted losses, one after another."""

    def __init__(self, losses: list[dict[str, float]]):
        self.script = iter(losses)

    def validation(self) -> dict[str, float]:
        return next(self.script)


def drive(policy: Aioli, losses_at: list[dict[str, float]], steps: range) -> list[Mixture | None]:
    """Call on_interval at `steps`, each measurement returning the next scripted losses."""
    probe = Scripted(losses_at)
    return [policy.on_interval(step, {}, probe) for step in steps]


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
        mixture = policy.on_interval(step, {}, Scripted([losses[step]])) or Mixture(DOMAINS, policy.weights)
        assert np.isfinite(mixture.weights).all() and mixture.weights.sum() == pytest.approx(1.0)
        assert (mixture.weights >= 0).all()


def test_aioli_probes_draw_exactly_their_counts(tiny_corpus, tmp_path, monkeypatch):
    settings = TrainingSettings(model_name="tinyllama_demo", global_batch_size=8, micro_batch_size=4, max_step=12,
                                warmup_steps=1, eval_step_interval=12, block_size=32, eval_tokens=128, seed=1)
    policy = {"policy": "aioli", "update_steps": 12, "lp_steps": 2, "sweeps": 1, "one_hot_factor": 0.55}
    start = Mixture.from_dict({"alpha": 0.4, "beta": 0.3, "gamma": 0.2, "delta": 0.1})
    seen: list[tuple[int, dict[str, int], Mixture | None]] = []
    original = Aioli.on_interval

    def recording(self, step, counts, probe):
        chosen = original(self, step, counts, probe)
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


class FakeModelProbe:
    """A probe with scripted per-token losses (the run's model and the reference's) and gradient dots."""

    learning_rate = 0.01
    valid_domains = ("x", "y")

    def __init__(self, proxy: dict[str, float], reference: dict[str, float], dots: dict[str, float] | None = None,
                 norms: dict[str, float] | None = None, target_norm: float = 1.0):
        self.proxy, self.reference, self.dots, self.norms = proxy, reference, dots or {}, norms or {}
        self.target_norm = target_norm

    def sequences(self, domain, count, key):
        return torch.full((count, 5), DOMAINS.index(domain) if domain in DOMAINS else 9)

    def valid_sequences(self, domain, count, key):
        return torch.full((count, 5), 9)

    def token_losses(self, tokens, checkpoint=None):
        table = self.proxy if checkpoint is None else self.reference
        domain = DOMAINS[int(tokens[0, 0])]
        return torch.full((len(tokens), 4), table[domain], dtype=torch.float64)

    def alignment(self, batches, target):
        return {d: (self.dots[d], self.norms[d]) for d in batches}, self.target_norm


def test_doremi_step_is_the_published_update(tmp_path):
    reference = tmp_path / "checkpoint.pt"
    reference.touch()
    policy = DoReMi(Mixture.uniform(DOMAINS), DoReMiSettings(reference=str(reference), eta=2.0, smoothing=0.1))
    probe = FakeModelProbe({"a": 3.0, "b": 2.0, "c": 1.0}, {"a": 2.5, "b": 2.2, "c": 1.0})
    chosen = policy.on_interval(0, {}, probe)
    excess = np.array([0.5, 0.0, 0.0])  # max(proxy - reference, 0) per domain
    start = 0.9 * np.full(3, 1 / 3) + 0.1 / 3
    tilted = start * np.exp(2.0 * excess)
    np.testing.assert_allclose(chosen.weights, 0.9 * tilted / tilted.sum() + 0.1 / 3)
    assert chosen.weights[0] > chosen.weights[1] == pytest.approx(chosen.weights[2])


def test_doremi_refuses_a_missing_reference(tmp_path):
    with pytest.raises(ConfigError, match="exp.yaml: policy 'doremi': reference checkpoint .*nowhere.pt does not"):
        make_policy({"policy": "doremi", "reference": str(tmp_path / "nowhere.pt")}, Mixture.uniform(DOMAINS),
                    "exp.yaml")


def test_doge_scores_are_the_published_update_on_clipped_gradients():
    policy = DoGE(Mixture.uniform(DOMAINS), DoGESettings(mu=0.05, clip=5.0))
    dots, norms = {"a": 0.5, "b": -1.0, "c": 100.0}, {"a": 0.5, "b": 2.0, "c": 4.0}
    chosen = policy.on_interval(0, {}, FakeModelProbe({}, {}, dots, norms, target_norm=4.0))
    # every gradient rescaled to norm <= 1 first (clip_grad_norm_ in the references): g_val by 1/4, b by 1/2, c by 1/4
    clipped_dots = np.array([0.5 / 4, -1.0 / 2 / 4, 100.0 / 4 / 4])
    lr, scale = 0.01, np.mean([0.5, 1.0, 1.0]) + 1e-6
    scores = np.clip(lr * clipped_dots / scale, 0, 5 * lr)  # b clipped to 0, c to 5 lr
    expected = np.exp(scores / 0.05)
    np.testing.assert_allclose(chosen.weights, expected / expected.sum())
    # the scores no longer scale with the validation gradient's norm
    again = DoGE(Mixture.uniform(DOMAINS), DoGESettings(mu=0.05, clip=5.0))
    scaled = again.on_interval(0, {}, FakeModelProbe({}, {}, {d: v * 10 for d, v in dots.items()}, norms, 40.0))
    np.testing.assert_allclose(scaled.weights, chosen.weights)
    assert policy.mu == 0.05 and DoGE(Mixture.uniform(DOMAINS)).mu == 0.01  # published by size: 3 domains
    assert DoGE(Mixture.uniform(tuple("abcdefg"))).mu == 0.1


def test_skillit_follows_its_graph_and_the_last_losses(tmp_path):
    skills = tmp_path / "skills.json"
    final = {"a": {"x": 2.0, "y": 3.0}, "b": {"x": 3.0, "y": 2.0}, "c": {"x": 3.5, "y": 3.5}}
    skills.write_text(json.dumps(final))
    policy = SkillIt(Mixture.uniform(DOMAINS), SkillItSettings(skills=str(skills), eta=0.5, window=2))
    start = {"x": 4.0, "y": 4.0}
    S = np.array([[(4 - final[d]["x"]) / 4, (4 - final[d]["y"]) / 4] for d in DOMAINS])
    first = policy.on_interval(0, {}, Scripted([start]))
    np.testing.assert_allclose(first.weights, np.exp(0.5 * S.sum(1)) / np.exp(0.5 * S.sum(1)).sum())
    # the history grows at the run's evaluations, not at the updates (as Skill-it's and Aioli's code)
    unmeasured = Scripted([])  # an update measures nothing: it would fail if it asked for losses
    update = policy.on_interval(50, {}, unmeasured)
    from_start = np.exp(0.5 * S @ np.array([4.0, 4.0]))
    np.testing.assert_allclose(update.weights, from_start / from_start.sum())
    repeated = policy.on_interval(55, {}, unmeasured)
    np.testing.assert_allclose(repeated.weights, update.weights)  # no evaluation since: the same weights
    for step, losses in ((60, {"x": 3.0, "y": 3.8}), (80, {"x": 2.5, "y": 3.7})):
        assert policy.on_evaluation(step, losses, {}) is None
    chosen = policy.on_interval(100, {}, unmeasured)
    window = np.array([[3.0, 3.8], [2.5, 3.7]]).sum(0)  # the last 2 vectors (window=2): the start drops out
    expected = np.exp(0.5 * S @ window)
    np.testing.assert_allclose(chosen.weights, expected / expected.sum())
    assert chosen["b"] > chosen["a"]  # y, learned best by b, is the domain still behind


def test_skillit_needs_a_run_for_every_training_domain(tmp_path):
    skills = tmp_path / "skills.json"
    skills.write_text(json.dumps({"a": {"x": 1.0}}))
    with pytest.raises(ConfigError, match=r"policy 'skillit': .*skills.json: no single-domain run's losses for "
                                          r"\['b', 'c'\]"):
        make_policy({"policy": "skillit", "skills": str(skills)}, Mixture.uniform(DOMAINS), "exp.yaml")


@pytest.mark.parametrize("kind", ["constant", "diverging", "nan"])
def test_doremi_doge_and_skillit_weights_stay_on_the_simplex(kind, tmp_path):
    value = {"constant": lambda t: 2.0, "diverging": lambda t: 2.0 * 10.0 ** min(t, 300),
             "nan": lambda t: float("nan") if t > 3 else 1.0}[kind]
    reference = tmp_path / "checkpoint.pt"
    reference.touch()
    skills = tmp_path / "skills.json"
    skills.write_text(json.dumps({d: {"x": 1.0, "y": 1.5} for d in DOMAINS}))
    policies = [DoReMi(Mixture.uniform(DOMAINS), DoReMiSettings(reference=str(reference), eta=50.0)),
                DoGE(Mixture.uniform(DOMAINS), DoGESettings(mu=1e-4)),
                SkillIt(Mixture.uniform(DOMAINS), SkillItSettings(skills=str(skills), eta=50.0, update_steps=1))]
    for policy in policies:
        for t in range(40):
            losses = {d: value(t) * (i + 1) for i, d in enumerate(DOMAINS)}
            probe = FakeModelProbe(losses, {d: 1.0 for d in DOMAINS}, losses, {d: abs(v) for d, v in losses.items()})
            probe.validation = lambda t=t: {"x": value(t), "y": value(t) + 1}
            chosen = policy.on_interval(t, {}, probe)
            if chosen is not None:
                assert np.isfinite(chosen.weights).all() and (chosen.weights >= 0).all()
                assert chosen.weights.sum() == pytest.approx(1.0)


def test_doremi_excess_per_token_as_published_or_of_domain_means_as_aiolis_port(tmp_path):
    reference = tmp_path / "checkpoint.pt"
    reference.touch()

    class Mixed(FakeModelProbe):
        def token_losses(self, tokens, checkpoint=None):  # per token: the proxy 3 then 1, the reference 2 and 2
            row = [2.0, 2.0] if checkpoint is not None else [3.0, 1.0]
            return torch.tensor([row] * len(tokens), dtype=torch.float64)

    excess = {}
    for form in ("token", "domain"):
        policy = DoReMi(Mixture.uniform(DOMAINS), DoReMiSettings(reference=str(reference), excess=form))
        policy.on_interval(0, {}, Mixed({}, {}))
        excess[form] = policy.excess["a"]
    assert excess == {"token": 0.5, "domain": 0.0}  # mean(max(+1, 0), max(-1, 0)) vs max(2 - 2, 0)
    with pytest.raises(ConfigError, match="excess must be token or domain"):
        make_policy({"policy": "doremi", "reference": str(reference), "excess": "sequence"}, Mixture.uniform(DOMAINS),
                    "exp.yaml")
