"""One mixing method end to end on one corpus, every method on the same loop and the same footing.

A method is the static baselines Aioli measures against or an online policy (regmix.online):
- `stratified` (uniform) and `natural` (token shares): one run;
- `grid`: `runs` full runs on a grid of the simplex (m <= 3) or a space-filling set; the best is its run;
- `dml`: the log-linear data mixing law (regmix.regression.mixing_law) fitted on the grid's runs, minimized on
  the simplex, and trained;
- `skillit`: one run per training domain, their final losses as the skills graph, then the online run;
- `doremi`: a reference run (stratified, kept), the proxy run, then a run on its averaged weights;
- `doge`: the proxy run, then a run on its averaged weights;
- `aioli` (and any other policy): the online run itself.
Every run lives in `<output>/runs/<name>/`, shared by the methods of one output folder (grid and dml
share the grid; DoReMi's reference is the stratified run, which keeps its model); a finished run is
never trained again, so a method resumes where it stopped. A method's result goes to
`<output>/<method>/`. The answer is the final run: its validation losses are the method's score; all
runs it used count in its cost (extra runs, wall time), shared ones included.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from math import comb
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy.stats import qmc

from regmix.core.files import ConfigError, write_atomic
from regmix.core.mixture import Mixture
from regmix.core.results import RunResult, load_result
from regmix.core.schema import RESULT_NAME
from regmix.data.corpus import CorpusManifest
from regmix.online import POLICIES, make_policy
from regmix.regression.mixing_law import LogLinearMixingLaw, minimize_law
from regmix.settings.run_config import RunConfig
from regmix.settings.training import TrainingSettings
from regmix.train.sweep import train_proxies

STATIC_METHODS = ("stratified", "natural", "grid", "dml")
METHODS = STATIC_METHODS + tuple(sorted(POLICIES))
GRID_RUNS = 10  # Aioli's grid search and DML: 10 full runs


@dataclass
class MethodResult:
    """What a method trained and what it answers: the final run and the mixture to train at scale."""

    method: str
    final: RunResult
    runs: list[RunResult]  # every run the method trained, the final one included
    mixture: Mixture  # the answer: the final run's (last) mixture
    averaged: Mixture  # the final run's mixture averaged over its steps (= `mixture` for a static run)
    seconds: float  # training time of all its runs
    online: RunResult | None = None  # the run whose mixture a policy changed (the final one, or its proxy)

    @property
    def extra_runs(self) -> int:
        return len(self.runs) - 1

    @property
    def mean_loss(self) -> float:
        return float(np.mean(list(self.final.valid_losses.values())))

    @property
    def mean_perplexity(self) -> float:
        """Aioli's score: the mean over valid domains of the perplexity."""
        return float(np.mean([math.exp(v) for v in self.final.valid_losses.values()]))

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "final_run": self.final.name, "valid_losses": self.final.valid_losses,
                "mean_loss": self.mean_loss, "mean_perplexity": self.mean_perplexity,
                "mixture": self.mixture.to_dict(), "averaged_mixture": self.averaged.to_dict(),
                "extra_runs": self.extra_runs, "runs": [r.name for r in self.runs], "seconds": round(self.seconds, 3),
                "online_run": None if self.online is None else self.online.name,
                "trajectory": None if self.online is None else self.online.trajectory}


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
    u = qmc.Sobol(m, scramble=True, seed=seed).random_base2(max(count - 1, 1).bit_length())[:count]
    z = -np.log(np.clip(u, 1e-12, 1.0))
    return [Mixture(tuple(domains), row / row.sum()) for row in z]


def run_method(method: str, manifest: CorpusManifest, output: Path, settings: TrainingSettings,
               domains: Sequence[str], valid: Sequence[str], method_settings: Mapping[str, Any] | None = None, *,
               wandb_mode: str = "auto", device: str | None = None, progress: bool = True,
               report: Callable[[str], None] = print) -> MethodResult:
    """Train `method` on `domains` (validated on `valid`) into `output`; its result, also in
    `<output>/<method>/result.json`."""
    if method not in METHODS:
        raise ConfigError("--method", f"unknown method {method!r}; known: {list(METHODS)}")
    domains, valid, options = tuple(domains), tuple(valid), dict(method_settings or {})
    runs: list[RunResult] = []
    output = Path(output)

    def train(name: str, mixture: Mixture, policy: dict[str, Any] | None = None, keep: bool = False) -> RunResult:
        run_dir = output / "runs" / name
        if (run_dir / RESULT_NAME).exists() and (not keep or (run_dir / "checkpoint.pt").exists()):
            result = load_result(run_dir)
        else:
            report(f"[{method}] training {name}")
            config = RunConfig(name, mixture.on_domains(domains), valid, settings, policy=policy)
            result = train_proxies([config], manifest, [run_dir], device=device, wandb_mode=wandb_mode,
                                   wandb_group=output.name, progress=progress, keep_checkpoint=keep)[0]
        if not result.ok:
            raise RuntimeError(f"{run_dir}: run {name} failed: {result.error}")
        runs.append(result)
        return result

    uniform = Mixture.uniform(domains)
    online = None
    if method == "stratified":
        final = train(method, uniform, keep=True)
    elif method == "natural":
        shares = manifest.token_distribution()
        final = train(method, Mixture.from_dict({d: shares[d] for d in domains}, normalize=True))
    elif method in ("grid", "dml"):
        count = int(options.pop("runs", GRID_RUNS))
        _no_other_settings(method, options)
        grid = [train(f"grid_{i}", mix) for i, mix in enumerate(grid_mixtures(domains, count, settings.seed))]
        if method == "grid":
            final = min(grid, key=lambda r: np.mean(list(r.valid_losses.values())))
        else:
            final = train(method, dml_mixture(grid, domains, valid))
    else:
        policy_class = POLICIES[method]
        made = sorted({"skills", "reference"} & set(options))
        if made:  # the harness makes these files itself (the single-domain runs, the stratified run)
            raise ConfigError("--setting", f"{made} are made by the method's own runs here; drop them (to train a "
                                           "policy on your own files, write its `policy:` into a run config)")
        spec = {"policy": method, **options}
        if method == "skillit":
            singles = {d: train(f"single_{d}", Mixture.from_dict({d: 1.0})).valid_losses for d in domains}
            skills = output / "skills.json"
            write_atomic(skills, json.dumps(singles, indent=1))
            spec["skills"] = str(skills)
        if method == "doremi":
            spec["reference"] = str(output / "runs" / train("stratified", uniform, keep=True).name / "checkpoint.pt")
        make_policy(spec, uniform, "--setting")  # settings errors before any training
        online = train(f"{method}_proxy" if policy_class.retrain else method, uniform, spec)
        final = train(method, averaged_mixture(online, domains)) if policy_class.retrain else online
    result = MethodResult(method, final, runs, last_mixture(final, domains), averaged_mixture(final, domains),
                          sum(r.seconds for r in runs), online)
    (output / method).mkdir(parents=True, exist_ok=True)
    write_atomic(output / method / "result.json", json.dumps(result.to_dict(), indent=1))
    return result


def dml_mixture(runs: Sequence[RunResult], domains: tuple[str, ...], valid: tuple[str, ...]) -> Mixture:
    """The mixture minimizing the mean of the log-linear laws fitted on `runs`, one law per valid domain."""
    X = np.stack([r.mixture.vector(domains) for r in runs])
    y = np.array([[r.valid_losses[v] for v in valid] for r in runs])
    law = LogLinearMixingLaw().fit(X, y)
    weights = minimize_law(law, np.full(len(valid), 1.0 / len(valid)), np.zeros(len(domains)), np.ones(len(domains)))
    return Mixture(domains, weights)


def _no_other_settings(method: str, options: Mapping[str, Any]) -> None:
    if options:
        raise ConfigError("--setting", f"method {method!r} takes only `runs`, not {sorted(options)}")


def method_settings_help() -> str:
    """Every method's settings with their defaults (the published ones, named in each help text)."""
    lines = ["  stratified, natural: no settings",
             f"  grid, dml: runs={GRID_RUNS}  full runs on a simplex grid (m <= 3) or a Sobol set (Aioli: 10)"]
    for name, policy in sorted(POLICIES.items()):
        fields = dataclasses.fields(policy.Settings)
        lines.append(f"  {name}:" + ("" if fields else " no settings"))
        lines += [f"    {f.name}={f.default!r}  {f.metadata.get('help', '')}" for f in fields]
    return "\n".join(lines)
