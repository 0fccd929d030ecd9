"""The one place that knows how things are named in files: domain keys, metric columns, file names.

RegMix's files spell a domain three ways: `train_<domain>` in config YAML and the mixture CSV,
`valid_<domain>` in config YAML, and `metric/<domain>_val_loss` in wandb and the loss CSV. In memory
a domain is always its bare name; every conversion to and from those spellings is written here.
Every name that becomes part of a path (configs, experiments, domains, mixtures) passes `safe_name`.

The runs of a study, as regression reads them, are one folder holding RegMix's CSV pair:
`train_mixture_<scale>.csv` and `train_<corpus>_loss_<scale>.csv`, `<corpus>` the name of the prepared
corpus the runs trained on (its folder's name, which each run records; `pile` for runs that recorded none, as
RegMix's published ones). `regmix collect` writes the pair into `data/` (scale `1m`), a pipeline method into
its folder `runs/<experiment>/<method>/` (scale `proxy`); `regmix fit` reads the pair of a folder (`--study`,
default `data/`, the one scale it holds) and writes `model.npz`, which `regmix simulate` reads. So
collect -> fit -> simulate chain with no file flags, and `regmix fit --study runs/<experiment>/<method>`
fits a pipeline's runs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from regmix.core.files import ConfigError

TRAIN_PREFIX = "train_"
VALID_PREFIX = "valid_"
STEP = "trainer/global_step"
TRAIN_LOSS = "metric/train_loss"
LEARNING_RATE = "trainer/lr"
_LOSS = re.compile(r"^metric/(.+)_val_loss$")
_PROBE = re.compile(r"^probe/(.+)_val_loss$")
_ACHIEVED = re.compile(r"^achieved/(.+)$")
_RUN = re.compile(r"n(\d+)")

INDEX_NAME = "index"
# A run's scale, optional columns of the mixture CSV after the weights: non-embedding parameters, tokens trained.
SCALE_COLUMNS = ("params", "tokens")
CONFIG_NAME = "config.yaml"
RESULT_NAME = "result.json"
HISTORY_NAME = "metrics.jsonl"
CHECKPOINT_NAME = "checkpoint.pt"
LOCK_NAME = "lock"
NAME_LENGTH = 128
STUDY_FOLDER = "data"  # where collect writes the CSV pair and fit reads it
COLLECT_SCALE = "1m"  # the scale in collect's file names (RegMix's 1M-parameter proxies)
PIPELINE_SCALE = "proxy"  # the scale in a pipeline method's file names
DEFAULT_CORPUS = "pile"  # the corpus tag of runs that recorded no corpus: RegMix's published runs are the Pile's
MODEL_NAME = "model.npz"  # fit's output, simulate's input
CORPUS_SETTING = "corpus"  # the setting a run records its corpus's name under (result.json, wandb config)
PARAMS_SETTING = "non_embedding_parameters"  # ... its model's size (the scale columns' `params`)
TOKENS_PER_STEP_SETTING = "tokens_per_step"  # ... the tokens of one optimizer step: tokens trained = step x this
_FILE_TAG = re.compile(r"[A-Za-z0-9_.-]+")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_name(name: Any, what: str, source: str | os.PathLike) -> str:
    """`name` as a string if it can be one file or folder name, else a ConfigError naming `source` and the name.

    Run folders are `<output>/<config name>/`, experiments write `runs/<name>/`, a domain names shard
    files: a `/`, a `..` or a leading dot would put files outside their folder or hide them.
    """
    text = str(name)
    problems = [(not text, "is empty"), (len(text) > NAME_LENGTH, f"is over {NAME_LENGTH} characters long"),
                ("/" in text or "\\" in text, "holds a path separator"), (text.startswith("."), "starts with a dot"),
                (_CONTROL.search(text) is not None, "holds a control character")]
    for bad, problem in problems:
        if bad:
            raise ConfigError(source, f"{what} {text[:NAME_LENGTH]!r} cannot name a file: it {problem}")
    return text


def train_key(domain: str) -> str:
    """`train_<domain>`: a training domain's key in config YAML and in the mixture CSV."""
    return TRAIN_PREFIX + domain


def valid_key(domain: str) -> str:
    """`valid_<domain>`: a validation domain's key in config YAML."""
    return VALID_PREFIX + domain


def strip_train(key: str) -> str:
    """The bare domain of a `train_<domain>` key (a bare name is kept, as RegMix's readers do)."""
    return key[len(TRAIN_PREFIX):] if key.startswith(TRAIN_PREFIX) else key


def train_domain(key: str) -> str | None:
    """The domain of a `train_<domain>` column, None for any other name (the mixture CSV is read strictly)."""
    return key[len(TRAIN_PREFIX):] if key.startswith(TRAIN_PREFIX) and len(key) > len(TRAIN_PREFIX) else None


def strip_valid(key: str) -> str:
    return key[len(VALID_PREFIX):] if key.startswith(VALID_PREFIX) else key


def loss_column(domain: str) -> str:
    """`metric/<domain>_val_loss`: RegMix's wandb metric and loss-CSV column of a validation domain."""
    return f"metric/{domain}_val_loss"


def probe_column(domain: str) -> str:
    """`probe/<domain>_val_loss`: the loss on the part of a valid domain methods may measure (loss_column's is
    the held-out part's, which runs are scored on; regmix.data.validation)."""
    return f"probe/{domain}_val_loss"


def probe_domain(column: str) -> str | None:
    match = _PROBE.match(column)
    return match.group(1) if match else None


def perplexity_column(domain: str) -> str:
    return f"metric/{domain}_val_ppl"


def loss_domain(column: str) -> str | None:
    """The validation domain of a loss column, None for any other name."""
    match = _LOSS.match(column)
    return match.group(1) if match else None


def as_valid_domain(name: str) -> str:
    """A bare validation domain from a bare domain or its loss column (users may type either)."""
    domain = loss_domain(name)
    return name if domain is None else domain


def achieved_column(domain: str) -> str:
    """`achieved/<domain>`: the share of a domain in the sequences drawn so far (logged at evaluations)."""
    return f"achieved/{domain}"


def achieved_domain(column: str) -> str | None:
    match = _ACHIEVED.match(column)
    return match.group(1) if match else None


def weight_column(domain: str) -> str:
    """`mixture/<domain>`: the sampling weight in force at a step (logged for changing mixtures)."""
    return f"mixture/{domain}"


def run_index(name: str) -> int | str:
    """RegMix's CSV row index of a run: i for config n<i>, the name itself otherwise."""
    match = _RUN.fullmatch(name)
    return int(match.group(1)) if match else name


def is_file_tag(text: str) -> bool:
    """Whether `text` may be part of a file name as it is (letters, digits, `_`, `.`, `-`)."""
    return _FILE_TAG.fullmatch(text) is not None


def corpus_tag(name: str) -> str:
    """A corpus's name as part of the loss CSV's name: any run of other characters becomes `_`."""
    return "_".join(_FILE_TAG.findall(name)) or DEFAULT_CORPUS


def runs_folder(configs: str | os.PathLike) -> Path:
    """`runs/<name of the configs folder>` (a config file's folder): where `regmix train` puts a sweep's runs by
    default, and `regmix collect` looks for them."""
    configs = Path(configs)
    return Path("runs") / (configs if configs.is_dir() else configs.parent).resolve().name


def mixture_csv_name(scale: str, split: str = "train") -> str:
    """`train_mixture_<scale>.csv`; RegMix's published held-out runs use split `test`."""
    return f"{split}_mixture_{scale}.csv"


def mixture_csv_scale(name: str, split: str = "train") -> str | None:
    """The scale of a mixture CSV's file name (mixture_csv_name's inverse), None for any other name."""
    head, tail = mixture_csv_name("\n", split).split("\n")
    inside = name[len(head):len(name) - len(tail)]
    return inside if name.startswith(head) and name.endswith(tail) and inside else None


def loss_csv_name(corpus: str, scale: str, split: str = "train") -> str:
    """`train_<corpus>_loss_<scale>.csv`, the losses of the runs of `mixture_csv_name(scale)`."""
    return f"{split}_{corpus}_loss_{scale}.csv"
