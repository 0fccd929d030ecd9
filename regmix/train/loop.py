"""The training loop, the same for one proxy, K stacked proxies and the large Fabric run.

Before every step each run's schedule names its mixture; the loop sets the learning rate, draws
each run's micro-batches from its own sampler and has the engine step. A run whose loss or gradient
turns NaN/inf fails alone. At the evaluation interval every live run is validated on every valid
domain (NaN is a failure too), logged, and its schedule observes the losses. Checkpoints go to each
run's folder at every evaluation and save interval (schema: regmix.train.checkpoint); a run resumes
from one exactly. Every run folder, a proxy's or the large run's, holds config.yaml (the config as
trained), metrics.jsonl, checkpoint.pt while training and result.json at the end.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from regmix.core.mixture import Mixture, mixture_of_counts
from regmix.core.results import RunResult, evaluation_row, save_result
from regmix.core.schema import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    CORPUS_SETTING,
    PARAMS_SETTING,
    STEP,
    TOKENS_PER_STEP_SETTING,
    loss_column,
    probe_column,
)
from regmix.data.corpus import CorpusManifest
from regmix.data.sampler import MixtureSampler
from regmix.data.validation import validation_sets
from regmix.online import POLICIES
from regmix.settings.run_config import RunConfig, save_run_config
from regmix.settings.training import TrainingSettings
from regmix.train.checkpoint import CHECKPOINT_FORMAT, check_resumable, run_identity
from regmix.train.engine import Engine, per_token_losses, trained_model
from regmix.train.runlog import RunLog
from regmix.train.schedule import MixtureSchedule, make_schedule


def learning_rate(step: int, settings: TrainingSettings) -> float:
    """Linear warm-up to learning_rate, then constant (as RegMix) or cosine decay to min_lr."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / (settings.warmup_steps + 1)
    if settings.lr_schedule == "constant":
        return settings.learning_rate
    progress = (step - settings.warmup_steps) / max(1, settings.max_step - settings.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return settings.min_lr + cosine * (settings.learning_rate - settings.min_lr)


def group_key(config: RunConfig) -> tuple:
    """Configs with equal keys can train together: all settings but the seed agree, and no policy probes
    its own model (an engine of stacked models cannot)."""
    settings = dataclasses.asdict(config.training)
    settings.pop("seed")
    policy = POLICIES.get(config.policy.get("policy")) if config.policy else None
    alone = (("alone", config.name),) if policy is not None and policy.needs_model else ()
    return tuple(sorted(settings.items())) + alone


@dataclass
class Run:
    """One model's run: its config, folder, data, schedule and log, and what it has measured."""

    config: RunConfig
    run_dir: Path
    sampler: MixtureSampler
    schedule: MixtureSchedule
    log: RunLog
    valid_losses: dict[str, float] = field(default_factory=dict)
    probe_losses: dict[str, float] = field(default_factory=dict)
    trajectory: list[dict[str, Any]] = field(default_factory=list)
    result: RunResult | None = None

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / CHECKPOINT_NAME

    def achieved(self) -> Mixture | None:
        domains = tuple(dict.fromkeys(self.config.train.domains + tuple(
            d for s in self.config.stages for d in s.mixture.domains) + tuple(self.sampler.counts)))
        return mixture_of_counts(self.sampler.counts, domains)

    def follow_schedule(self, step: int, probe: RunProbe, sequences_per_step: int) -> None:
        """Sample the schedule's mixture from this step on (exactly, where it plans); record it when it changed."""
        mixture = self.schedule.mixture(step, self.sampler.counts, probe)
        changed = mixture is not self.sampler.mixture and not mixture.close_to(self.sampler.mixture)
        planned = self.schedule.plan_steps(step)
        if planned or mixture is not self.sampler.mixture:
            self.sampler.set_weights(mixture, exact=planned * sequences_per_step)
        if self.schedule.changes and (changed or not self.trajectory):
            self.trajectory.append({"step": step, "mixture": mixture.to_dict()})


@dataclass
class RunProbe:
    """The `Probe` (regmix.online.policy) of run k's model for its policy."""

    engine: Engine
    k: int
    run: Run
    valid: dict[str, torch.Tensor]  # the probe part's windows: a method never measures the held-out part
    vocab_size: int
    learning_rate: float = 0.0
    references: dict[Path, torch.nn.Module] = field(default_factory=dict)

    @property
    def valid_domains(self) -> list[str]:
        return [d for d in self.run.config.valid if d in self.valid]

    def validation(self) -> dict[str, float]:
        evaluated = self.engine.evaluate(self.valid, self.run.config.training.micro_batch_size)[self.k]
        return {d: v for d, v in evaluated.items() if d in self.run.config.valid}

    def sequences(self, domain: str, count: int, key: Sequence[int]) -> torch.Tensor:
        return self.run.sampler.sequences(domain, count, key)

    def valid_sequences(self, domain: str, count: int, key: Sequence[int]) -> torch.Tensor:
        windows = self.valid[domain]
        rng = np.random.default_rng([self.run.config.training.seed, *key])
        return windows[torch.from_numpy(rng.integers(0, len(windows), size=count))]

    def token_losses(self, tokens: torch.Tensor, checkpoint: Path | None = None) -> torch.Tensor:
        if checkpoint is None:
            return self.engine.token_losses(self.k, tokens)
        if checkpoint not in self.references:
            self.references[checkpoint] = trained_model(checkpoint, self.run.config.training, self.vocab_size,
                                                        self.engine.device)
        return per_token_losses(self.references[checkpoint], tokens, self.engine.device)

    def alignment(self, batches: Mapping[str, torch.Tensor], target: torch.Tensor
                  ) -> tuple[dict[str, tuple[float, float]], float]:
        return self.engine.alignment(self.k, dict(batches), target)


def train(engine: Engine, configs: Sequence[RunConfig], manifest: CorpusManifest, run_dirs: Sequence[Path], *,
          sources: Sequence[str | Path] | None = None, wandb_mode: str = "auto", wandb_project: str = "regmix",
          wandb_group: str | None = None, bar: Any = None, keep_checkpoint: bool = False,
          extra: dict[str, Any] | None = None) -> list[RunResult]:
    """Train run k of `configs` with model k of `engine` into `run_dirs[k]`, resuming from checkpoints.

    Returns the results (on the main process; other Fabric ranks get []). `sources` name the config
    files in errors; `keep_checkpoint` keeps the final checkpoint (the large run's trained model).
    """
    if len({group_key(c) for c in configs}) != 1:
        raise ValueError(f"configs trained together must share all training settings except the seed: "
                         f"{[str(s) for s in (sources or [c.name for c in configs])]}")
    if not len(configs) == len(run_dirs) == engine.size:
        raise ValueError(f"{len(configs)} configs, {len(run_dirs)} run folders, {engine.size} models")
    sources = list(sources or [Path(d) / "config.yaml" for d in run_dirs])
    for config, source in zip(configs, sources):
        config.check_corpus(manifest, source)
    settings = configs[0].training
    tokens_per_step = settings.global_batch_size * settings.block_size
    extra = {PARAMS_SETTING: engine.non_embedding_parameters, TOKENS_PER_STEP_SETTING: tokens_per_step,
             "device": engine.device.type, CORPUS_SETTING: manifest.name, **(extra or {})}
    runs = []
    for config, run_dir, source in zip(configs, run_dirs, sources):
        schedule = make_schedule(config, source, manifest)
        runs.append(Run(config, Path(run_dir), MixtureSampler(manifest, schedule.current, settings.block_size,
                                                               config.training.seed), schedule,
                        RunLog(config, Path(run_dir), wandb_mode, extra, wandb_project, wandb_group,
                               live=engine.size == 1, enabled=engine.is_main)))
    states = [check_resumable(run.checkpoint, run.config, manifest) for run in runs]
    steps = {0 if s is None else int(s["step"]) for s in states}
    if len(steps) > 1:
        raise ValueError(f"checkpoints of runs trained together must be at one step, found {sorted(steps)} in "
                         f"{[str(run.checkpoint) for run in runs]}")
    step, seconds = steps.pop(), max([float(s["seconds"]) for s in states if s] or [0.0])
    if step:
        engine.load([run.checkpoint for run in runs])
    evaluated_at: set[int] = set()
    for run, state in zip(runs, states):
        if engine.is_main:
            save_run_config(run.config, run.run_dir / CONFIG_NAME)
        if state:
            run.sampler.load_state_dict(state["sampler"])
            run.schedule.load_state_dict(state["schedule"])
            run.trajectory = list(state["trajectory"])
        history = run.log.start(state and {**state["log"], "step": step})
        evaluated_at.update(row[STEP] for row in history[-1:])
        run.valid_losses = {d: row[loss_column(d)] for row in history[-1:] for d in run.config.valid
                            if loss_column(d) in row}
        run.probe_losses = {d: row[probe_column(d)] for row in history[-1:] for d in run.config.valid
                            if probe_column(d) in row}
    del states
    valid = validation_sets(manifest, list(dict.fromkeys(d for c in configs for d in c.valid)), settings.block_size,
                            settings.eval_tokens, settings.probe_share, settings.split_seed)
    accumulation = settings.global_batch_size // (settings.micro_batch_size * engine.world_size)
    part = (engine.rank, engine.world_size)
    started = time.perf_counter()

    def elapsed() -> float:
        return seconds + time.perf_counter() - started

    def draw() -> torch.Tensor:
        return torch.stack([run.sampler.next_batch(settings.micro_batch_size, part) for run in runs])

    def finish(k: int, error: str | None) -> None:
        run = runs[k]
        run.result = RunResult(
            name=run.config.name, status="failed" if error else "finished", requested=run.config.train,
            valid_losses={} if error else run.valid_losses, step=step, tokens=step * tokens_per_step,
            seconds=round(elapsed(), 3), error=error, settings={**dataclasses.asdict(run.config.training), **extra},
            achieved=run.achieved(), trajectory=run.trajectory, probe_losses={} if error else run.probe_losses)
        if engine.is_main:
            run.log.finish(failed=error is not None)
            save_result(run.result, run.run_dir)
            if not keep_checkpoint:
                run.checkpoint.unlink(missing_ok=True)

    def checkpoint() -> None:
        live = [k for k, run in enumerate(runs) if run.result is None]
        if not live:
            return
        engine.save(live, [runs[k].checkpoint for k in live], [{
            "format": CHECKPOINT_FORMAT, "run": run_identity(runs[k].config, manifest), "step": step,
            "seconds": elapsed(),
            "sampler": runs[k].sampler.state_dict(), "schedule": runs[k].schedule.state_dict(),
            "trajectory": runs[k].trajectory, "log": runs[k].log.state(step)} for k in live])

    def evaluate(train_losses: Sequence[float]) -> None:
        heldout = engine.evaluate(valid.heldout, settings.micro_batch_size)
        probed = engine.evaluate(valid.probe, settings.micro_batch_size) if valid.split else heldout
        for k, run in enumerate(runs):
            if not engine.alive[k]:
                continue
            measured = {d: heldout[k][d] for d in run.config.valid if d in heldout[k]}
            probe_losses = {d: probed[k][d] for d in run.config.valid if d in probed[k]} if valid.split else {}
            bad = {d: v for d, v in {**measured, **probe_losses}.items() if not math.isfinite(v)}
            if bad:
                engine.fail(k)
                finish(k, f"diverged: validation loss {bad} at step {step}")
                continue
            run.valid_losses, run.probe_losses = measured, probe_losses
            weights = run.sampler.mixture if run.schedule.changes else None
            run.log.evaluation(evaluation_row(step, step * tokens_per_step, train_losses[k], elapsed(), measured,
                                              run.achieved(), weights, probe_losses))
            run.schedule.observe(step, probe_losses or measured, run.sampler.counts)

    if step >= settings.max_step and step not in evaluated_at:  # resumed past a max_step that shrank
        evaluate([math.nan] * len(runs))
    probes = [RunProbe(engine, k, run, valid.probe, manifest.tokenizer.vocab_size) for k, run in enumerate(runs)]
    while step < settings.max_step and any(engine.alive):
        lr = learning_rate(step, settings)
        for k, run in enumerate(runs):
            if engine.alive[k]:
                probes[k].learning_rate = lr
                run.follow_schedule(step, probes[k], settings.global_batch_size)
        alive = list(engine.alive)
        losses, norms = engine.step(lr, draw, accumulation)
        step += 1
        for k, run in enumerate(runs):
            if alive[k] and not engine.alive[k]:
                bad = f"training loss is {losses[k]}" if not math.isfinite(losses[k]) \
                    else f"gradient norm is {norms[k]}"
                finish(k, f"diverged: {bad} at step {step}")
            elif engine.alive[k]:
                changed = run.trajectory[-1]["mixture"] if run.trajectory and run.trajectory[-1]["step"] == step - 1 \
                    else None
                run.log.train(step, losses[k], lr, changed)
        if bar is not None:
            bar.update()
        at_eval = step % settings.eval_step_interval == 0 or step == settings.max_step
        if at_eval and any(engine.alive):
            evaluate(losses)
        if (at_eval or step % settings.save_step_interval == 0) and (step < settings.max_step or keep_checkpoint):
            checkpoint()
    for k, run in enumerate(runs):
        if run.result is None:
            finish(k, None)
    return [run.result for run in runs if run.result is not None] if engine.is_main else []
