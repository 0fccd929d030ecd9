"""Online mixing methods and the static baselines Aioli measures against, as proposers of the study runner.

Each method is a short, fixed sequence of rounds of runs; a run may carry an online `schedule:` (a
policy of `regmix.online`) that changes its mixture while it trains:
- `stratified` (uniform) and `natural` (token shares): one run;
- `grid`: `runs` runs on a grid of the simplex (m <= 3) or a space-filling set; the best by the objective;
- `dml`: the log-linear data mixing law (regmix.regression.mixing_law) fitted on the grid's runs,
  minimized for the objective on the space, and trained;
- `skillit`: one run per training domain, their final losses as the skills graph, then the online run;
- `doremi`: the stratified run as the reference (its checkpoint kept), the proxy run, then a run on the
  proxy's step-averaged weights;
- `doge`: the proxy run, then a run on its averaged weights;
- `aioli`, `highest_loss` (and any other policy): the online run itself. Restricted Aioli (Aioli's
  paper, section 5.2): `prior` names another method of the experiment (its answer, read from
  `runs/<name>/<method>/report.json`) or a mixture file, and `prior_steps` steps train on it before Aioli
  starts (from uniform, as the released code).

Runs of fixed content carry their own names (`stratified`, `natural`, `grid_<i>`, `single_<domain>`),
so the methods of one study share them and the runner trains each once.

The answer is the final run's last mixture (the step-averaged one for the methods that retrain), the
mixture a large run would train on; its predicted objective is what the final run measured. The
objective's weights choose among the grid and weight dml's law; the policies themselves steer by
their own published criteria over the validation domains of the objective (Aioli's and DoGE's mean
over domains, DoReMi's worst-case excess loss), a deviation from the objective's weights, stated.
"""

from __future__ import annotations

import json
from math import comb
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from regmix.core.files import ConfigError, write_atomic
from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.results import RunResult
from regmix.core.schema import CHECKPOINT_NAME
from regmix.core.space import SearchSpace
from regmix.search.proposer import Proposer, Recommendation, RunRequest

STATIC_METHODS = ("stratified", "natural", "grid", "dml")
GRID_RUNS = 10  # Aioli's grid search and DML: 10 full runs
POLICY_METHODS = ("aioli", "doge", "doremi", "highest_loss", "skillit")


def averaged_mixture(result: RunResult, domains: Sequence[str]) -> Mixture:
    """A run's mixture averaged over its steps (every step trains the same number of tokens)."""
    if not result.trajectory:
        return result.requested.on_domains(domains)
    total = np.zeros(len(domains))
    ends = [t["step"] for t in result.trajectory[1:]] + [result.step]
    for entry, end in zip(result.trajectory, ends):
        total += (end - entry["step"]) * Mixture.from_dict(entry["mixture"], normalize=True).vector(domains)
    return Mixture(tuple(domains), total / total.sum()) if total.sum() > 0 else result.requested.on_domains(domains)


def last_mixture(result: RunResult, domains: Sequence[str]) -> Mixture:
    mixture = Mixture.from_dict(result.trajectory[-1]["mixture"], normalize=True) if result.trajectory \
        else result.requested
    return mixture.on_domains(domains)


def grid_mixtures(domains: Sequence[str], count: int, seed: int) -> list[Mixture]:
    """Up to `count` mixtures: the interior points of the simplex grid of step 1/n (m <= 3, n the finest with
    at most `count` points), else a scrambled Sobol set mapped to the simplex (Dirichlet(1) transform)."""
    m = len(domains)
    if m == 1:
        return [Mixture(tuple(domains), np.ones(1))]
    if m <= 3:
        n = m
        while comb(n, m - 1) <= count:
            n += 1
        points = [p for p in np.ndindex(*(n,) * m) if sum(p) == n and min(p) > 0]
        return [Mixture(tuple(domains), np.array(p, dtype=np.float64) / n) for p in points]
    from scipy.stats import qmc  # 0.6 s of import: only where the grid is drawn

    u = qmc.Sobol(m, scramble=True, seed=seed).random_base2(max(count - 1, 1).bit_length())[:count]
    z = -np.log(np.clip(u, 1e-12, 1.0))
    return [Mixture(tuple(domains), row / row.sum()) for row in z]


def method_settings_help() -> str:
    """Every online method's settings with their defaults (the published ones, named in each help text)."""
    import dataclasses

    from regmix.online import POLICIES

    lines = ["  stratified, natural: no settings",
             f"  grid, dml: runs={GRID_RUNS}  full runs on a simplex grid (m <= 3) or a Sobol set (Aioli: 10)"]
    for name, policy in sorted(POLICIES.items()):
        fields = dataclasses.fields(policy.Settings)
        lines.append(f"  {name}:" + ("" if fields else " no settings"))
        lines += [f"    {f.name}={f.default!r}  {f.metadata.get('help', '')}" for f in fields
                  if f.name not in ("skills", "reference")]
        if name == "aioli":
            lines.append("    prior=None  restricted Aioli: another method's answer in this experiment (its name) or a "
                         "mixture file, trained for prior_steps first")
    return "\n".join(lines)


def dml_mixture(runs: Sequence[Mapping[str, Any]], space: SearchSpace, objective: Objective) -> Mixture:
    """The mixture minimizing the objective's weighted log-linear laws fitted on `runs` (one law per domain)."""
    from regmix.regression.mixing_law import LogLinearMixingLaw, minimize_law

    targets = list(objective.weights)
    X = np.stack([Mixture.from_dict(r["achieved"], normalize=True).vector(space.domains) for r in runs])
    y = np.array([[r["losses"][v] for v in targets] for r in runs])
    law = LogLinearMixingLaw().fit(X, y)
    weights = minimize_law(law, np.array([objective.weights[t] for t in targets]), space.lower, space.upper)
    return space.mixture(space.project(weights)[0])


class OnlineMethod(Proposer):
    """One online method or static baseline: rounds of named runs, then the final run's mixture.

    `run_folder` (given by the study runner): the folder of the study's runs, where DoReMi's reference
    checkpoint and Skill-it's skills file are found.
    """

    name: ClassVar[str] = "online"
    uses_anchors: ClassVar[bool] = False  # a method's own runs are its evidence, as in Aioli's comparison

    def __init__(self, space: SearchSpace, objective: Objective, seed: int = 0, run_folder: str | None = None,
                 max_step: int | None = None, output: str | None = None, **settings: Any):
        super().__init__(space, objective, seed)
        self.folder = None if run_folder is None else Path(run_folder)
        self.output = None if output is None else Path(output)  # this method's study folder: its siblings' answers
        self.max_step = max_step  # of the proxies: a policy must update within it
        self.settings = dict(settings)
        self.stage = 0
        self.observed: dict[str, dict[str, Any]] = {}  # run name -> losses, achieved, last, averaged
        self.final: str | None = None
        self.check_settings()

    # -- the method's sequence ---------------------------------------------------------------------------
    def check_settings(self) -> None:
        method = self.name
        if method in STATIC_METHODS:
            allowed = {"runs"} if method in ("grid", "dml") else set()
            extra = sorted(set(self.settings) - allowed)
            if extra:
                raise ValueError(f"method {method!r} takes {sorted(allowed) or 'no settings'}, not {extra}")
            return
        from regmix.online import policy_settings

        made = sorted({"skills", "reference"} & set(self.settings))
        if made:  # the runner makes these files itself (the single-domain runs, the stratified run)
            raise ValueError(f"{made} are made by the method's own runs here; drop them (to train a policy on your "
                             "own files, write its `policy:` into a run config)")
        probe = {"policy": method, **{k: v for k, v in self.settings.items() if k != "prior"}}
        if "prior" in self.settings and (method != "aioli" or not self.settings.get("prior_steps")):
            raise ValueError("`prior` (restricted Aioli) is an aioli setting and needs prior_steps > 0")
        if method == "skillit":
            probe["skills"] = "skills.json"
        if method == "doremi":
            probe["reference"] = CHECKPOINT_NAME
        try:
            policy_settings(probe, "the method's settings", self.max_step)
        except ConfigError as exc:
            raise ValueError(exc.problem) from None

    def uniform(self) -> Mixture:
        return Mixture.uniform(self.space.domains)

    def natural(self) -> Mixture:
        return self.space.mixture(self.space.prior)

    def retrains(self) -> bool:
        from regmix.online import POLICIES

        return self.name in POLICIES and POLICIES[self.name].retrain

    def online_name(self) -> str:
        """The run that carries the policy: `<method>_proxy` when its answer is retrained, named after the prior
        for restricted Aioli (another prior is another run)."""
        if self.retrains():
            return f"{self.name}_proxy"
        prior = self.settings.get("prior")
        return self.name if prior is None else f"{self.name}_after_{Path(str(prior)).stem}"

    def final_name(self) -> str:
        return self.name if self.retrains() else self.online_name()

    def prior(self) -> Mixture:
        """Restricted Aioli's start: another method's answer in this experiment, or a mixture file."""
        from regmix.search import PROPOSERS
        from regmix.search.synthesize import load_prior

        prior = str(self.settings["prior"])
        if prior in PROPOSERS:
            if self.output is None:
                raise ValueError(f"prior {prior!r}: the method needs the study's folder (`output`) to find its answer")
            path = self.output.parent / prior / "report.json"
            if not path.is_file():
                raise ValueError(f"prior {prior!r}: no answer of that method at {path}; run it first "
                                 f"(regmix search --method {prior})")
            mixture = Mixture.from_dict(json.loads(path.read_text())["optimal"], normalize=True)
        else:
            try:
                mixture = load_prior(prior)[0]
            except (OSError, ValueError) as exc:
                raise ValueError(f"prior {prior!r} is neither a method nor a readable mixture file: {exc}") from None
        weights = mixture.vector(self.space.domains)
        if not weights.sum() > 0:
            raise ValueError(f"prior {prior!r} puts no weight on the study's domains {list(self.space.domains)}")
        return Mixture(self.space.domains, weights / weights.sum())

    def requests(self, n: int) -> list[RunRequest]:
        """The next round's runs (all at once: `n` does not cut a round), [] once the final run is known."""
        if self.final is not None:
            return []
        method, stage = self.name, self.stage
        if method == "stratified":
            return [RunRequest(self.uniform(), "stratified", keep_checkpoint=True)]
        if method == "natural":
            return [RunRequest(self.natural(), "natural")]
        if method in ("grid", "dml"):
            if stage == 0:
                count = int(self.settings.get("runs", GRID_RUNS))
                return [RunRequest(m, f"grid_{i}") for i, m in enumerate(grid_mixtures(self.space.domains, count,
                                                                                         self.seed))]
            return [RunRequest(dml_mixture(list(self.observed.values()), self.space, self.objective), "dml")]
        spec: dict[str, Any] = {"policy": method, **self.settings}
        steps: list[list[RunRequest]] = []
        if method == "skillit":
            steps.append([RunRequest(Mixture.from_dict({d: 1.0}).on_domains(self.space.domains), f"single_{d}")
                          for d in self.space.domains])
        if method == "doremi":
            steps.append([RunRequest(self.uniform(), "stratified", keep_checkpoint=True)])
        if stage < len(steps):
            return steps[stage]
        if stage == len(steps):
            if method == "skillit":
                spec["skills"] = str(self.write_skills())
            if method == "doremi":
                spec["reference"] = str(self.runs_folder() / "stratified" / CHECKPOINT_NAME)
            spec.pop("prior", None)
            start = self.prior() if "prior" in self.settings else self.uniform()
            return [RunRequest(start, self.online_name(), policy=spec, valid=self.objective.domains)]
        proxy = self.observed[f"{method}_proxy"]
        return [RunRequest(Mixture.from_dict(proxy["averaged"], normalize=True), method)]

    def runs_folder(self) -> Path:
        if self.folder is None:
            raise ValueError(f"method {self.name!r} needs the study's run folder (`run_folder`) for its files")
        return self.folder

    def write_skills(self) -> Path:
        singles = {d: self.observed[f"single_{d}"]["losses"] for d in self.space.domains}
        path = self.runs_folder() / "skills.json"
        write_atomic(path, json.dumps(singles, indent=1))
        return path

    def tell_results(self, names: Sequence[str], results: Sequence[RunResult]) -> None:
        super().tell_results(names, results)
        for name, result in zip(names, results):
            self.observed[name] = {"losses": dict(result.measured_losses), "achieved": result.mixture.to_dict(),
                                   "last": last_mixture(result, self.space.domains).to_dict(),
                                   "averaged": averaged_mixture(result, self.space.domains).to_dict()}
        self.stage += 1
        method = self.name
        if method in ("stratified", "natural"):
            self.final = names[-1]
        elif method == "grid":
            self.final = min(self.observed, key=lambda r: self.objective.value(self.observed[r]["losses"]))
        elif method == "dml" and method in names:
            self.final = method
        elif self.final_name() in names:  # the policies: the online run, or the retrained run of its answer
            self.final = self.final_name()

    def ask(self, n: int) -> list[Mixture]:
        return [r.mixture for r in self.requests(n)]

    @property
    def done(self) -> bool:
        return self.final is not None

    def recommend(self) -> Recommendation:
        if self.final is None:
            return self.best_observed()
        final = self.observed[self.final]
        mixture = Mixture.from_dict(final["last"], normalize=True)
        losses = final["losses"]
        predicted = self.objective.value(losses) if all(d in losses for d in self.objective.weights) else float("nan")
        return Recommendation(mixture.on_domains(self.space.domains), predicted, None,
                              f"the last mixture of the run {self.final} (its measured objective)")

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "stage": self.stage, "observed": self.observed, "final": self.final}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        super().load_state_dict(state)
        self.stage, self.observed, self.final = int(state["stage"]), dict(state["observed"]), state["final"]


class StratifiedMethod(OnlineMethod):
    name = "stratified"


class NaturalMethod(OnlineMethod):
    name = "natural"


class GridMethod(OnlineMethod):
    name = "grid"


class DmlMethod(OnlineMethod):
    name = "dml"


class AioliMethod(OnlineMethod):
    name = "aioli"


class DogeMethod(OnlineMethod):
    name = "doge"


class DoremiMethod(OnlineMethod):
    name = "doremi"


class HighestLossMethod(OnlineMethod):
    name = "highest_loss"


class SkillitMethod(OnlineMethod):
    name = "skillit"
