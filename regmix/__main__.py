"""`regmix <stage> ...`: every command of regmix under one name (the console script of pyproject.toml).

Each subcommand is the module that `python -m` runs; it is imported only when called, so
`regmix --help` and `regmix <stage> --help` start fast.
"""

from __future__ import annotations

import importlib
import sys
from typing import Sequence

from regmix.cli import run_command

COMMANDS: dict[str, tuple[str, str]] = {  # name: (module with main(argv), what it does)
    "prepare": ("regmix.data.prepare", "tokenize a corpus into shards and a manifest"),
    "synthesize": ("regmix.search.synthesize", "random proxy mixture configs from the corpus' prior"),
    "train": ("regmix.train_proxy", "train proxy models: one config or a folder of them"),
    "collect": ("regmix.study.collect", "proxy runs -> RegMix's mixture and loss CSVs"),
    "fit": ("regmix.regression.fit", "fit regressors from mixture to loss, chosen by cross-validation"),
    "simulate": ("regmix.regression.simulate", "score candidate mixtures with a fitted model -> optimal mixture"),
    "predict": ("regmix.regression.predict", "a fitted model's predicted losses for mixtures you have"),
    "validate": ("regmix.study.validate", "check an experiment and print what it would train, training nothing"),
    "pipeline": ("regmix.pipeline", "a whole study from one experiment YAML (any method), resumable"),
    "search": ("regmix.search.__main__", "a sequential search (bo, turbo, random, regmix) with real proxies"),
    "online": ("regmix.online.__main__", "one online mixing method (aioli, doremi, ...) or a static baseline"),
    "compare": ("regmix.study.compare", "several methods on one corpus and objective, head to head"),
    "reuse": ("regmix.study.reuse", "a study over a changed domain set, an earlier optimum frozen as one domain"),
    "transfer": ("regmix.study.transfer", "train the optimum and baselines at a larger scale with seeds"),
    "pretrain": ("regmix.train.pretrain", "the large run on a mixture config"),
    "models": ("regmix.train.catalog", "the models a run may name (presets, litgpt's) with their parameter counts"),
    "export": ("regmix.export.__main__", "a mixture config as another trainer's files (Megatron, OLMo-core, ...)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: regmix <command> [--help] ...", "", "commands:"]
    lines += [f"  {name:<{width}}  {about}" for name, (_, about) in COMMANDS.items()]
    return "\n".join(lines + ["", "`regmix <command> --help` lists a command's flags."])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"regmix: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv[0] = f"regmix {name}"
    return run_command(module.main, rest)


if __name__ == "__main__":
    raise SystemExit(main())
