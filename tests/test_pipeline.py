"""The one-command pipeline end to end on a tiny corpus, its resumption, and the transfer check."""

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from test_bad_input import folder_hashes

from regmix.core.files import ConfigError
from regmix.core.mixture import Mixture
from regmix.core.objective import Objective
from regmix.core.results import load_result
from regmix.regression.fit import main as fit_main
from regmix.settings.run_config import RunConfig, load_run_config
from regmix.settings.training import TrainingSettings
from regmix.study.corpus import prepare_experiment_corpus
from regmix.study.experiment import load_experiment
from regmix.study.runner import run_study
from regmix.study.transfer import format_table, transfer

WORDS = {"code": "def return import class self lambda yield for while if".split(),
         "prose": "the a river mountain quietly walked over under beneath sky".split(),
         "legal": "hereby pursuant license warranty liability party shall herein".split()}

EXPERIMENT = """\
name: tiny
target: prose
corpus: {source: src, prepared: data/tiny, vocab_size: 300}
sweep: {num_configs: 8, workers: 1, wandb: "off"}
synthesis: {maximum_usage: 3.0}
proxy: {block_size: 32, global_batch_size: 4, micro_batch_size: 4, max_step: 6, warmup_steps: 1,
        eval_step_interval: 6, eval_tokens: 256}
fit: {regressors: [linear], folds: 4}
simulation: {candidates: 20000, top_k: 16}
"""


def write_corpus(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split, count in (("train", 60), ("valid", 8)):
        (root / split).mkdir(parents=True)
        for domain, words in WORDS.items():
            name = f"{domain}_0.jsonl" if split == "train" else f"{domain}.jsonl"
            lines = [json.dumps({"text": " ".join(rng.choice(words, 40))}) for _ in range(count)]
            (root / split / name).write_text("\n".join(lines) + "\n")


def test_pipeline_end_to_end_then_nothing_trained_again(workdir):
    lines: list[str] = []
    summary = run_study(load_experiment("tiny.yaml"), report=lines.append)
    optimal = load_run_config("mixture_config/tiny/regmix/optimal_mixture.yaml")
    assert optimal.train.domains == ("code", "legal", "prose")
    assert optimal.train.weights.sum() == pytest.approx(1.0)
    assert optimal.training.model_name == "tinyllama_1_1b" and optimal.valid == ("prose",)
    runs = summary["runs"]  # natural and uniform, 3 seeds each; the optimum with the same seeds
    assert (runs["method"], runs["anchors"], runs["verification"], runs["failed"]) == (8, 6, 3, 0)
    for plot in summary["files"]["plots"]:
        assert Path(plot).read_bytes()[:4] == b"\x89PNG"
    report = json.loads(Path("runs/tiny/regmix/report.json").read_text())
    assert report["details"]["regressor"] == "linear" and Path("runs/tiny/regmix/regressor.npz").exists()
    assert "objective:       mean validation loss of prose" in "\n".join(lines)
    caps = optimal.extra["repetition_caps"]  # a tiny corpus and a 1B run: the limit is raised, and said so
    assert caps["target_tokens"] == 25_000 * 512 * 2048 and caps["epoch_limit"] > caps["repetitions"] == 4
    assert all(optimal.train[d] <= cap + 1e-9 for d, cap in caps["caps"].items())
    assert set(optimal.extra["epochs"]) == {"code", "legal", "prose"}
    text = "\n".join(lines).splitlines()
    small = [line for line in text if line.startswith("corpus:          too small for the large run")]
    assert small and "--max-step" in small[0] and "epochs" not in optimal.extra["repetition_caps"]["caps"]
    assert Path("runs/tiny/regmix/regressor_cv.png").read_bytes()[:4] == b"\x89PNG"  # CV predicted vs actual
    assert "runs/tiny/regmix/regressor_cv.png" in summary["files"]["plots"]
    assert report["units"]["spearman"] == "percent" and report["units"]["r2"] == "fraction of variance"
    table = summary["verification"]  # the optimum trained with the anchors' seeds, next to them
    assert set(table["mixtures"]) == {"optimal", "natural", "uniform"} and table["seeds"] == 3
    assert len(table["mixtures"]["optimal"]["objectives"]) == 3 and set(table["beats"]) == {"natural", "uniform"}
    assert summary["noise_floor"] > 0 and "vs seed noise floor" in summary["gain"]
    assert any(line.startswith("verification (proxies, held-out part)") for line in text)
    assert any(line.startswith("  verdict (Welch's t-test, one-sided, p < 0.05, 3 seeds") for line in text)
    bottom = Path("runs/tiny/regmix/report.md").read_text().splitlines()[0]
    assert bottom.startswith("**") and summary["bottom_line"] in bottom
    assert load_result("runs/tiny/proxies/n1").settings["corpus"] == "tiny"  # the prepared corpus, data/tiny
    assert [Path(p).name for p in summary["files"]["csv"]] == ["train_mixture_proxy.csv", "train_tiny_loss_proxy.csv"]
    fitted = fit_main(["--study", "runs/tiny/regmix", "--model", "linear", "--folds", "1", "--output", "fit.npz"])
    assert fitted.domains == ("code", "legal", "prose") and "prose" in fitted.targets  # the stage reads the folder

    again: list[str] = []
    rerun = run_study(load_experiment("tiny.yaml"), report=again.append)
    assert not any("] round" in line or "verification: training" in line for line in again), again
    assert any("resuming" in line for line in again) and rerun["optimal"] == summary["optimal"]

    # a setting that changes only the recommendation: computed again, nothing trained
    Path("tiny.yaml").write_text(EXPERIMENT.replace("top_k: 16", "top_k: 8"))
    third: list[str] = []
    run_study(load_experiment("tiny.yaml"), report=third.append)
    assert not any("] round" in line for line in third) and any("mean of the top 8" in line for line in third)
    Path("runs/tiny/regmix/study.json").write_text('{"version": 1, "ab\x01')
    with pytest.raises(ConfigError, match="study.json: not valid JSON"):
        run_study(load_experiment("tiny.yaml"), report=lambda line: None)


def test_changed_settings_do_not_mix_with_old_runs(workdir):
    run_study(load_experiment("tiny.yaml"), report=lambda line: None)
    Path("tiny.yaml").write_text(EXPERIMENT.replace("maximum_usage: 3.0", "maximum_usage: 4.0"))
    with pytest.raises(ConfigError, match="study.json: a study with other synthesis, upper than the experiment"):
        run_study(load_experiment("tiny.yaml"), report=lambda line: None)


BAD_EXPERIMENTS = [
    ("proxy: {max_stepz: 3}\n", r"bad.yaml: unknown key 'max_stepz' in 'proxy:' \(did you mean 'max_step'\?\)"),
    ("swep: {}\n", r"unknown key 'swep' \(did you mean 'sweep'\?\)"),
    ("sweep: {num_configs: many}\n", "'sweep.num_configs' must be a whole number"),
    ("target: {prose: .nan, code: 0.5}\n", r"bad.yaml: target 'prose': the weight must be a number >= 0, "
                                           "got nan"),
    ("target: 3\n", "the target must be a valid domain"),
    ("method: cma\n", r"bad.yaml: unknown method 'cma'; known: \['aioli', 'bo', .*'turbo'\]"),
    ("search: {budgett: 3}\n", r"bad.yaml: unknown key 'budgett' in 'search:' \(did you mean 'budget'\?\)"),
]


def test_experiment_errors_name_the_file(workdir):
    bad = workdir / "bad.yaml"
    for text, problem in BAD_EXPERIMENTS:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=problem):
            load_experiment(bad)
    bad.write_text("target: [prose, code]\nfit: {regressors: linear}\n")
    experiment = load_experiment(bad)
    assert experiment.target == Objective({"prose": 0.5, "code": 0.5}) and experiment.fit.regressors == ["linear"]


def test_unknown_target_stops_before_any_proxy_trains(workdir):
    Path("tiny.yaml").write_text(EXPERIMENT.replace("target: prose", "target: wiki"))
    with pytest.raises(ConfigError, match=r"tiny.yaml: target domains \['wiki'\] are not valid domains"):
        run_study(load_experiment("tiny.yaml"), report=lambda line: None)
    assert not Path("runs/tiny/proxies").exists()


def test_transfer_trains_every_mixture_with_the_same_budget(tiny_corpus, tmp_path, capsys):
    weights = tiny_corpus.token_distribution().to_dict()
    optimal = RunConfig("optimal_mixture", Mixture.from_dict({d: 1 / len(weights) for d in weights}),
                        tiny_corpus.valid_domains, extra={"objective": {"metric/alpha_val_loss": 1.0}})
    other = tmp_path / "mine.yaml"
    other.write_text(f"train: {{train_{tiny_corpus.train_domains[0]}: 1.0}}\n")
    training = TrainingSettings(model_name="tinyllama_demo", block_size=32, global_batch_size=4, micro_batch_size=4,
                                max_step=3, warmup_steps=1, eval_step_interval=3, eval_tokens=128)
    results = transfer(optimal, tiny_corpus, ["natural", "uniform", str(other)], training, tmp_path / "t",
                       workers=1, device="cpu", wandb_mode="off")
    assert set(results) == {"optimal", "natural", "uniform", "mine"}
    assert all(len(r) == 1 and r[0].ok and r[0].tokens == 3 * 4 * 32 for r in results.values())
    out = capsys.readouterr().out
    assert "objective" in out and "*" in out and "s per step here" in out
    assert "verdict: none, a test needs 2 seeds" in out
    assert not (tmp_path / "t" / ".estimate").exists()
    header = format_table(results, Objective({"alpha": 1.0})).splitlines()[0].split()
    assert header[2:] == ["optimal", "natural", "uniform", "mine"]
    seeded = transfer(optimal, tiny_corpus, ["natural"], training, tmp_path / "s", workers=1, device="cpu",
                      wandb_mode="off", seeds=[1, 2], estimate=False)
    assert [r.settings["seed"] for r in seeded["optimal"]] == [1, 2]
    out = capsys.readouterr().out
    assert "±" in out and "verdict (Welch's t-test, one-sided, p < 0.05, 2 seeds" in out and "s per step" not in out
    changed = transfer(optimal, tiny_corpus, ["natural"], dataclasses.replace(training, max_step=2), tmp_path / "t",
                       workers=1, device="cpu", wandb_mode="off", estimate=False)
    assert changed == {}, "results of the 3-step runs must not pass for 2-step ones"
    assert "other settings (max_step)" in capsys.readouterr().out

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train: {train_nowhere: 1.0}\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown domains \['nowhere'\]"):
        transfer(optimal, tiny_corpus, [str(unknown)], training, tmp_path / "t2", workers=1, device="cpu",
                 wandb_mode="off")


def test_simulation_settings_are_checked_when_the_experiment_is_read(workdir):
    for extra, problem in (("simulation: {optimum: best}", "'simulation.optimum' must be topk or exact"),
                           ("simulation: {guard_margin: 0.02}", "needs 'simulation.optimum: exact'"),
                           ("simulation: {repetitions: -1}", "'simulation.repetitions' must be >= 0"),
                           ("sweep: {anchor_seeds: -1}", "'sweep.anchor_seeds' must be >= 0")):
        Path("bad.yaml").write_text(extra + "\n")
        with pytest.raises(ConfigError, match=f"bad.yaml: .*{problem}"):
            load_experiment("bad.yaml")
    Path("ok.yaml").write_text("simulation: {optimum: exact, guard_margin: 0.02, kl: 0.05}\n")
    assert load_experiment("ok.yaml").simulation.guard_margin == 0.02


def test_a_prepared_corpus_without_a_source_is_used_as_it_is(tiny_corpus, tmp_path):
    """`corpus: {prepared: X}` with no source: X's own corpus, never replaced by the embedded default one."""
    corpus = tmp_path / "mine"
    shutil.copytree(tiny_corpus.root, corpus)
    before = folder_hashes(corpus)
    (tmp_path / "exp.yaml").write_text(f"name: mine\ncorpus: {{prepared: {corpus}}}\n")
    manifest, objective = prepare_experiment_corpus(load_experiment(tmp_path / "exp.yaml"), report=lambda line: None)
    assert manifest.train_domains == tiny_corpus.train_domains
    assert set(objective.domains) == set(tiny_corpus.valid_domains)
    assert folder_hashes(corpus) == before
    (tmp_path / "file.yaml").write_text(f"name: f\ncorpus: {{prepared: {corpus / 'manifest.json'}}}\n")
    with pytest.raises(ConfigError, match="file.yaml: 'corpus.prepared' is .*manifest.json, a file"):
        prepare_experiment_corpus(load_experiment(tmp_path / "file.yaml"), report=lambda line: None)


def test_a_pile_style_corpus_through_the_whole_pipeline(workdir):
    """Mixed-domain .jsonl.zst files, the domain in meta.pile_set_name, the valid split carved from train."""
    from test_sources import pile_style

    pile_style(Path("pile"))
    Path("pile.yaml").write_text(EXPERIMENT.replace("name: tiny", "name: pile").replace(
        "target: prose\n", "").replace(
        "corpus: {source: src, prepared: data/tiny, vocab_size: 300}",
        "corpus: {source: pile, prepared: data/pile, vocab_size: 300, domain_field: meta.pile_set_name,\n"
        "         rename: {Pile-CC: pile_cc}, valid_fraction: 0.2, min_tokens: 100}").replace(
        'sweep: {num_configs: 8, workers: 1, wandb: "off"}', 'sweep: {num_configs: 6, anchor_seeds: 0, workers: 1, '
                                                           'wandb: "off"}'))
    summary = run_study(load_experiment("pile.yaml"), report=lambda line: None)
    assert set(summary["optimal"]) == {"FreeLaw", "Github", "pile_cc", "other"}
    assert summary["objective"].keys() <= {"FreeLaw", "Github", "pile_cc", "other"}
    assert load_run_config("mixture_config/pile/regmix/optimal_mixture.yaml").train.weights.sum() == \
        pytest.approx(1.0)
    from regmix.export.__main__ import main as export

    files = export(["mixture_config/pile/regmix/optimal_mixture.yaml", "--to", "olmo-core", "megatron", "--corpus",
                    "data/pile", "--output", "exports"])  # the answer, as the large run's trainer reads it
    sources = yaml.safe_load(files["olmo-core"][0].read_text())["source_mixture"]["sources"]
    assert sum(s["target_ratio"] for s in sources) == pytest.approx(1.0)
    assert all(Path(p).is_file() for s in sources for p in s["paths"])  # the prepared shards themselves
    assert Path("exports/megatron/data_args.txt").read_text().split()[1].startswith(str(Path.cwd()))


def test_reuse_searches_the_earlier_optimum_as_one_domain_and_answers_over_every_domain(workdir):
    """Olmix's mixture reuse: `prose` is new; code and legal keep the earlier optimum's 2:1; `poetry` is gone."""
    from regmix.study.reuse import main as reuse

    Path("old.yaml").write_text("train: {train_code: 0.6, train_legal: 0.3, train_poetry: 0.1}\n"
                                "valid: {valid_prose: 1.0}\n")
    Path("tiny.yaml").write_text(EXPERIMENT.replace("target: prose\n", ""))  # the mean of every valid domain
    summary = reuse(["--config", "tiny.yaml", "--previous", "old.yaml", "--runs", "6"])
    optimal = load_run_config("mixture_config/tiny_reuse/regmix/optimal_mixture.yaml")
    assert set(optimal.train.domains) == {"code", "legal", "prose"}
    assert optimal.train["code"] > 0 and optimal.train["code"] == pytest.approx(2 * optimal.train["legal"], rel=1e-6)
    reuse_section = optimal.extra["reuse"]
    assert set(reuse_section["searched"]) == {"existing", "prose"} and reuse_section["removed"] == ["poetry"]
    assert reuse_section["frozen_share"] == pytest.approx(optimal.train["code"] + optimal.train["legal"], abs=1e-5)
    assert summary["runs"]["method"] == 6 and set(summary["optimal"]) == {"existing", "prose"}
    trained = load_run_config(next(Path("mixture_config/tiny_reuse/config_proxy").glob("n*.yaml")))
    assert set(trained.train.domains) <= {"code", "legal", "prose"}  # runs train on the corpus's own domains
    assert trained.train["code"] == pytest.approx(2 * trained.train["legal"], rel=1e-6)
    with pytest.raises(ConfigError, match="old.yaml: every domain of the corpus is in the earlier optimum"):
        Path("old.yaml").write_text("train: {train_code: 0.5, train_legal: 0.3, train_prose: 0.2}\nvalid: {}\n")
        reuse(["--config", "tiny.yaml", "--previous", "old.yaml", "--runs", "6"])


def test_the_proxy_section_may_start_from_a_preset(tmp_path):
    path = tmp_path / "low.yaml"
    path.write_text("proxy: {preset: demo_low_lr, max_step: 50}\n")
    proxy = load_experiment(path).proxy
    assert (proxy.learning_rate, proxy.max_step, proxy.model_name) == (3e-4, 50, "tinyllama_demo")
    path.write_text("proxy: {preset: demo_lowlr}\n")
    with pytest.raises(ConfigError, match=r"low.yaml: unknown 'proxy.preset' 'demo_lowlr' \(did you mean "):
        load_experiment(path)


def test_larger_is_one_scale_or_a_list_and_each_is_checked(tmp_path):
    path = tmp_path / "scales.yaml"
    path.write_text("larger: {runs: 4, max_step: 300}\n")
    assert list(load_experiment(path).scales) == ["larger"]
    path.write_text("sweep: {num_configs: 40}\nlarger: {model_name: tinyllama_1M}\n")
    experiment = load_experiment(path)
    assert experiment.scales["larger"].count(experiment.sweep.num_configs) == 10  # unset: a quarter, not nothing
    assert experiment.scales["larger"].count(8) == 2  # of the swarm a command gives it
    path.write_text("larger: {runs: 0}\n")
    assert load_experiment(path).scales == {}  # 0 runs: one scale, as RegMix
    path.write_text("larger: [{runs: 8, model_name: tinyllama_1M},\n"
                    "         {runs: 4, model_name: tinyllama_1M, max_step: 300}]\n")
    experiment = load_experiment(path)
    assert list(experiment.scales) == ["larger", "larger2"]
    trained = [experiment.training(scale) for scale in (None, "larger", "larger2")]
    assert [(t.model_name, t.max_step) for t in trained] == [("tinyllama_demo", 100), ("tinyllama_1M", 100),
                                                             ("tinyllama_1M", 300)]
    problems = {"larger: [{runs: 4, max_step: 300}, {runs: 2, max_step: 300}]":
                r"'larger\[1\]' .* is the scale of 'larger\[0\]'",
                "larger: [{runs: 4}, {runs: 2, model_name: tinyllama_9M}]": r"'larger\[1\]\.model_name'",
                "larger: 8": "'larger:' must be a mapping",
                "larger: [{runs: 4, model_name: tinyllama_demo}]": ".*is the scale of the proxies already",
                "larger: [{runs: 0, max_step: 300}]": r"'larger': 'runs' must be in \[1, sweep.num_configs",
                "larger: [{runs: 2}, {runs: 2, max_stp: 300}]": r"unknown key 'max_stp' in 'larger\[1\]:' \(did you"}
    for text, error in problems.items():
        path.write_text(text + "\n")
        with pytest.raises(ConfigError, match="scales.yaml: " + error):
            load_experiment(path)


def test_a_study_with_larger_scales_trains_shared_mixtures_again_and_answers_for_the_large_run(workdir):
    Path("tiny.yaml").write_text(EXPERIMENT.replace("fit: {regressors: [linear], folds: 4}",
                                                    "fit: {regressors: [scaling, linear], folds: 2}")
                                 .replace("num_configs: 8", "num_configs: 14")
                                 .replace("top_k: 16}", "top_k: 16, large_tokens: 3e9}")
                                 + "larger: [{runs: 4, max_step: 9, model_name: tinyllama_demo},\n"
                                   "         {runs: 3, max_step: 12, model_name: tinyllama_demo}]\n")
    lines: list[str] = []
    summary = run_study(load_experiment("tiny.yaml"), report=lines.append)
    assert summary["runs"]["method"] == 14 and summary["runs"]["larger"] == 7
    state = json.loads(Path("runs/tiny/regmix/study.json").read_text())
    larger = [t["name"] for t in state["trials"] if t["source"] == "larger"]
    assert larger == ["n1_larger", "n2_larger", "n3_larger", "n4_larger", "n1_larger2", "n2_larger2", "n3_larger2"]
    assert load_result(Path("runs/tiny/proxies/n1_larger2")).step == 12  # each larger scale's steps
    scales = state["proposer"]["scales"]
    assert {tuple(s) for s in scales} == {(scales[0][0], steps * 4 * 32) for steps in (6, 9, 12)}
    header = Path("runs/tiny/regmix/train_mixture_proxy.csv").read_text().splitlines()[0]
    assert header.endswith(",params,tokens")  # the study's CSV keeps each run's scale, for `fit --study`
    report = json.loads(Path("runs/tiny/regmix/report.json").read_text())
    scale = report["details"]["predicted_at"]  # the optimum for the large run, the proxies' beside it
    steps = round(3e9 / (512 * 2048))  # the large run's tokens as stated, in whole steps of its batch
    assert scale["tokens"] == steps * 512 * 2048 and scale["proxies_tokens"] == 12 * 4 * 32  # the largest proxies
    assert load_run_config(Path("mixture_config/tiny/regmix/optimal_mixture.yaml")).training.max_step == steps
    assert set(scale["proxies_optimum"]) == {"code", "legal", "prose"}
    assert scale["single_scale_regressor"] == "linear"  # the single-scale regressors' best, beside it
    assert set(scale["single_scale_optimum"]) == {"code", "legal", "prose"}
    text = "\n".join(lines)
    assert "scale:           scaling is scale-aware" in text and "natural   optimal   proxies    single" in text
    assert any("round 1: training 14 method, 7 larger" in line for line in lines)
