"""SIGKILL at seeded random points of prepare, a sweep, collect, fit and simulate, each stage killed twice and
then run to the end: its files are byte-identical to an uninterrupted run's (runs: identical losses and
metrics; only their timings differ). The stages run as users run them, `python -m regmix.<stage>`, in one
folder so that absolute paths written into files match."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

KILLS = 2  # per stage
SEED = int(os.environ.get("REGMIX_FAULT_SEED", "0"))  # the kill points; set it to try others
WORDS = {"web": "the news today said people and city market weather sport music film",
         "code": "def return import class self for while if else lambda yield print",
         "law": "court shall party agreement section pursuant hereby clause liability notice"}


def write_raw_corpus(root: Path) -> None:
    """Three domains of seeded word salad in RegMix's layout (train in two files for one domain)."""
    rng = random.Random(7)
    for domain, words in WORDS.items():
        vocabulary = words.split()
        files = [f"train/{domain}_0.jsonl", f"valid/{domain}.jsonl"] + ([f"train/{domain}_1.jsonl"]
                                                                        if domain == "web" else [])
        for name in files:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            docs = [" ".join(rng.choice(vocabulary) for _ in range(rng.randint(20, 80))) for _ in range(120)]
            path.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def snapshot(paths: list[Path]) -> dict[str, bytes]:
    """Every file under `paths` by path; a run's result.json and metrics.jsonl without their timings, and no
    wandb files (their own timestamps)."""
    out = {}
    for root in paths:
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if not path.is_file() or "wandb" in path.parts:
                continue
            data = path.read_bytes()
            if path.name == "result.json":
                data = json.dumps({k: v for k, v in json.loads(data).items() if k != "seconds"}).encode()
            elif path.name == "metrics.jsonl":
                rows = [json.loads(line) for line in data.decode().splitlines()]
                data = json.dumps([{k: v for k, v in row.items() if k != "seconds"} for row in rows]).encode()
            out[str(path)] = data
    return out


def run(args: list[str], cwd: Path, kill_after: float | None = None) -> None:
    env = {**os.environ, "WANDB_MODE": "disabled", "REGMIX_DEBUG": "1"}
    process = subprocess.Popen([sys.executable, "-m", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)  # done before the kill point: nothing to kill
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        process.communicate()
        return
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, f"{args}: exit {process.returncode}\n{err}"


def killed_and_resumed(args: list[str], outputs: list[Path], cwd: Path, rng: random.Random) -> None:
    """The stage uninterrupted (timed), its files kept; the files removed; the stage killed at KILLS random
    points of that time (each kill in the next attempt); then run to the end: the same files."""
    started = time.perf_counter()
    run(args, cwd)
    took = time.perf_counter() - started
    reference = snapshot(outputs)
    assert reference, f"{args} wrote nothing"
    for path in outputs:
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    for _ in range(KILLS):
        run(args, cwd, kill_after=rng.uniform(0.15, 0.95) * took)
    run(args, cwd)
    again = snapshot(outputs)
    assert sorted(again) == sorted(reference), "other files than the uninterrupted run's"
    changed = [path for path in reference if again[path] != reference[path]]
    assert not changed, f"files differ from the uninterrupted run's after kills: {changed}"


@pytest.mark.parametrize("seed", [SEED])
def test_every_stage_killed_twice_then_resumed_gives_the_uninterrupted_files(tmp_path, seed):
    rng = random.Random(seed)
    write_raw_corpus(tmp_path / "raw")
    corpus, configs, runs, data = tmp_path / "prepared", tmp_path / "configs", tmp_path / "runs", tmp_path / "data"
    killed_and_resumed(["regmix.prepare", "raw", "--output", "prepared", "--vocab-size", "300", "--workers", "1"],
                       [corpus], tmp_path, rng)
    subprocess.run([sys.executable, "-m", "regmix.search.synthesize", "--prior", "prepared", "--output", "configs",
                    "--num-configs", "6", "--model-name", "tinyllama_demo", "--global-batch-size", "4",
                    "--micro-batch-size", "4", "--max-step", "40", "--eval-step-interval", "10",
                    "--save-step-interval", "5", "--warmup-steps", "2", "--block-size", "32", "--eval-tokens", "256"],
                   cwd=tmp_path, check=True, capture_output=True)
    killed_and_resumed(["regmix.train_proxy", "--config", "configs", "--corpus", "prepared", "--output", "runs",
                        "--workers", "1", "--wandb", "off", "--no-progress"], [runs], tmp_path, rng)
    killed_and_resumed(["regmix.study.collect", "--configs", "configs", "--runs", "runs", "--output", "data",
                        "--scale", "tiny", "--corpus", "faults"], [data], tmp_path, rng)
    mixtures, losses = data / "train_mixture_tiny.csv", data / "train_faults_loss_tiny.csv"
    assert mixtures.exists() and losses.exists()
    killed_and_resumed(["regmix.regression.fit", "--mixtures", str(mixtures), "--losses", str(losses),
                        "--model", "lightgbm", "linear", "--folds", "1", "--threads", "1", "--output", "model.npz"],
                       [tmp_path / "model.npz"], tmp_path, rng)
    killed_and_resumed(["regmix.regression.simulate", "--model", "model.npz", "--prior", "prepared", "--num-candidates",
                        "200000", "--top-k", "64", "--threads", "1", "--output", "optimal.yaml", "--plot",
                        "optimal.png", "--quiet"], [tmp_path / "optimal.yaml", tmp_path / "optimal.png"], tmp_path,
                       rng)
    assert configs.exists()
