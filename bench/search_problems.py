"""The problems bench/search_benchmark.py replays the search methods on: each an objective with a known optimum,
its noisy runs and the budgets per method (the script's docstring says how each is built)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from regmix.core.objective import Objective
from regmix.core.observations import read_csvs
from regmix.core.schema import loss_csv_name, mixture_csv_name
from regmix.core.space import SearchSpace
from regmix.regression.fit import FittedModel, evaluate
from regmix.regression.regressors import make_regressor
from regmix.search.offline import ModelObjective, PowerLawObjective, minimize_on_space
from regmix.search.synthesize import SynthesisSettings, draw_mixtures, load_prior, sparsify

DATA = Path(__file__).resolve().parents[2] / "shared" / "regmix_paper_data"
TARGET = "the_pile_pile_cc"
GP_METHODS = ("bo", "turbo")
SYNTHETIC = {"synthetic5": 5, "synthetic7": 7, "synthetic17": 17}
RUN_SETS = ("regmix_1000", "olmix_dclm", "olmix_full", "olmix_reuse5")  # bench/run_sets.py's sets
PROBLEMS = ("paper", *SYNTHETIC, *RUN_SETS)

Evaluate = Callable[[np.ndarray], list[dict[str, float]]]


@dataclass
class Problem:
    """What every trajectory of one problem shares."""

    name: str
    space: SearchSpace
    objective: Objective
    truth: Callable[[np.ndarray], np.ndarray]  # noiseless objective of rows (space.domains order)
    runs: Callable[[int], Evaluate]  # seed -> noisy evaluation, its own noise stream
    optimum: float
    batch: int
    budgets: dict[str, list[int]]  # per method
    key: dict[str, Any]  # problem settings that decide a trajectory (cache key)
    notes: list[str] = field(default_factory=list)


def paper_problem(args: argparse.Namespace) -> Problem:
    """The GP oracle on all 768 published runs, its noise and optimum (fit ~1 min, optimum ~minutes)."""
    paths = [args.data / mixture_csv_name("1m"), args.data / loss_csv_name("pile", "1m"),
             args.data / mixture_csv_name("1m", "test"), args.data / loss_csv_name("pile", "1m", "test")]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise SystemExit(f"error: RegMix's published runs are missing: {missing}; pass --data <folder with "
                         f"{', '.join(p.name for p in paths)}>")
    train = read_csvs(paths[0], paths[1]).select([args.target])
    test = read_csvs(paths[2], paths[3]).select([args.target]).on_domains(train.domains)
    natural, _ = load_prior("the_pile")
    if set(natural.domains) != set(train.domains):
        raise SystemExit(f"error: the Pile prior's domains {natural.domains} differ from the CSV's {train.domains}")
    natural = natural.on_domains(train.domains)
    domains, target = train.domains, train.targets[0]
    X, y = np.vstack([train.mixtures, test.mixtures]), np.concatenate([train.losses, test.losses])[:, 0]

    start = time.perf_counter()
    regressor = make_regressor("gp").fit(pd.DataFrame(X, columns=list(domains)), pd.Series(y, name=target))
    model = FittedModel("gp", regressor, domains, (target,))
    fitted = regressor.models_[0]
    fitted_noise = float(np.sqrt(fitted["gp"].kernel_.k2.noise_level) * fitted["scale"])
    noise = fitted_noise if args.noise is None else args.noise
    objective = Objective({target: 1.0})
    oracle = ModelObjective(model, objective, noise)
    r2 = evaluate(y, oracle.value(X))["r2"]
    space = SearchSpace.around(natural, SynthesisSettings().maximum_usage)

    settings = SynthesisSettings()
    draws = sparsify(draw_mixtures(space.prior, args.prior_draws, settings, np.random.default_rng(0)),
                     settings.minimum)
    draws = draws[space.contains(draws)]
    starts = np.vstack([draws[np.argsort(oracle.value(draws))[:32]], space.project(X[np.argsort(y)[:16]])])
    best, optimum = minimize_on_space(oracle.value, space, starts)
    notes = [f"oracle: GP on {len(X)} runs ({len(train)} train + {len(test)} test), target {target}; "
             f"in-sample R2 {r2:.4f}, fitted noise std {fitted_noise:.4f} (proposers see noise std {noise:.4f})",
             f"oracle at the natural mixture {oracle.value(space.prior[None, :])[0]:.4f}; best of the runs "
             f"{oracle.value(X).min():.4f} (observed {y.min():.4f}); best of {len(draws)} prior draws "
             f"{oracle.value(starts[:1])[0]:.4f}",
             f"optimum {optimum:.4f} at " + ", ".join(f"{d.removeprefix('the_pile_')} {w:.3f}"
                                                       for d, w in zip(domains, best) if w >= 0.005),
             f"(oracle fit and optimum in {time.perf_counter() - start:.0f}s)"]
    budgets = {m: sorted(args.bo_budgets if m in GP_METHODS else args.budgets) for m in args.methods}
    return Problem("paper", space, objective, oracle.value,
                   lambda seed: ModelObjective(model, objective, noise, seed), optimum, args.batch or 16, budgets,
                   {"target": target, "noise": round(noise, 6)}, notes)


def run_set_problem(name: str, args: argparse.Namespace) -> Problem:
    """A public run set's oracle: regmix's ensemble fitted on all its runs' mean metric (the regressor that ranks
    held-out runs best across the sets: bench/results/run_sets), around the runs' mean mixture (no token counts
    ship with the sets). Proposers see Gaussian noise of the runs' in-sample residual std around the oracle."""
    from run_sets import SHARED, load_set, on_mean

    runs = on_mean(load_set(name, SHARED))
    X, y = runs.mixtures, runs.losses[:, 0]
    start = time.perf_counter()
    regressor = make_regressor("ensemble").fit(pd.DataFrame(X, columns=list(runs.domains)), pd.Series(y, name="mean"))
    model = FittedModel("ensemble", regressor, runs.domains, ("mean",))
    objective = Objective({"mean": 1.0})
    exact = ModelObjective(model, objective, 0.0)
    noise = float(np.std(y - exact.value(X))) if args.noise is None else args.noise
    centre = X.mean(axis=0) / X.mean(axis=0).sum()
    space = SearchSpace(runs.domains, centre, np.zeros(len(centre)), np.ones(len(centre)))
    settings = SynthesisSettings()
    draws = sparsify(draw_mixtures(centre, args.prior_draws, settings, np.random.default_rng(0)), settings.minimum)
    starts = np.vstack([draws[np.argsort(exact.value(draws))[:8]], X[np.argsort(y)[:4]]])  # SLSQP on an ensemble: slow
    best, optimum = minimize_on_space(exact.value, space, starts)
    optimum = min(optimum, float(exact.value(starts).min()))  # SLSQP can end above its start on a tree ensemble
    notes = [f"oracle: ensemble on {len(X)} runs over {len(runs.domains)} domains, mean of {name}'s metrics; "
             f"residual std {noise:.4f} (the proposers' noise)",
             f"best run {y.min():.4f} (oracle {exact.value(X).min():.4f}); optimum {optimum:.4f} "
             f"(oracle fit and optimum in {time.perf_counter() - start:.0f}s)"]
    budgets = {m: sorted(args.bo_budgets if m in GP_METHODS else args.budgets) for m in args.methods}
    return Problem(name, space, objective, exact.value, lambda seed: ModelObjective(model, objective, noise, seed),
                   optimum, args.batch or 16, budgets, {"oracle": "ensemble", "noise": round(noise, 6)}, notes)


def synthetic_problem(name: str, args: argparse.Namespace) -> Problem:
    """Per-domain power laws at SYNTHETIC[name] domains; the convex optimum by SLSQP."""
    dim = SYNTHETIC[name]
    truth = PowerLawObjective(dim, seed=args.problem_seed, noise=args.synthetic_noise)
    space = truth.space()
    rng = np.random.default_rng([args.problem_seed, 3])
    starts = np.vstack([space.prior, np.full(dim, 1.0 / dim), rng.dirichlet(np.ones(dim), 8)])
    best, optimum = minimize_on_space(truth.value, space, starts)

    def runs(seed: int) -> Evaluate:
        noisy = PowerLawObjective(dim, seed=args.problem_seed, noise=args.synthetic_noise)
        noisy.rng = np.random.default_rng([args.problem_seed, 1, seed])  # a noise stream per trajectory seed
        return noisy

    notes = [f"power laws, {dim} domains, problem seed {args.problem_seed}, noise {args.synthetic_noise} per domain",
             f"prior value {truth.value(space.prior[None, :])[0]:.4f}; optimum {optimum:.4f} at "
             + ", ".join(f"{d} {w:.3f}" for d, w in zip(space.domains, best))]
    budgets = {m: sorted(args.synthetic_budgets) for m in args.methods}
    return Problem(name, space, truth.objective(), truth.value, runs, optimum, args.batch or (16 if dim > 7 else 8),
                   budgets, {"problem_seed": args.problem_seed, "noise": args.synthetic_noise}, notes)


def make_problem(name: str, args: argparse.Namespace) -> Problem:
    if name == "paper":
        return paper_problem(args)
    return run_set_problem(name, args) if name in RUN_SETS else synthetic_problem(name, args)
