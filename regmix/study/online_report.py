"""What a method run leaves for people: the weights and validation losses over steps as a PNG, and its
mixtures as configs `model_training/pretrain_1b.sh` trains at scale."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from regmix.core.schema import HISTORY_NAME, STEP, loss_column
from regmix.settings.run_config import save_run_config
from regmix.study.online_methods import MethodResult
from regmix.study.optimal_mixture import optimal_run_config


def write_mixture_configs(result: MethodResult, folder: Path, large_model: str = "tinyllama_1_1b") -> list[Path]:
    """`mixture_final.yaml` (the final weights) and `mixture_averaged.yaml` (averaged over the steps)."""
    valid = list(result.final.valid_losses)
    objective = {v: 1.0 / len(valid) for v in valid}
    paths = []
    for kind, mixture in (("final", result.mixture), ("averaged", result.averaged)):
        config = optimal_run_config(mixture, objective, result.mean_loss, None, large_model, method=result.method,
                                    basis=f"mean validation loss of the proxy run {result.final.name}")
        path = folder / f"mixture_{kind}.yaml"
        save_run_config(dataclasses.replace(config, name=f"{result.method}_{kind}"), path)
        paths.append(path)
    return paths


def plot_method(result: MethodResult, run_root: Path, path: Path) -> Path:
    """Left: the mixture over steps (the online run's, or the static one); right: validation losses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    domains = result.mixture.domains
    source = result.online or result.final
    steps = [t["step"] for t in source.trajectory] + [source.step]
    if source.trajectory:
        rows = [[t["mixture"].get(d, 0.0) for t in source.trajectory] for d in domains]
        left.stackplot(steps, [row + row[-1:] for row in rows], labels=domains, step="post")
    else:
        left.stackplot([0, source.step], [[w, w] for w in result.mixture.weights], labels=domains)
    left.set(xlabel="step", ylabel="weight", ylim=(0, 1), title=f"{result.method}: mixture of run {source.name}")
    left.legend(fontsize=7, loc="upper right")
    history = [json.loads(line) for line in (run_root / result.final.name / HISTORY_NAME).read_text().splitlines()
               if line.strip()]
    for domain in result.final.valid_losses:
        points = [(row[STEP], row[loss_column(domain)]) for row in history if loss_column(domain) in row]
        if points:
            right.plot(*zip(*points), marker=".", label=domain)
    right.set(xlabel="step", ylabel="validation loss", title=f"run {result.final.name}: validation loss per domain")
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
