"""The large run's engine: one model under Lightning Fabric, on one GPU, a node (FSDP) or many nodes.

Each process draws its share of every micro-batch from the run's one data stream (the sampler's
`part`), gradients are synchronised on the last micro-batch only, and the loss the loop sees is the
mean over processes. Checkpoints are one full file written by Fabric (FSDP gathers it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from regmix.settings.training import TrainingSettings
from regmix.train.engine import Draw, SingleEngine, adamw, next_token_loss
from regmix.train.models import build_model, non_embedding_parameters


def make_fabric(devices: int | str, num_nodes: int, cpu: bool) -> Any:
    import lightning as L
    from lightning.fabric.strategies import FSDPStrategy
    from litgpt.model import Block

    world = 1 if cpu else (torch.cuda.device_count() if devices == "auto" else int(devices))
    strategy: Any = "auto"
    if not cpu and world * num_nodes > 1:
        strategy = FSDPStrategy(auto_wrap_policy={Block}, state_dict_type="full",
                                sharding_strategy="HYBRID_SHARD" if num_nodes > 1 else "FULL_SHARD")
    return L.Fabric(accelerator="cpu" if cpu else "cuda", devices=1 if cpu else devices, num_nodes=num_nodes,
                    strategy=strategy, precision="32-true" if cpu else "bf16-mixed")


class FabricEngine(SingleEngine):
    """The single engine's model under Fabric: setup, synchronisation and checkpoints are Fabric's."""

    def __init__(self, settings: TrainingSettings, vocab_size: int, fabric: Any):
        fabric.launch()
        self.fabric, self.settings = fabric, settings
        self.rank, self.world_size, self.device = fabric.global_rank, fabric.world_size, fabric.device
        if settings.global_batch_size % (settings.micro_batch_size * fabric.world_size):
            raise ValueError(f"global_batch_size {settings.global_batch_size} is not a multiple of "
                             f"micro_batch_size {settings.micro_batch_size} x {fabric.world_size} processes")
        fabric.seed_everything(settings.seed)
        with fabric.init_module(empty_init=fabric.world_size > 1):
            model = build_model(settings.model_name, vocab_size, settings.block_size)
        self.non_embedding_parameters = non_embedding_parameters(model)
        self.model = fabric.setup(model)
        self.optimizer = fabric.setup_optimizers(adamw(self.model.parameters(), settings,
                                                       fused=self.device.type == "cuda"))
        self.alive = [True]

    def accumulate(self, draw: Draw, accumulation: int) -> torch.Tensor:
        """As the single engine, gradients synchronised between processes on the last micro-batch only."""
        total = torch.zeros((), device=self.device)
        for micro in range(accumulation):
            batch = draw()[0].to(self.device)
            with self.fabric.no_backward_sync(self.model, enabled=micro < accumulation - 1):
                loss = next_token_loss(self.model, batch)
                self.fabric.backward(loss / accumulation)
            total += loss.detach()
        return total

    def clip(self) -> float:
        return float(self.fabric.clip_gradients(self.model, self.optimizer, max_norm=self.settings.grad_clip,
                                                error_if_nonfinite=False))

    def mean_loss(self, total: torch.Tensor, accumulation: int) -> float:
        """The mean over processes, so every process sees one loss (and fails together)."""
        return self.fabric.all_reduce(total / accumulation, reduce_op="mean").item()

    def save(self, models: Sequence[int], paths: Sequence[Path], states: Sequence[dict[str, Any]]) -> None:
        """Save next to the path, then rename: a crash while saving (FSDP writes in place) keeps the last one."""
        temp = paths[0].with_name(f".{paths[0].name}.tmp")
        self.fabric.save(temp, {**states[0], "model": self.model, "optimizer": self.optimizer})
        self.fabric.barrier()
        if self.is_main:
            temp.replace(paths[0])
        self.fabric.barrier()

    def load(self, paths: Sequence[Path]) -> None:
        self.fabric.load(paths[0], {"model": self.model, "optimizer": self.optimizer}, strict=False,
                         weights_only=True)
