"""`regmix validate` and `--dry-run`: every problem of an experiment, or what would train; nothing is written."""

from pathlib import Path

import pytest
from test_bad_input import folder_hashes
from test_pipeline import EXPERIMENT

from regmix.__main__ import main as regmix
from regmix.data.prepare import prepare
from regmix.settings.run_config import RunConfig, save_run_config
from regmix.settings.training import TrainingSettings


def test_validate_plans_a_good_experiment_and_writes_nothing(workdir, capsys):
    before = folder_hashes(workdir)
    assert regmix(["validate", "tiny.yaml"]) == 0
    out = capsys.readouterr().out
    assert "tiny.yaml: no problems found" in out
    assert "domains code, legal, prose" in out and "objective: mean validation loss of prose" in out
    # 8 runs of the sweep, 2 anchors x 3 seeds, 3 verification seeds; 6 steps x 4 x 32 tokens each
    assert "method regmix: 8 proxy runs, then 3 verification runs" in out and "= 6 runs" in out
    assert "6 steps x 4 sequences x 32 tokens = 768 tokens a run" in out
    assert "proxy runs: 17, 13,056 tokens in all" in out and "proxy: tinyllama_demo (0.08M" in out
    assert "large run: tinyllama_1_1b (969M non-embedding parameters)" in out
    timing = next(line for line in out.splitlines() if line.startswith("time here ("))
    assert "a step" in timing and "17 runs" in timing
    assert folder_hashes(workdir) == before  # no file written, none changed: a pipeline after it sees the same


def test_validate_checks_the_space_on_the_corpus_as_last_prepared(workdir, capsys):
    prepare("src", "data/tiny", vocab_size=300, progress=False)
    Path("tiny.yaml").write_text(EXPERIMENT + "search: {bounds: {prose: [0.9, 1.0], code: [0.5, 1.0]}}\n")
    before = folder_hashes(workdir)
    assert regmix(["validate", "tiny.yaml", "--no-timing"]) == 1
    assert "error: tiny.yaml: lower bounds sum to 1.4 > 1" in capsys.readouterr().err
    Path("tiny.yaml").write_text(EXPERIMENT)
    assert regmix(["validate", "tiny.yaml", "--no-timing"]) == 0
    assert "as last prepared: 3 training domains" in capsys.readouterr().out
    assert folder_hashes(workdir / "data") == {k: v for k, v in before.items() if "/data/" in k}


def test_validate_reports_every_problem_naming_its_file(workdir, capsys):
    prepare("src", "data/tiny", vocab_size=300, progress=False)  # the corpus as last prepared, then moved away
    Path("bad.yaml").write_text(EXPERIMENT.replace("target: prose", "target: poetry")
                                .replace("source: src", "source: moved")
                                .replace("regressors: [linear]", "regressors: [linaer]"))
    before = folder_hashes(workdir)
    assert regmix(["validate", "bad.yaml", "--no-timing"]) == 1
    captured = capsys.readouterr()
    errors = captured.err.strip().splitlines()
    assert len(errors) == 3 and all(line.startswith("error: ") for line in errors)
    assert any(line.startswith("error: moved: no such folder") for line in errors)
    assert "error: bad.yaml: target domains ['poetry'] are not valid domains ['code', 'legal', 'prose']" in errors
    assert any(line.startswith("error: bad.yaml: 'fit.regressors'") and "linaer" in line for line in errors)
    assert "bad.yaml: 3 problems; nothing was trained" in captured.out
    assert folder_hashes(workdir) == before


@pytest.mark.parametrize("argv", [["pipeline", "--config", "tiny.yaml"],
                                  ["compare", "--config", "tiny.yaml", "--methods", "regmix", "bo"]])
def test_dry_run_trains_nothing(workdir, capsys, argv):
    before = folder_hashes(workdir)
    assert regmix(argv + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "method regmix: 8 proxy runs" in out and "time here" in out and "nothing was trained" in out
    assert ("method bo: 24 proxy runs" in out) == ("bo" in argv)
    assert not Path("runs").exists() and not Path("mixture_config").exists() and not Path("data").exists()
    assert folder_hashes(workdir) == before


def test_train_dry_run_lists_bad_configs_then_what_would_train(tiny_corpus, tmp_path, capsys):
    settings = TrainingSettings.from_name("demo", max_step=3, block_size=16, global_batch_size=4, micro_batch_size=2)
    mixture = tiny_corpus.uniform()
    for name in ("a", "b", "c"):
        config = RunConfig(name, mixture, tiny_corpus.valid_domains, settings)
        save_run_config(config, tmp_path / "cfg" / f"{name}.yaml")
    argv = ["train", "--config", str(tmp_path / "cfg"), "--corpus", str(tiny_corpus.root), "--output",
            str(tmp_path / "runs"), "--dry-run"]
    assert regmix(argv) == 0
    out = capsys.readouterr().out
    assert "0 of 3 runs already finished" in out and "3 steps x 4 sequences x 16 tokens = 192 tokens a run" in out
    assert "proxy runs: 3, 576 tokens in all" in out and "a step" in out and not (tmp_path / "runs").exists()
    bad = tmp_path / "cfg" / "b.yaml"
    bad.write_text(bad.read_text().replace("tinyllama_demo", "tinyllama_dmo"))
    assert regmix(argv) == 1
    assert f"error: {bad}: model_name must be a model preset" in capsys.readouterr().err
