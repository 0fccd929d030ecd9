"""How long each command takes to print its --help: every command should answer in under 1 s on 2 cores.

Why: a command that imports torch (1.4 s), scikit-learn or pandas before it parses its flags makes every
--help, typo and bad-flag error as slow as a real run. Each `python -m <module> --help` runs in a fresh
process, 3 times (the median is reported), next to two baselines timed in the same run: `python -c pass`
(the interpreter alone) and `python -c "import torch"`. `--source DIR` measures another checkout (a git
worktree of an earlier commit) through PYTHONPATH; `--modules` names its modules where its layout differs.

    python bench/help_times.py
    python bench/help_times.py --source /tmp/regmix_before --modules regmix.fit regmix.simulate ...
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODULES = ("regmix", "regmix.data.prepare", "regmix.search.synthesize", "regmix.synthesize", "regmix.train_proxy",
           "regmix.study.collect", "regmix.regression.fit", "regmix.regression.simulate", "regmix.pipeline",
           "regmix.search", "regmix.online", "regmix.study.compare", "regmix.study.transfer", "regmix.train.pretrain",
           "regmix.export", "regmix.study.reuse")
LIMIT = 1.0  # seconds


def median_seconds(args: list[str], source: Path, runs: int = 3) -> float | None:
    """Median wall time of `python <args>` in fresh processes run in `source`; None when it fails."""
    env = {**os.environ, "PYTHONPATH": str(source)}  # `-m` looks in the working directory first, then here
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, *args], cwd=source, env=env, capture_output=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            return None
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", type=Path, default=Path(__file__).resolve().parents[1],
                   help="checkout whose regmix is timed (default: this one)")
    p.add_argument("--modules", nargs="+", default=MODULES, help="modules run as python -m <module> --help")
    args = p.parse_args()
    rows = [("python -c pass", ["-c", "pass"]), ("python -c 'import torch'", ["-c", "import torch"])]
    rows += [(f"python -m {m} --help", ["-m", m, "--help"]) for m in args.modules]
    seconds = {label: median_seconds(argv, args.source.resolve()) for label, argv in rows}
    base = seconds["python -c pass"]
    width = max(len(label) for label, _ in rows)
    print(f"source: {args.source}, {os.cpu_count()} cores, median of 3 fresh processes")
    print(f"{'command':<{width}}  {'seconds':>7}  {'x pass':>6}  under {LIMIT:g} s")
    for label, _ in rows:
        s = seconds[label]
        if s is None:
            print(f"{label:<{width}}  {'failed':>7}")
            continue
        verdict = "" if label.startswith("python -c") else ("pass" if s < LIMIT else "FAIL")
        print(f"{label:<{width}}  {s:7.3f}  {s / base:6.1f}  {verdict}".rstrip())


if __name__ == "__main__":
    main()
