"""The large-run entry point: mixture name resolution, and the --smoke path on CPU with resume."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from regmix.cli import RunFailed
from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.results import load_result
from regmix.core.schema import CHECKPOINT_NAME, CONFIG_NAME
from regmix.settings.run_config import RunConfig, load_run_config, save_run_config
from regmix.settings.training import TrainingSettings
from regmix.train.pretrain import main, resolve_mixture

ROOT = Path(__file__).resolve().parents[1]


def test_resolve_mixture(tmp_path):
    root = tmp_path / "mixture_config"
    (root / "config_1b").mkdir(parents=True)
    (root / "demo").mkdir()
    for path in (root / "config_1b" / "regmix.yaml", root / "demo" / "regmix.yaml",
                 root / "demo" / "optimal_mixture.yaml",
                 root / "x" / "dup.yaml", root / "y" / "dup.yaml"):
        path.parent.mkdir(exist_ok=True)
        path.write_text("train: {train_a: 1.0}\n")
    assert resolve_mixture("regmix", root) == root / "config_1b" / "regmix.yaml"
    assert resolve_mixture("optimal_mixture", root) == root / "demo" / "optimal_mixture.yaml"
    assert resolve_mixture(str(root / "demo" / "regmix.yaml"), root) == root / "demo" / "regmix.yaml"
    with pytest.raises(ConfigError, match="ambiguous"):
        resolve_mixture("dup", root)
    with pytest.raises(ConfigError, match=r"no such mixture config: not a file, and no nope\.yaml below .*/$"):
        resolve_mixture("nope", root)
    with pytest.raises(ConfigError, match=r"no regmx\.yaml below .*mixture_config/ \(did you mean 'regmix'\?\)"):
        resolve_mixture("regmx", root)
    for name in ("../demo/regmix", ".hidden"):  # a name is a file name, never a path
        with pytest.raises(ConfigError, match="mixture name .* cannot name a file"):
            resolve_mixture(name, root)
    with pytest.raises(ConfigError, match="no such mixture config"):  # nor a pattern
        resolve_mixture("optimal_*", root)


def test_the_repo_ships_a_1b_config():
    assert resolve_mixture("the_pile_natural", ROOT / "mixture_config").name == "the_pile_natural.yaml"


@pytest.fixture
def mixture_file(tiny_corpus, tmp_path) -> Path:
    path = tmp_path / "optimal_mixture.yaml"
    save_run_config(RunConfig("optimal_mixture", tiny_corpus.token_distribution(), tiny_corpus.valid_domains), path)
    return path


def test_smoke_run_through_the_shell_script(tiny_corpus, mixture_file, tmp_path):
    out = tmp_path / "run"
    result = subprocess.run(["bash", str(ROOT / "model_training" / "pretrain_1b.sh"), str(mixture_file), "--smoke",
                             "--corpus", str(tiny_corpus.root), "--output", str(out), "--wandb", "off"],
                            capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable,
                                                                 "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    final = load_result(out)
    assert final.status == "finished" and final.step == TrainingSettings.from_name("smoke").max_step
    assert set(final.valid_losses) == set(tiny_corpus.valid_domains)
    assert (out / CHECKPOINT_NAME).exists()  # the trained model is kept


def test_resume_continues_from_the_checkpoint(tiny_corpus, mixture_file, tmp_path):
    out = tmp_path / "run"
    args = [str(mixture_file), "--cpu", "--corpus", str(tiny_corpus.root), "--output", str(out), "--wandb", "off",
            "--block-size", "32", "--global-batch-size", "4",
            "--micro-batch-size", "2", "--warmup-steps", "1", "--eval-step-interval", "2", "--eval-tokens", "256",
            "--save-step-interval", "100"]
    first = main(args + ["--max-step", "2"])
    assert first.step == 2
    second = main(args + ["--max-step", "4"])
    assert second.step == 4 and second.status == "finished"
    assert second.settings["model_name"] == "tinyllama_1M", "no --model-name: the config's model_name is trained"
    steps = [json.loads(line)["trainer/global_step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4], "the second run continued from step 2 instead of starting over"


def test_bad_mixture_is_one_clear_error(tiny_corpus, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  train_nowhere: 1.0\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown domains \['nowhere'\]"):
        main([str(bad), "--smoke", "--corpus", str(tiny_corpus.root), "--output", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


def test_a_smoke_run_has_its_own_folder(tiny_corpus, mixture_file, tmp_path, monkeypatch):
    """The real run of a mixture must never find the smoke run's tiny checkpoint in its folder."""
    monkeypatch.chdir(tmp_path)
    main([str(mixture_file), "--smoke", "--corpus", str(tiny_corpus.root), "--wandb", "off"])
    assert load_result(tmp_path / "runs" / "pretrain" / "optimal_mixture_smoke").ok
    assert not (tmp_path / "runs" / "pretrain" / "optimal_mixture").exists()


SMALL = dict(model_name="tinyllama_demo", global_batch_size=4, micro_batch_size=2, warmup_steps=1,
             eval_step_interval=3, save_step_interval=100, block_size=32, eval_tokens=256)


def test_trains_the_settings_its_mixture_file_holds(tiny_corpus, tmp_path):
    """optimal_mixture.yaml carries the large run's settings: a file saying max_step 7 trains 7 steps."""
    path = tmp_path / "optimal_mixture.yaml"
    save_run_config(RunConfig("optimal_mixture", tiny_corpus.token_distribution(), tiny_corpus.valid_domains,
                              TrainingSettings(max_step=7, **SMALL)), path)
    result = main([str(path), "--cpu", "--corpus", str(tiny_corpus.root), "--output", str(tmp_path / "run"),
                   "--wandb", "off"])
    assert result.step == 7 and result.settings["model_name"] == "tinyllama_demo"
    assert result.settings["eval_step_interval"] == 3 and result.requested.close_to(tiny_corpus.token_distribution())
    assert result.achieved is not None and set(result.achieved.domains) == set(tiny_corpus.train_domains)
    assert load_run_config(tmp_path / "run" / CONFIG_NAME).training.max_step == 7  # the proxies' run folder layout
    flagged = main([str(path), "--cpu", "--corpus", str(tiny_corpus.root), "--output", str(tmp_path / "flag"),
                    "--wandb", "off", "--max-step", "3"])
    assert flagged.step == 3, "a command-line flag overrides the file's setting"


def test_refuses_a_checkpoint_of_another_mixture(tiny_corpus, tmp_path):
    first, second = tmp_path / "a.yaml", tmp_path / "b.yaml"
    save_run_config(RunConfig("a", tiny_corpus.token_distribution(), tiny_corpus.valid_domains,
                              TrainingSettings(max_step=3, **SMALL)), first)
    save_run_config(RunConfig("b", Mixture.uniform(tiny_corpus.train_domains), tiny_corpus.valid_domains,
                              TrainingSettings(max_step=3, **SMALL)), second)
    out = tmp_path / "run"
    common = ["--cpu", "--corpus", str(tiny_corpus.root), "--output", str(out), "--wandb", "off"]
    assert main([str(first), *common]).step == 3
    with pytest.raises(ConfigError, match=f"{CHECKPOINT_NAME}: was trained with another mixture"):
        main([str(second), *common, "--max-step", "6"])


def test_a_nan_loss_ends_the_large_run_as_failed(tiny_corpus, tmp_path, monkeypatch):
    from regmix.train import fabric

    monkeypatch.setattr(fabric, "next_token_loss", lambda model, batch: model(batch[:, :-1]).sum() * float("nan"))
    path = tmp_path / "m.yaml"
    save_run_config(RunConfig("m", tiny_corpus.token_distribution(), tiny_corpus.valid_domains,
                              TrainingSettings(max_step=5, **SMALL)), path)
    with pytest.raises(RunFailed, match="m failed at step 1: diverged: training loss is nan"):
        main([str(path), "--cpu", "--corpus", str(tiny_corpus.root), "--output", str(tmp_path / "run"),
              "--wandb", "off"])
    assert load_result(tmp_path / "run").status == "failed"


@pytest.mark.parametrize("name", ["the_pile_natural", "the_pile_human", "the_pile_doremi", "the_pile_cc_only",
                                  "the_pile_regmix"])
def test_the_regmix_papers_comparison_mixtures_are_presets_by_name(name, tiny_corpus, monkeypatch):
    from regmix.study.transfer import baseline_mixture

    monkeypatch.chdir(ROOT)
    config = load_run_config(resolve_mixture(name))
    pile = load_run_config(resolve_mixture("the_pile_natural")).train.domains
    assert config.train.weights.sum() == pytest.approx(1.0, abs=1e-5) and set(config.train.active()) <= set(pile)
    assert config.training.model_name == "tinyllama_1_1b" and config.valid == ("the_pile_pile_cc",)
    if name == "the_pile_regmix":
        assert config.train["the_pile_pile_cc"] == pytest.approx(0.870, abs=1e-3)
    with pytest.raises(ConfigError, match=f"{name}.yaml"):  # found by name; the tiny corpus has other domains
        baseline_mixture(name, tiny_corpus)
