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
proxies. `--smoke` (the `smoke` preset: tiny model, a few steps, CPU) checks the whole path anywhere,
in its own run folder (runs/pretrain/<name>_smoke), apart from the real run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from regmix.cli import ArgumentParser, RunFailed, integer_at_least, run_command
from regmix.core.files import ConfigError, check_output_folder, did_you_mean
from regmix.core.results import RunResult
from regmix.core.schema import CHECKPOINT_NAME, CONFIG_NAME, safe_name
from regmix.data.corpus import CorpusManifest, load_manifest
from regmix.settings.run_config import RunConfig, load_run_config
from regmix.settings.training import TrainingSettings, add_settings_arguments, flag_name, settings_from_args
from regmix.train.runlog import WANDB_MODES

MIXTURE_ROOT = Path("mixture_config")
YAML = (".yaml", ".yml")


def resolve_mixture(name: str, root: Path = MIXTURE_ROOT) -> Path:
    """A mixture config by path or by name (config_1b/<name>.yaml first, then anywhere below `root`).

    A name is a file name, never a path or a pattern: `../x` or `*` is refused, not searched for.
    """
    path = Path(name)
    if path.suffix in YAML and path.is_file():
        return path
    stem = safe_name(path.stem if path.suffix in YAML else name, "mixture name", "command line")
    preferred = root / "config_1b" / f"{stem}.yaml"
    if preferred.exists():
        return preferred
    found = sorted(p for p in root.rglob("*.yaml") if p.stem == stem)
    if len(found) == 1:
        return found[0]
    if not found:
        hint = did_you_mean(stem, {p.stem for p in root.rglob("*.yaml")})
        raise ConfigError(name, f"no such mixture config: not a file, and no {stem}.yaml below {root}/{hint}")
    raise ConfigError(name, f"ambiguous mixture name: {[str(p) for p in found]}; give the path")


def pretrain(config: RunConfig, manifest: CorpusManifest, run_dir: Path, devices: int | str = "auto",
             num_nodes: int = 1, cpu: bool = False, wandb_mode: str = "auto", wandb_project: str = "regmix-large",
             source: str | os.PathLike | None = None) -> RunResult | None:
    """Train `config`'s model on its mixture under Fabric; rank 0 returns the result, others None.

    A checkpoint in `run_dir` of another model, mixture or settings is refused before Fabric starts.
    """
    from regmix.train.checkpoint import check_resumable, checkpoint_step  # torch, Lightning, litgpt: so --help is fast
    from regmix.train.fabric import FabricEngine, make_fabric
    from regmix.train.loop import train

    source = source or run_dir / CONFIG_NAME
    config.check_corpus(manifest, source)
    check_resumable(run_dir / CHECKPOINT_NAME, config, manifest)
    engine = FabricEngine(config.training, manifest.tokenizer.vocab_size, make_fabric(devices, num_nodes, cpu))
    with tqdm(total=config.training.max_step, desc=config.name, unit="step", disable=not engine.is_main,
              dynamic_ncols=True) as bar:
        bar.update(checkpoint_step(run_dir))
        results = train(engine, [config], manifest, [run_dir], sources=[source], wandb_mode=wandb_mode,
                        wandb_project=wandb_project, bar=bar, keep_checkpoint=True,
                        extra={"processes": engine.world_size})
    return results[0] if results else None


def run_folder(name: str, smoke: bool) -> Path:
    """`runs/pretrain/<name>`; a smoke run's is `<name>_smoke`, so the real run never meets its tiny checkpoint."""
    return Path("runs") / "pretrain" / (f"{name}_smoke" if smoke else name)


def _devices(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        devices = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is neither a number nor auto") from None
    if devices < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1 or auto, got {devices}")
    return devices


def main(argv: Sequence[str] | None = None) -> RunResult | None:
    """Train the mixture; its result (rank 0). Bad input raises ConfigError, a run that failed RunFailed."""
    p = ArgumentParser(prog="python -m regmix.train.pretrain", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mixture", nargs="?", default="optimal_mixture",
                   help="mixture config: a path or a name below mixture_config/ (default: %(default)s)")
    p.add_argument("--corpus", type=Path, default=Path("data/default"),
                   help="prepared corpus folder (default: %(default)s, the demo's)")
    p.add_argument("--output", type=Path,
                   help="run folder (default: runs/pretrain/<mixture name>, runs/pretrain/<mixture name>_smoke "
                        "with --smoke)")
    p.add_argument("--devices", type=_devices, default="auto", help="GPUs per node: a number or auto (all)")
    p.add_argument("--num-nodes", type=integer_at_least(1), default=1,
                   help="nodes (with torchrun or MASTER_ADDR/NODE_RANK set)")
    p.add_argument("--cpu", action="store_true", help="train on CPU in fp32 (one process)")
    p.add_argument("--smoke", action="store_true",
                   help="the smoke preset: tiny model, a few steps, on CPU, in its own run folder; checks the whole "
                        "path (overrides the file's settings)")
    p.add_argument("--wandb", default="auto", choices=WANDB_MODES,
                   help="wandb logging: auto = online with a wandb login, otherwise offline files")
    p.add_argument("--wandb-project", default="regmix-large", help="wandb project name (default: %(default)s)")
    add_settings_arguments(p.add_argument_group("training (default: the mixture file's settings)"),
                           TrainingSettings.from_name("large_1b"), only_given="the mixture file's")
    args = p.parse_args(argv)
    import torch  # after the flags: --help starts without it

    path = resolve_mixture(args.mixture)
    base = TrainingSettings.from_name("smoke" if args.smoke else "large_1b")
    config = load_run_config(path, defaults=base)
    training = settings_from_args(base if args.smoke else config.training, args)
    training.validate("command line", flag_name)
    manifest = load_manifest(args.corpus)
    config = dataclasses.replace(config, training=training, valid=config.valid or manifest.valid_domains)
    output = check_output_folder(args.output or run_folder(config.name, args.smoke))
    result = pretrain(config, manifest, output, args.devices, args.num_nodes,
                      args.cpu or args.smoke or not torch.cuda.is_available(),
                      "offline" if args.smoke and args.wandb == "auto" else args.wandb, args.wandb_project,
                      source=path)
    if result is not None and result.status == "failed":
        raise RunFailed(f"{config.name} failed at step {result.step}: {result.error} (run folder: {output})")
    return result


if __name__ == "__main__":
    raise SystemExit(run_command(main))
