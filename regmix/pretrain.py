"""The large run: train a model (TinyLlama 1.1B by default) on one mixture with Lightning Fabric.

`model_training/pretrain_1b.sh optimal_mixture` calls this. The mixture is found as RegMix does: a
path, or a name looked up as `mixture_config/config_1b/<name>.yaml`, then anywhere below
`mixture_config/`. The training settings are the mixture file's (optimal_mixture.yaml carries the
large run's); settings the file lacks are the `large_1b` preset's, and command-line flags override
both. One GPU, all GPUs of a node (FSDP, one process per GPU) or several nodes (launch with torchrun,
or set MASTER_ADDR / MASTER_PORT / NODE_RANK and --num-nodes). It is the proxies' training loop
(regmix.train.loop) with the Fabric engine: checkpoints every --save-step-interval steps and at the
end (the trained model, in the run folder), resume from the last one (refused if it was trained on
another mixture or settings; a larger --max-step continues a finished run), NaN checks, wandb as for
proxies. `--smoke` (the `smoke` preset: tiny model, a few steps, CPU) checks the whole path anywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Sequence

import torch
from tqdm.auto import tqdm

from regmix.config import RunConfig, TrainingSettings, add_settings_arguments, load_run_config, settings_from_args
from regmix.data.corpus import CorpusManifest, load_manifest
from regmix.files import ConfigError
from regmix.results import RunResult
from regmix.train.checkpoint import checkpoint_step
from regmix.train.fabric import FabricEngine, make_fabric
from regmix.train.loop import train
from regmix.train.runlog import WANDB_MODES

MIXTURE_ROOT = Path("mixture_config")


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


def pretrain(config: RunConfig, manifest: CorpusManifest, run_dir: Path, devices: int | str = "auto",
             num_nodes: int = 1, cpu: bool = False, wandb_mode: str = "auto", wandb_project: str = "regmix-large",
             source: str | os.PathLike | None = None) -> RunResult | None:
    """Train `config`'s model on its mixture under Fabric; rank 0 returns the result, others None."""
    config.check_corpus(manifest, source or run_dir / "config.yaml")
    engine = FabricEngine(config.training, manifest.tokenizer.vocab_size, make_fabric(devices, num_nodes, cpu))
    with tqdm(total=config.training.max_step, desc=config.name, unit="step", disable=not engine.is_main,
              dynamic_ncols=True) as bar:
        bar.update(checkpoint_step(run_dir))
        results = train(engine, [config], manifest, [run_dir], sources=[source or run_dir / "config.yaml"],
                        wandb_mode=wandb_mode, wandb_project=wandb_project, bar=bar, keep_checkpoint=True,
                        extra={"processes": engine.world_size})
    return results[0] if results else None


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
                   help="the smoke preset: tiny model, a few steps, on CPU; checks the whole path (overrides "
                        "the file's settings)")
    p.add_argument("--wandb", default="auto", choices=WANDB_MODES,
                   help="wandb logging: auto = online with a wandb login, otherwise offline files")
    p.add_argument("--wandb-project", default="regmix-large", help="wandb project name (default: %(default)s)")
    add_settings_arguments(p.add_argument_group("training (default: the mixture file's settings)"),
                           TrainingSettings.from_name("large_1b"), only_given="the mixture file's")
    args = p.parse_args(argv)
    try:
        path = resolve_mixture(args.mixture)
        base = TrainingSettings.from_name("smoke" if args.smoke else "large_1b")
        config = load_run_config(path, defaults=base)
        training = settings_from_args(base if args.smoke else config.training, args)
        training.validate("command line")
        manifest = load_manifest(args.corpus)
        config = dataclasses.replace(config, training=training, valid=config.valid or manifest.valid_domains)
        output = args.output or Path("runs") / "pretrain" / config.name
        return pretrain(config, manifest, output, args.devices, args.num_nodes,
                        args.cpu or args.smoke or not torch.cuda.is_available(),
                        "offline" if args.smoke and args.wandb == "auto" else args.wandb, args.wandb_project,
                        source=path)
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
