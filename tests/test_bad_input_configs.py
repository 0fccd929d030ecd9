"""Bad names, flags and config files given to synthesize, train_proxy, pipeline and pretrain, and resumes
against a checkpoint of another model: exit code 2, one stderr line naming the file or flag, no traceback,
nothing computed changed and nothing created outside the test's folder (a name like `..` must not escape)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from test_bad_input import check_bad_input
from test_train_proxy import make_config

from regmix import pipeline, train_proxy
from regmix.core.schema import CHECKPOINT_NAME
from regmix.search import synthesize
from regmix.train import pretrain
from regmix.train.sweep import train_proxies

COMMANDS = {"synthesize": synthesize.main, "train_proxy": train_proxy.main, "pipeline": pipeline.main,
            "pretrain": pretrain.main}


@dataclass(frozen=True)
class Case:
    """One bad input. `argv` and `names` may hold {file} (the input file, written first), {corpus}, {out} and
    {run}; the one stderr line must hold one of `names` (the file or flag to fix) and `problem`."""

    id: str
    command: str
    argv: tuple[str, ...]
    names: tuple[str, ...]
    problem: str
    file: Any = None  # the input file: text, or a mapping of changes to make_config()'s YAML
    file_name: str = "n1.yaml"


SYNTHESIZE = ("--prior", "the_pile", "--output", "{out}", "--num-configs", "4")
TRAIN = ("--config", "{file}", "--corpus", "{corpus}", "--output", "{out}", "--wandb", "off", "--no-progress")
PIPELINE = ("--config", "{file}")
PRETRAIN = ("{file}", "--cpu", "--corpus", "{corpus}", "--output", "{run}", "--wandb", "off")


def flag(name: str, value: str, problem: str, names: tuple[str, ...] = ()) -> Case:
    """A synthesize flag given a value it cannot work with."""
    return Case(f"synthesize {name} {value}", "synthesize", (*SYNTHESIZE, name, value), names or (name,), problem)


def config(label: str, changes: Any, problem: str, file_name: str = "n1.yaml") -> Case:
    """A bad config file given to train_proxy --config: the error names the file."""
    return Case(f"config {label}", "train_proxy", TRAIN, ("{file}",), problem, changes, file_name)


def experiment(label: str, text: str, problem: str) -> Case:
    """A bad experiment YAML given to the pipeline: refused when read, before any corpus is built."""
    return Case(f"experiment {label}", "pipeline", PIPELINE, ("{file}",), problem, text, "exp.yaml")


CASES = [
    flag("--minimum", "0.7", "must be 1/k for a whole number k"),  # weights summing to 0.7
    flag("--minimum", "0.3", "must be 1/k for a whole number k"),  # 3 x 0.3: 0.9
    flag("--minimum", "0.5", "must be at most 1/17 for 17 domains"),  # a draw could lose every weight
    flag("--minimum", "0", "must be 1/k"),
    flag("--num-configs", "0", "must be an integer in [1, 1,000,000]"),
    flag("--num-configs", "1.5", "must be an integer in [1, 1,000,000]"),
    flag("--num-configs", "1000000000000", "must be an integer in [1, 1,000,000]"),
    flag("--temperature", "0", "must be > 0"),
    flag("--temperature", "nan", "must be > 0 and finite"),
    flag("--min-strength", "-1", "must be > 0"),
    Case("synthesize --max-strength below --min-strength", "synthesize",
         (*SYNTHESIZE, "--min-strength", "5", "--max-strength", "1"), ("--max-strength",), "must be >= --min-strength"),
    flag("--num-strengths", "0", "must be >= 1"),
    flag("--maximum-usage", "0", "must be > 0"),
    flag("--maximum-usage", "inf", "finite"),
    flag("--sample-multiplier", "0", "must be >= 1"),
    flag("--seed", "-1", "must be in [0, 2**63)"),
    flag("--seed", "99999999999999999999999", "must be in [0, 2**63)"),
    flag("--block-size", "1099511627776", "must be at most 1048576"),
    flag("--max-step", "0", "must be > 0"),
    flag("--micro-batch-size", "3", "must be a multiple of --micro-batch-size 3", ("--global-batch-size",)),
    flag("--learning-rate", "-0.1", "must be > 0"),
    flag("--model-name", "gpt5", "must be a model preset"),
    flag("--lr-schedule", "linear", "must be constant or cosine"),
    flag("--valid", "../x", "cannot name a file"),
    Case("synthesize prior with a path as a domain", "synthesize", ("--prior", "{file}", "--output", "{out}"),
         ("{file}",), "domain '../x' cannot name a file", "train_a: 1\ntrain_../x: 2\n", "prior.yaml"),
    config("named ..yaml", {}, "run name (the file's name) '.' cannot name a file", "..yaml"),
    config("named ...yaml", {}, "run name (the file's name) '..' cannot name a file", "...yaml"),
    config("unknown model", {"model_name": "gpt5"}, "model_name must be a model preset"),
    config("weights not summing to 1", {"train": {"train_alpha": 0.3, "train_beta": 0.3}}, "sum to 0.6"),
    config("negative weight", {"train": {"train_alpha": -0.5, "train_beta": 1.5}}, "must be finite and >= 0"),
    config("NaN weight", {"train": {"train_alpha": float("nan"), "train_beta": 1.0}}, "is NaN"),
    config("unknown domain", {"train": {"train_alpha": 0.5, "train_epsilon": 0.5}}, "unknown domains ['epsilon']"),
    config("domain with a path", {"train": {"train_alpha": 0.5, "train_../b": 0.5}}, "domain '../b' cannot"),
    config("batch not a multiple", {"micro_batch_size": 3}, "global_batch_size must be a multiple of"),
    config("zero steps", {"max_step": 0}, "max_step must be > 0"),
    config("fractional steps", {"max_step": 2.5}, "max_step must be a whole number"),
    config("NaN learning rate", {"learning_rate": float("nan")}, "learning_rate must be > 0 and finite"),
    experiment("name escaping runs/", "name: ../../x\n", "experiment name '../../x' cannot name a file"),
    experiment("hidden name", "name: .x\n", "experiment name '.x' cannot name a file"),
    experiment("section not a mapping", "proxy: 5\n", "'proxy:' must be a mapping"),
    experiment("bad proxy setting", "proxy: {max_step: 0}\n", "'proxy.max_step' must be > 0"),
    experiment("bad synthesis setting", "synthesis: {minimum: 0.7}\n", "'synthesis.minimum' must be 1/k"),
    experiment("unknown regressor", "fit: {regressors: [xgboost]}\n", "'fit.regressors' must name regressors"),
    Case("pretrain mixture name with a path", "pretrain", ("../../x", *PRETRAIN[1:]), ("../../x",),
         "mixture name '../../x' cannot name a file"),
    Case("pretrain mixture named ..yaml", "pretrain", PRETRAIN, ("{file}",), "run name (the file's name) '.'",
         {}, "..yaml"),
    Case("pretrain unknown model flag", "pretrain", (*PRETRAIN, "--model-name", "gpt5"), ("--model-name",),
         "must be a model preset", {}),
]


def write_input(case: Case, folder: Path) -> Path:
    """The case's input file: its text, or make_config()'s YAML with the case's changes."""
    path = folder / case.file_name
    if isinstance(case.file, str):
        path.write_text(case.file)
    elif case.file is not None:
        data = make_config().to_yaml_dict()
        path.write_text(yaml.safe_dump({**data, **case.file}, sort_keys=False))
    return path


def check(case: Case, fill: dict[str, Any], capsys: Any, watched: list[Path], tmp_path: Path) -> None:
    """check_bad_input, and nothing new beside the test's folder (where a `..` name would write)."""
    argv = [a.format(**fill) for a in case.argv]
    outside = sorted(tmp_path.parent.iterdir())
    line = check_bad_input(COMMANDS[case.command], argv, capsys, names=[n.format(**fill) for n in case.names],
                           watched=watched)
    assert case.problem in line, line
    assert sorted(tmp_path.parent.iterdir()) == outside, "a bad input created files outside its folder"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, tiny_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the pipeline's runs/ and mixture_config/, pretrain's runs/pretrain/
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    (out / "runs").mkdir(parents=True)
    (out / "runs" / "kept.txt").write_text("a finished result\n")
    file = write_input(case, inputs)
    fill = {"file": file, "corpus": tiny_corpus.root, "out": out / "runs", "run": out / "runs" / "n1"}
    check(case, fill, capsys, [tmp_path, tiny_corpus.root], tmp_path)


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory) -> Path:
    """The run folder of a 2-step tinyllama_demo proxy with its checkpoint kept."""
    run = tmp_path_factory.mktemp("trained") / "n1"
    train_proxies([make_config(max_step=2)], tiny_corpus, [run], wandb_mode="off", keep_checkpoint=True)
    return run


def tamper(checkpoint: Path, change: Any) -> None:
    state = torch.load(checkpoint, weights_only=True)
    change(state)
    torch.save(state, checkpoint)


RESUMES = [  # (id, model flag, what to do to the checkpoint first, what the error says)
    ("another model", "tinyllama_1M", None, "was trained with another model (tinyllama_demo with block_size 32, "
                                            "the config: tinyllama_1M with block_size 32)"),
    ("weights of another size", "tinyllama_1M",
     lambda state: state["run"]["settings"].update(model_name="tinyllama_1M"),
     "a model of other shapes (lm_head.weight is [64, 64], the config's tinyllama_1M needs [64, 256])"),
    ("a pickled object in the checkpoint", "tinyllama_demo", lambda state: state.update(payload=Path("runs")),
     "unreadable checkpoint"),
]


@pytest.mark.parametrize("label, model, change, problem", RESUMES, ids=[r[0] for r in RESUMES])
def test_resume_against_another_models_checkpoint(label, model, change, problem, trained, tiny_corpus, tmp_path,
                                                  capsys, monkeypatch):
    """pretrain refuses a checkpoint it cannot resume before Fabric starts: no size-mismatch traceback, and the
    checkpoint is kept (weights_only: a pickled object in it is refused, never run)."""
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / CHECKPOINT_NAME).write_bytes((trained / CHECKPOINT_NAME).read_bytes())
    if change is not None:
        tamper(run / CHECKPOINT_NAME, change)
    mixture = tmp_path / "n1.yaml"
    mixture.write_text(yaml.safe_dump(make_config().to_yaml_dict()))
    fill = {"file": mixture, "corpus": tiny_corpus.root, "run": run}
    case = Case(label, "pretrain", (*PRETRAIN, "--max-step", "4", "--model-name", model), (str(run / CHECKPOINT_NAME),),
                problem)
    check(case, fill, capsys, [run, tiny_corpus.root], tmp_path)
