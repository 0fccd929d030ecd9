"""Aioli's comparison (its Table 2) on our own data, on CPU, with the library's own harness and loop.

Every online method and static baseline of `regmix.search.online` (stratified, natural, grid, dml,
skillit, doremi, doge, aioli) is trained by the study runner (`regmix.study.runner.run_study`, without
anchors or verification: Aioli's table scores the final run) on three settings of the embedded default
corpus: all 5 domains, and a 2- and a 3-domain subset (Aioli's smaller settings), each validated on its
own domains. Every method's final run has the same steps and tokens; its extra runs (grid and dml: the
grid, skillit: one per domain, doremi: the reference and the proxy, doge: the proxy) are counted. Seeds
0..--seeds-1 change the models' initialization and the data order of every run of a setting.

Score, as Aioli: the mean over the valid domains of the perplexity of the final run on the held-out part
of each valid domain (regmix.data.validation: split by document; Aioli's repository likewise splits its
validation documents in two and scores on the half its probes never see). Every probe, grid and dml
choice and Skill-it graph measures the other part. Table: stratified's mean +- seed std, every other
method as its change against stratified (mean over seeds of the per-seed difference +- its std), and
against natural; then each method's time: its final run against stratified's (the online overhead:
probes, reference forwards, gradient alignments) and all its runs against stratified's (the cost of the
extra runs). Lower is better.

Scale (a CPU budget): the demo model (tinyllama_demo), --steps (200) of 8 x 128 tokens, 4096 validation
tokens per domain and part, an evaluation every steps / 20, grid runs 10 (Aioli's). The online methods'
settings (`scaled`): as in the scripts of Aioli's repository, the comparison we reproduce, where a CPU
allows it: Aioli with the released sweeps, one_hot_factor, eta and ema by size, min(20, steps / 40) rounds
(the scripts: 20) and lp_steps chosen so the probes take the released share of a round (2 domains 13%,
3 domains 29%, 7 domains 70%); DoReMi as Aioli's port (eta 0.01, the excess of domain means) and DoGE
updating every step; Skill-it updating every 2 evaluations (the scripts: evaluate every 250 steps,
update every 500). Runs go to --output (bench/results/online_methods/) and resume: a killed bench
continues; the table goes to stdout and <output>/table.md.

    python bench/online_methods.py                   # 3 settings x 3 seeds, 2 worker processes
    python bench/online_methods.py --seeds 1 --settings two
    python bench/online_methods.py --steps 1000 --settings all --methods stratified aioli \
        --output bench/results/online_methods_1000     # a longer run: does the gap change with steps?
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from regmix.data.corpus import load_manifest
from regmix.settings.training import TrainingSettings
from regmix.study.experiment import CorpusSettings, Experiment, SearchSettings, SimulationSettings, SweepSettings
from regmix.study.runner import run_study
from regmix.train.executor import add_executor_arguments, executor_from_args, ray_map

METHODS = ("stratified", "natural", "grid", "dml", "skillit", "doremi", "doge", "aioli")
SUBSETS = {"all": None, "two": ("package_docs", "python_code"),
           "three": ("c_headers", "licenses", "python_reference")}


# Aioli's scripts by number of domains (2, 3, and 7 for more): sweeps, one_hot_factor, eta, ema, the probes' share
RELEASED = {2: (4, 0.625, 0.2, 0.1, 32 / 250), 3: (4, 0.5, 0.1, 0.5, 72 / 250)}
RELEASED_MANY = (2, 0.75, 1.0, 0.1, 140 / 200)


def evaluation_interval(steps: int) -> int:
    return max(steps // 20, 1)


def scaled(method: str, m: int, steps: int) -> dict:
    """The online methods' settings for a run of `steps` steps (module docstring)."""
    if method == "aioli":
        sweeps, factor, eta, ema, share = RELEASED.get(m, RELEASED_MANY)
        rounds = max(min(20, steps // 40), 1)
        ideal = share * (steps // rounds) / (sweeps * m)

        def share_of(lp: int) -> float:
            return sweeps * m * lp / ((steps // rounds) // lp * lp)

        lp_steps = min({max(int(ideal), 1), int(ideal) + 1}, key=lambda lp: abs(share_of(lp) - share))
        update = (steps // rounds) // lp_steps * lp_steps
        return {"update_steps": update, "sweeps": sweeps, "lp_steps": lp_steps, "one_hot_factor": factor, "eta": eta,
                "ema": ema}
    if method == "doremi":
        return {"update_steps": 1, "eta": 0.01, "excess": "domain"}
    if method == "doge":
        return {"update_steps": 1}
    if method == "skillit":
        return {"update_steps": 2 * evaluation_interval(steps)}
    return {}


def probe_share(m: int, steps: int) -> float:
    aioli = scaled("aioli", m, steps)
    return aioli["sweeps"] * m * aioli["lp_steps"] / aioli["update_steps"]


def run_setting(args: tuple) -> dict:
    """The methods on one (setting, seed), in order (grid before dml, stratified before doremi)."""
    corpus, output, setting, seed, steps, methods = args
    torch.set_num_threads(1)
    manifest = load_manifest(corpus)
    domains = SUBSETS[setting] or tuple(d for d in manifest.train_domains if d not in manifest.empty_domains("train"))
    valid = tuple(d for d in domains if d in manifest.valid_domains)
    settings = TrainingSettings.from_name("demo", global_batch_size=8, micro_batch_size=8, max_step=steps,
                                          eval_step_interval=evaluation_interval(steps), save_step_interval=steps // 4,
                                          warmup_steps=steps // 10, eval_tokens=4096, seed=seed)
    experiment = Experiment(name=f"{setting}_seed{seed}", corpus=CorpusSettings(prepared=corpus), proxy=settings,
                            sweep=SweepSettings(anchor_seeds=0, workers=1, wandb="off"),
                            simulation=SimulationSettings(repetitions=0, verify=False))
    os.makedirs(output, exist_ok=True)
    os.chdir(output)  # the runs go to <output>/runs/<setting>_seed<seed>/, shared by the methods of a setting
    rows = {}
    for method in methods:
        started = time.perf_counter()
        study = dataclasses.replace(experiment, search=SearchSettings(settings=scaled(method, len(domains), steps)))
        with contextlib.redirect_stdout(io.StringIO()):
            summary = run_study(study, method, domains=None if SUBSETS[setting] is None else domains,
                                report=lambda line: None)
        state = json.loads((study.runs / method / "study.json").read_text())
        trials = {t["name"]: t for t in state["trials"]}
        final = trials[state["proposer"]["final"]]
        losses = [final["losses"][d] for d in valid]
        rows[method] = {"perplexity": float(np.mean([math.exp(v) for v in losses])), "loss": float(np.mean(losses)),
                        "final_seconds": final["seconds"], "seconds": summary["training_seconds"]["method"],
                        "extra_runs": summary["runs"]["method"] - 1, "wall": time.perf_counter() - started,
                        "mixture": summary["optimal"]}
    return {"setting": setting, "seed": seed, "rows": rows}


def table(results: list[dict], settings: list[str], methods: list[str]) -> str:
    by = {(r["setting"], r["seed"]): r["rows"] for r in results}
    seeds = sorted({r["seed"] for r in results})

    def values(setting: str, method: str, key: str = "perplexity") -> np.ndarray:
        return np.array([by[setting, s][method][key] for s in seeds if (setting, s) in by])

    def cell(x: np.ndarray, signed: bool) -> str:
        return f"{x.mean():+.3f} ± {x.std():.3f}" if signed else f"{x.mean():.3f} ± {x.std():.3f}"

    head = "| method | extra runs | " + " | ".join(settings) + " | final-run time | all-runs time |"
    lines = [f"Mean validation perplexity over domains; {len(seeds)} seeds; rows: change against the baseline "
             "(lower is better), ± the seed std of the per-seed difference.", ""]
    for base in [b for b in ("stratified", "natural") if b in methods]:
        lines += [f"### against {base}", "", head, "|" + "---|" * (len(settings) + 4)]
        for method in methods:
            cells = []
            for setting in settings:
                own = values(setting, method)
                cells.append(cell(own, False) if method == base else cell(own - values(setting, base), True))
            ratio = [values(s, method, "final_seconds") / values(s, "stratified", "final_seconds") for s in settings]
            total = [values(s, method, "seconds") / values(s, "stratified", "final_seconds") for s in settings]
            extra = "/".join(str(int(values(s, method, "extra_runs").max())) for s in settings)
            lines.append(f"| {method} | {extra} | " + " | ".join(cells)
                         + f" | {np.mean(np.concatenate(ratio)):.2f}x | {np.mean(np.concatenate(total)):.1f}x |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus", type=Path, default=Path("data/default"),
                   help="prepared default corpus (make demo / python -m regmix.pipeline prepares it)")
    p.add_argument("--output", type=Path, default=Path("bench/results/online_methods"))
    p.add_argument("--settings", nargs="+", choices=list(SUBSETS), default=["two", "three", "all"])
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="methods to run (stratified is the baseline of the table: keep it)")
    add_executor_arguments(p)
    args = p.parse_args()
    executor = executor_from_args(args)
    methods = [m for m in METHODS if m in args.methods]
    jobs = [(str(args.corpus.resolve()), str(args.output.resolve()), s, seed, args.steps, methods)
            for s in args.settings for seed in range(args.seeds)]
    jobs.sort(key=lambda j: -len(SUBSETS[j[2]] or "12345"))  # the largest settings first: better packing
    started = time.perf_counter()
    results = []
    with ProcessPoolExecutor(args.workers) as pool:
        if executor.kind == "ray":  # one Ray task per (setting, seed), anywhere on the cluster
            finished = (r for _, r in ray_map(run_setting, jobs, executor, executor.task_gpus(None), "regmix_bench"))
        else:
            finished = pool.map(run_setting, jobs)
        for result in finished:
            if isinstance(result, BaseException):
                raise result
            results.append(result)
            print(f"[{time.perf_counter() - started:6.0f} s] {result['setting']} seed {result['seed']}: "
                  + ", ".join(f"{m} {r['perplexity']:.2f}" for m, r in result["rows"].items()), flush=True)
    text = table(results, args.settings, methods)
    sizes = {s: len(SUBSETS[s] or load_manifest(args.corpus).train_domains) for s in args.settings}
    text += "\nAioli's settings: " + "; ".join(f"{s}: {scaled('aioli', m, args.steps)}, probes "
                                              f"{probe_share(m, args.steps):.0%} of a round" for s, m in sizes.items())
    where = f"on Ray ({executor})" if executor.kind == "ray" else f"with {args.workers} workers"
    text += f"\nWall time of the bench: {time.perf_counter() - started:.0f} s {where}.\n"
    print(text)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "table.md").write_text(text)
    (args.output / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
