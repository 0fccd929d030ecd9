"""Models by name: presets, litgpt's names and model_config.yaml files, on our vocabulary; `regmix models`;
a non-LLaMA model trains (one at a time where proxies would be stacked) and runs the large run."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch
import yaml
from conftest import TINY_VOCAB
from litgpt import Config

from regmix.__main__ import main as regmix_main
from regmix.cli import run_command
from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.results import load_result
from regmix.core.schema import CHECKPOINT_NAME
from regmix.settings.run_config import RunConfig, load_run_config, run_config_paths, save_run_config
from regmix.settings.training import TrainingSettings
from regmix.study.experiment import load_experiment
from regmix.train import catalog
from regmix.train.models import build_model, model_config, non_embedding_parameters, parameter_counts
from regmix.train.pretrain import main as pretrain
from regmix.train.stacked import StackedEngine, StackedGPT, stack_problem
from regmix.train.sweep import train_sweep

TINY = dict(global_batch_size=4, micro_batch_size=2, max_step=3, warmup_steps=1, eval_step_interval=3,
            save_step_interval=3, block_size=32, eval_tokens=128, learning_rate=3e-3, min_lr=3e-4)


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    torch.set_num_threads(1)


def test_a_litgpt_name_brings_its_architecture_on_our_vocabulary():
    model = build_model("pythia-14m", TINY_VOCAB, 32)
    c = model.config
    assert c.name == "pythia-14m" and (c.n_layer, c.n_embd, c.n_head) == (6, 128, 4)
    assert (c.norm_class_name, c.mlp_class_name, c.parallel_residual, c.bias) == ("LayerNorm", "GptNeoxMLP", True, True)
    assert c.padded_vocab_size == TINY_VOCAB and c.block_size == 32, "our tokenizer and context, not pythia's 50k"
    assert model.transformer.wte.weight.shape == (TINY_VOCAB, 128) and model.lm_head.out_features == TINY_VOCAB
    assert model_config("PYTHIA-14M", 100, 16).name == "pythia-14m", "any case"
    assert model_config("EleutherAI/pythia-14m", 100, 16).padded_vocab_size == 128, "padded to a multiple of 64"
    smol = model_config("smollm2-135m", 1000, 64)
    assert (smol.name, smol.n_query_groups, smol.mlp_class_name, smol.padded_vocab_size) == \
        ("SmolLM2-135M", 3, "LLaMAMLP", 1024)
    assert stack_problem(smol) is None and "parallel_residual" in stack_problem(c), "LLaMA blocks stack, NeoX not"


def test_a_model_config_file_is_read_with_our_vocabulary(tmp_path):
    """A litgpt model_config.yaml (as litgpt writes it next to a checkpoint, its own vocabulary inside)."""
    path = tmp_path / "model_config.yaml"
    path.write_text(yaml.dump({**dataclasses.asdict(Config.from_name("pythia-14m", n_layer=2)), "name": "mine"}))
    config = model_config(str(path), TINY_VOCAB, 32)
    assert (config.name, config.n_layer, config.parallel_residual) == ("mine", 2, True)
    assert (config.vocab_size, config.padded_vocab_size, config.block_size) == (TINY_VOCAB, TINY_VOCAB, 32)
    run = tmp_path / "run.yaml"
    run.write_text(f"train: {{train_alpha: 1.0}}\nmodel_name: {path}\n")
    assert load_run_config(run).training.model_name == str(path)
    path.write_text("n_layer: 2\nn_wings: 3\n")
    with pytest.raises(ConfigError, match=f"{run}: model_name names an unusable model file: {path}: not a litgpt "
                                          "model config.*n_wings"):
        load_run_config(run)
    path.unlink()
    with pytest.raises(ConfigError, match=f"{run}: .*{path}: file not found"):
        load_run_config(run)


def test_a_misspelled_name_is_one_error_naming_the_file_and_the_closest_name(tmp_path):
    run = tmp_path / "n1.yaml"
    run.write_text("train: {train_alpha: 1.0}\nmodel_name: pythai-14m\n")
    with pytest.raises(ConfigError, match=f"^{run}: model_name must be a model preset .*a litgpt model name "
                                          r".*\(did you mean 'pythia-14m'\?\).*regmix models.*got 'pythai-14m'"):
        load_run_config(run)
    experiment = tmp_path / "study.yaml"
    experiment.write_text("simulation: {large_model: smollm2-153m}\n")
    with pytest.raises(ConfigError, match=f"^{experiment}: 'simulation.large_model' must be .*did you mean "
                                          "'SmolLM2-135M'"):
        load_experiment(experiment)
    experiment.write_text("proxy: {model_name: TinyLlama_1M}\nsimulation: {large_model: pythia-70m}\n")
    assert load_experiment(experiment).proxy.model_name == "TinyLlama_1M"
    assert model_config("TinyLlama_1M", 64, 32).name == "tinyllama_1M", "presets in any case too"
    with pytest.raises(ValueError, match="unknown model_name 'gpt-7'"):
        model_config("gpt-7", 64, 32)


def test_parameter_counts_match_the_built_model():
    """Counted from one block per kind on the meta device, as the real model counts them."""
    for name in ("tinyllama_demo", "pythia-14m", "SmolLM2-135M"):
        config = model_config(name, 512, 64)
        model = build_model(name, 512, 64)
        assert parameter_counts(config) == (non_embedding_parameters(model), sum(p.numel() for p in model.parameters()))


def test_regmix_models_lists_pythia_with_its_size(capsys):
    assert regmix_main(["models", "--filter", "PYTHIA"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("pythia-14m "))
    assert "EleutherAI" in line and "GptNeoxMLP" in line and "parallel residual" in line and line.endswith("no")
    assert "tinyllama" not in out and "vocabulary of 8192 tokens" in out
    entries = {e.name: e for e in catalog.main(["--filter", "pythia-14m", "--vocab-size", "50304"])}
    pythia = entries["pythia-14m"]
    assert 1.1e6 < pythia.non_embedding < 1.3e6 and 14.0e6 < pythia.total < 14.2e6, "pythia-14m is 14M at 50k tokens"
    assert not pythia.stacked and (pythia.layers, pythia.width) == (6, 128)
    presets = {e.name: e for e in catalog.main(["--filter", "regmix"])}
    assert set(presets) == {"tinyllama_demo", "tinyllama_1M", "tinyllama_60M", "tinyllama_1_1b"}
    assert all(e.stacked for e in presets.values()) and 0.9e9 < presets["tinyllama_1_1b"].non_embedding < 1.0e9
    capsys.readouterr()
    assert run_command(catalog.main, ["--filter", "no-such-model"]) == 2
    assert "--filter 'no-such-model': no model" in capsys.readouterr().err
    help_imports = "import sys; from regmix.train.catalog import main\ntry: main(['--help'])\nexcept SystemExit: " \
                   "print(sorted({'torch', 'litgpt'} & set(sys.modules)))"
    quick = subprocess.run([sys.executable, "-c", help_imports], capture_output=True, text=True, check=True)
    assert "--vocab-size" in quick.stdout and quick.stdout.endswith("[]\n"), "--help starts without torch or litgpt"


def test_a_non_llama_model_trains_one_at_a_time_where_proxies_would_stack(tiny_corpus, tmp_path, capsys):
    """pythia-14m (GPT-NeoX blocks) is never stacked as LLaMA blocks: the stacked engine refuses it, and a
    sweep asked to stack trains its proxies one by one through litgpt's GPT, saying so."""
    settings = TrainingSettings(model_name="pythia-14m", **TINY)
    with pytest.raises(ValueError, match="LLaMA-style blocks only; pythia-14m has .*parallel_residual"):
        StackedEngine(settings, [1, 2], TINY_VOCAB, torch.device("cpu"))
    folder = tmp_path / "configs"
    for i, weights in enumerate(({"alpha": 0.5, "beta": 0.5}, {"gamma": 1.0}), start=1):
        save_run_config(RunConfig(f"p{i}", Mixture.from_dict(weights), ("alpha", "beta"),
                                  dataclasses.replace(settings, seed=i)), folder / f"p{i}.yaml")
    entries = train_sweep(run_config_paths(folder), tiny_corpus, tmp_path / "runs", workers=1, group_size=2,
                          device="cpu", wandb_mode="off", progress=False, keep=("p1",))
    assert [e.status for e in entries] == ["finished", "finished"], entries
    out = capsys.readouterr().out
    assert out.count("note: the multi-proxy trainer runs LLaMA-style blocks only; pythia-14m") == 1
    assert "train one at a time" in out
    for name in ("p1", "p2"):
        result = load_result(tmp_path / "runs" / name)
        assert result.step == 3 and result.settings["model_name"] == "pythia-14m"
        assert all(0 < loss < 10 for loss in result.valid_losses.values())
    weights = torch.load(tmp_path / "runs" / "p1" / CHECKPOINT_NAME, weights_only=True)["model"]
    assert weights["transformer.h.0.mlp.fc.weight"].shape == (512, 128), "GPT-NeoX's MLP, not LLaMA's"
    assert "transformer.h.5.norm_1.bias" in weights and weights["lm_head.weight"].shape == (TINY_VOCAB, 128)


def test_the_large_run_on_a_litgpt_model(tiny_corpus, tmp_path):
    path = tmp_path / "optimal_mixture.yaml"
    save_run_config(RunConfig("optimal_mixture", tiny_corpus.token_distribution(), tiny_corpus.valid_domains), path)
    result = pretrain([str(path), "--smoke", "--model-name", "Pythia-14m", "--corpus", str(tiny_corpus.root),
                       "--output", str(tmp_path / "run"), "--wandb", "off", "--block-size", "16"])
    assert result.ok and result.step == 4 and result.settings["model_name"] == "Pythia-14m"
    weights = torch.load(tmp_path / "run" / CHECKPOINT_NAME, weights_only=True)["model"]
    assert weights["transformer.h.5.mlp.fc.weight"].shape == (512, 128), "pythia's 6 NeoX blocks"


def test_a_llama_style_litgpt_model_stacks_exactly(tmp_path):
    """SmolLM2's blocks (3 key/value groups, head size 64, rope base 1e5), two of them from a model_config.yaml:
    the stacked engine's forward and gradients are litgpt's own."""
    path = tmp_path / "smol2.yaml"
    path.write_text(yaml.dump(dataclasses.asdict(Config.from_name("SmolLM2-135M", n_layer=2))))
    models = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        models.append(build_model(str(path), vocab_size=96, block_size=16))
    group = StackedGPT(models, loss_chunk=13)
    batch = torch.randint(0, 96, (2, 2, 17))
    losses = group.loss(batch)
    losses.sum().backward()
    for k, model in enumerate(models):
        logits = model(batch[k, :, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[k, :, 1:].reshape(-1))
        loss.backward()
        assert losses[k].item() == pytest.approx(loss.item(), rel=1e-5)
        for i, p in enumerate(model.parameters()):
            torch.testing.assert_close(group.weights[i].grad[k], p.grad, rtol=1e-4, atol=1e-5)
