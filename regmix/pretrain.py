"""The large run: train a model (TinyLlama 1.1B by default) on one mixture with Lightning Fabric.

`model_training/pretrain_1b.sh optimal_mixture` calls this. The mixture is found as RegMix does: a
path, or a name looked up as `mixture_config/config_1b/<name>.yaml`, then anywhere below
`mixture_config/`. One GPU, all GPUs of a node (FSDP, one process per GPU) or several nodes
(launch with torchrun, or set MASTER_ADDR / MASTER_PORT / NODE_RANK and --num-nodes). Checkpoints
every --save-step-interval steps and at the end (the trained model, in the run folder); resumes from
the last one, also to continue a finished run with a larger --max-step; wandb as for proxies. Any preset
trains the same way, so `--smoke` (tiny model, a few steps, CPU) checks the whole path anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Sequence

import torch

from regmix.corpus import CorpusManifest, load_manifest
from regmix.data import MixtureSampler, validation_sets
from regmix.mixture import LARGE_RUN, ConfigError, RunConfig, add_settings_arguments, load_run_config, \
    settings_from_args
from regmix.models import build_model, non_embedding_parameters
from regmix.results import RunResult, evaluation_row, save_result
from regmix.train_proxy import ADAMW, GRAD_CLIP, WANDB_MODES, RunLog, _loss, evaluate, learning_rate, \
    resolve_wandb_mode

MIXTURE_ROOT = Path("mixture_config")
CHECKPOINT_NAME = "checkpoint.ckpt"
SMOKE_RUN = dataclasses.replace(LARGE_RUN, model_name="tinyllama_demo", global_batch_size=4, micro_batch_size=2,
                                max_step=4, warmup_steps=1, eval_step_interval=2, save_step_interval=2,
                                block_size=64, eval_tokens=512)


def resolve_mixture(name: str, root: Path = MIXTURE_ROOT) -> Path:
    """A mixture config by path or by name (config_1b/<name>.yaml first, then anywhere below `root`)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return path
    stem = path.stem if path.suffix in (".yaml", ".yml") else name
    preferred = root / "config_1b" / f"{stem}.yaml"
    if preferred.exists():
        return preferred
    found = sorted(root.rglob(f"{stem}.yaml"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise ConfigError(name, f"no such mixture config: not a file, and no {stem}.yaml below {root}/")
    raise ConfigError(name, f"ambiguous mixture name: {[str(p) for p in found]}; give the path")


def _fabric(devices: int | str, num_nodes: int, cpu: bool):
    import lightning as L
    from lightning.fabric.strategies import FSDPStrategy
    from litgpt.model import Block

    world = 1 if cpu else (torch.cuda.device_count() if devices == "auto" else int(devices))
    strategy = "auto"
    if not cpu and world * num_nodes > 1:
        strategy = FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full",
                                sharding_strategy="HYBRID_SHARD" if num_nodes > 1 else "FULL_SHARD")
    return L.Fabric(accelerator="cpu" if cpu else "cuda", devices=1 if cpu else devices, num_nodes=num_nodes,
                    strategy=strategy, precision="32-true" if cpu else "bf16-mixed")


def pretrain(config: RunConfig, manifest: CorpusManifest, run_dir: Path, devices: int | str = "auto",
             num_nodes: int = 1, cpu: bool = False, wandb_mode: str = "auto",
             wandb_project: str = "regmix-large", source: str | os.PathLike | None = None) -> RunResult | None:
    """Train `config`'s model on its mixture under Fabric; rank 0 returns the result, others None.

    A config that does not fit the corpus raises ConfigError naming `source` (the mixture file).
    """
    settings = config.training
    config.check_corpus(manifest, source or run_dir / "config.yaml")
    fabric = _fabric(devices, num_nodes, cpu)
    fabric.launch()
    per_rank = settings.micro_batch_size * fabric.world_size
    if settings.global_batch_size % per_rank:
        raise ConfigError(run_dir, f"global_batch_size {settings.global_batch_size} is not a multiple of "
                                   f"micro_batch_size x {fabric.world_size} processes")
    accumulation = settings.global_batch_size // per_rank
    tokens_per_step = settings.global_batch_size * settings.block_size

    fabric.seed_everything(settings.seed)
    with fabric.init_module(empty_init=fabric.world_size > 1):
        model = build_model(settings.model_name, manifest.tokenizer.vocab_size, settings.block_size)
    extra = {"non_embedding_parameters": non_embedding_parameters(model), "tokens_per_step": tokens_per_step,
             "processes": fabric.world_size, "device": fabric.device.type}
    model = fabric.setup(model)
    optimizer = fabric.setup_optimizers(torch.optim.AdamW(model.parameters(), lr=settings.learning_rate,
                                                          fused=not cpu, **ADAMW))
    sampler = MixtureSampler(manifest, config.train, settings.block_size,
                             settings.seed + 7919 * fabric.global_rank)
    valid = validation_sets(manifest, config.valid, settings.block_size, settings.eval_tokens)

    checkpoint = run_dir / CHECKPOINT_NAME
    state = {"model": model, "optimizer": optimizer, "step": 0, "seconds": 0.0, "wandb_id": None}
    if checkpoint.exists():
        fabric.load(checkpoint, state)
        sampler.drawn = state["step"] * accumulation * settings.micro_batch_size
        fabric.print(f"resumed from {checkpoint} at step {state['step']}")
    log = RunLog(config, run_dir, resolve_wandb_mode(wandb_mode), state["wandb_id"], extra, wandb_project,
                 None) if fabric.global_rank == 0 else None
    if log:
        log.history(state["step"])  # evaluations logged after the checkpoint are redone
    started, valid_losses, error = time.perf_counter(), {}, None
    while state["step"] < settings.max_step and error is None:
        lr = learning_rate(state["step"], settings)
        for group in optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros((), device=fabric.device)
        for micro in range(accumulation):
            batch = sampler.next_batch(settings.micro_batch_size).to(fabric.device)
            with fabric.no_backward_sync(model, enabled=micro < accumulation - 1):
                loss = _loss(model, batch)
                fabric.backward(loss / accumulation)
            total += loss.detach()
        fabric.clip_gradients(model, optimizer, max_norm=GRAD_CLIP)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        step = state["step"]
        train_loss = fabric.all_reduce(total / accumulation, reduce_op="mean").item()
        if not math.isfinite(train_loss):
            error = f"diverged: training loss is {train_loss} at step {step}"
            break
        seconds = state["seconds"] + time.perf_counter() - started
        if log:
            log.train(step, train_loss, lr)
        if step % settings.eval_step_interval == 0 or step == settings.max_step:
            valid_losses = evaluate(model, valid, settings.micro_batch_size, fabric.device)
            if log:
                log.evaluation(evaluation_row(step, step * tokens_per_step, train_loss, seconds, valid_losses))
            fabric.print(f"step {step}: train {train_loss:.4f} " +
                         " ".join(f"{d} {v:.4f}" for d, v in valid_losses.items()))
        if step % settings.save_step_interval == 0 or step == settings.max_step:
            _save(fabric, checkpoint, {**state, "seconds": seconds, "wandb_id": log.run_id if log else None})
    if not valid_losses and error is None:
        valid_losses = evaluate(model, valid, settings.micro_batch_size, fabric.device)
    if log is None:
        return None
    log.finish(failed=error is not None)
    result = RunResult(config.name, "failed" if error else "finished", config.train,
                       {} if error else valid_losses, state["step"], state["step"] * tokens_per_step,
                       round(state["seconds"] + time.perf_counter() - started, 3), error,
                       {**dataclasses.asdict(settings), **extra})
    save_result(result, run_dir)
    return result


def _save(fabric, path: Path, state: dict) -> None:
    """Save next to `path`, then rename: a crash while saving (FSDP writes in place) keeps the last checkpoint."""
    temp = path.with_name(f".{path.name}.tmp")
    fabric.save(temp, state)
    fabric.barrier()
    if fabric.global_rank == 0:
        os.replace(temp, path)
    fabric.barrier()


def _devices(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number nor auto") from None


def main(argv: Sequence[str] | None = None) -> RunResult | None:
    p = argparse.ArgumentParser(prog="python -m regmix.pretrain", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mixture", nargs="?", default="optimal_mixture",
                   help="mixture config: a path or a name below mixture_config/ (default: %(default)s)")
    p.add_argument("--corpus", type=Path, default=Path("data/default"),
                   help="prepared corpus folder (default: %(default)s, the demo's)")
    p.add_argument("--output", type=Path, help="run folder (default: runs/pretrain/<mixture name>)")
    p.add_argument("--devices", type=_devices, default="auto", help="GPUs per node: a number or auto (all)")
    p.add_argument("--num-nodes", type=int, default=1, help="nodes (with torchrun or MASTER_ADDR/NODE_RANK set)")
    p.add_argument("--cpu", action="store_true", help="train on CPU in fp32 (one process)")
    p.add_argument("--smoke", action="store_true",
                   help="tiny model, a few steps, on CPU: checks the whole path (overrides the settings)")
    p.add_argument("--wandb", default="auto", choices=WANDB_MODES,
                   help="wandb logging: auto = online with a wandb login, otherwise offline files")
    p.add_argument("--wandb-project", default="regmix-large", help="wandb project name (default: %(default)s)")
    add_settings_arguments(p.add_argument_group("training (defaults: TinyLlama-1.1B at 25B tokens)"), LARGE_RUN,
                           skip=("model_name",))
    p.add_argument("--model-name", default=None, help="model preset (default: the config's model_name)")
    args = p.parse_args(argv)
    try:
        path = resolve_mixture(args.mixture)
        config = load_run_config(path)
        training = SMOKE_RUN if args.smoke else dataclasses.replace(
            settings_from_args(LARGE_RUN, args), model_name=args.model_name or config.training.model_name)
        training.validate("command line")
        config = dataclasses.replace(config, training=training, valid=config.valid or ())
        manifest = load_manifest(args.corpus)
        if not config.valid:
            config = dataclasses.replace(config, valid=manifest.valid_domains)
        output = args.output or Path("runs") / "pretrain" / config.name
        output.mkdir(parents=True, exist_ok=True)
        return pretrain(config, manifest, output, args.devices, args.num_nodes,
                        args.cpu or args.smoke or not torch.cuda.is_available(),
                        "offline" if args.smoke and args.wandb == "auto" else args.wandb, args.wandb_project,
                        source=path)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
