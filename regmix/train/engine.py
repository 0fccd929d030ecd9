"""Engines: what the training loop steps. One model, K stacked models, or one model under Fabric.

The loop (regmix.train.loop) owns everything a run is made of: learning rate, batches, divergence,
evaluation cadence, schedules, checkpoints, logs and results. An engine owns only the models and
their optimizer: it takes one optimizer step from micro-batches the loop draws, evaluates, retires
a diverged model, and writes or reads the models' part of the checkpoints. Every engine trains K
models (K = 1 but for the stacked engine); model k belongs to the loop's run k.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Sequence

import torch

from regmix.core.files import replace_atomic
from regmix.settings.training import TrainingSettings
from regmix.train.checkpoint import read_checkpoint
from regmix.train.models import build_model, non_embedding_parameters

Draw = Callable[[], torch.Tensor]  # the next micro-batch: (K, batch, block_size + 1) token ids on the CPU


def adamw(params: Iterable[torch.nn.Parameter], settings: TrainingSettings, fused: bool) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=settings.learning_rate, betas=(settings.beta1, settings.beta2),
                             weight_decay=settings.weight_decay, fused=fused)


def autocast(device: torch.device) -> ContextManager:
    """bf16 autocast on CUDA; fp32 elsewhere (bf16 matmuls are slow or inexact on most CPUs)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device, refusing CUDA where there is none (instead of torch's assertion deep in the run)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device} asked for, but torch sees no CUDA GPU; use --device cpu")
    return device


class CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy whose backward turns the saved log-probabilities into the gradient in place.

    Same value and gradient as `F.cross_entropy`, but with tiny models the (tokens x vocab) logits are
    the biggest tensor by far, and torch's backward makes a zero tensor of that size, scatters into it
    and runs a separate softmax backward. Here: log_softmax forward, exp_ and mul_ backward in place;
    about a third faster on CPU, and the logits themselves are freed after the forward pass.
    """

    @staticmethod
    def forward(ctx: Any, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        log_probs = torch.log_softmax(logits, dim=-1)
        ctx.save_for_backward(log_probs, targets)
        return -log_probs.gather(1, targets[:, None]).mean()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        log_probs, targets = ctx.saved_tensors
        softmax = log_probs.exp_()
        softmax[torch.arange(len(targets), device=targets.device), targets] -= 1.0
        return softmax.mul_(grad / len(targets)), None


def per_token_losses(model: torch.nn.Module, batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Per-token next-token losses (batch, block_size) of a (batch, block_size + 1) token tensor, on the CPU."""
    with torch.no_grad(), autocast(device):
        logits = model(batch[:, :-1].to(device))
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return -log_probs.gather(-1, batch[:, 1:].to(device).unsqueeze(-1)).squeeze(-1).cpu()


def trained_model(checkpoint: Path, settings: TrainingSettings, vocab_size: int,
                  device: torch.device) -> torch.nn.Module:
    """The model saved in a run's checkpoint, built with `settings`' architecture (one error if it differs)."""
    model = build_model(settings.model_name, vocab_size, settings.block_size)
    try:
        model.load_state_dict(read_checkpoint(checkpoint)["model"])
    except (KeyError, RuntimeError) as exc:
        raise ValueError(f"{checkpoint}: not a checkpoint of a {settings.model_name} model with "
                         f"{vocab_size} tokens and block size {settings.block_size} "
                         f"({str(exc).splitlines()[0]})") from None
    return model.to(device).eval()


def next_token_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a (batch, block_size + 1) token tensor."""
    logits = model(batch[:, :-1])
    return CrossEntropy.apply(logits.reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, valid: dict[str, torch.Tensor], batch_size: int,
                   device: torch.device) -> dict[str, float]:
    """Mean token loss per validation domain over its fixed windows."""
    model.eval()
    losses = {}
    for domain, windows in valid.items():
        total = torch.zeros((), device=device)
        for chunk in windows.split(batch_size):
            with autocast(device):
                total += next_token_loss(model, chunk.to(device)) * len(chunk)
        losses[domain] = total.item() / len(windows)
    model.train()
    return losses


def save_states(paths: Sequence[Path], states: Sequence[dict[str, Any]]) -> None:
    """Write each run's checkpoint next to its path, then rename all: the checkpoints stay in step."""
    temps = [path.with_name(f".{path.name}.tmp") for path in paths]

    def write(tmp: Path, state: dict[str, Any]) -> None:
        with open(tmp, "wb") as file:  # through Python's file: a full disk is an OSError, not torch's RuntimeError
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())

    for temp, state in zip(temps, states):
        replace_atomic(temp, lambda tmp, state=state: write(tmp, state))
    for temp, path in zip(temps, paths):
        temp.replace(path)


class Engine(ABC):
    """K models and their optimizer, stepped by the loop. `alive[k]` is False once model k diverged."""

    device: torch.device
    alive: list[bool]
    rank: int = 0
    world_size: int = 1
    non_embedding_parameters: int = 0

    @property
    def size(self) -> int:
        return len(self.alive)

    @property
    def is_main(self) -> bool:
        """The process that logs and writes results (the only one but under Fabric)."""
        return self.rank == 0

    @abstractmethod
    def step(self, lr: float, draw: Draw, accumulation: int) -> tuple[list[float], list[float]]:
        """One optimizer step over `accumulation` micro-batches: each model's mean loss and gradient norm.

        A model whose loss or norm is not finite is retired (`fail`) before the update.
        """

    @abstractmethod
    def evaluate(self, valid: dict[str, torch.Tensor], batch_size: int) -> list[dict[str, float]]:
        """Each model's mean token loss per validation domain."""

    def fail(self, k: int) -> None:
        """Retire model k: it takes no more part in training."""
        self.alive[k] = False

    def token_losses(self, k: int, tokens: torch.Tensor) -> torch.Tensor:
        """Model k's per-token losses of (batch, block_size + 1) tokens (online methods' probes)."""
        raise NotImplementedError(f"the {type(self).__name__} cannot probe one model; train this run alone")

    def alignment(self, k: int, batches: dict[str, torch.Tensor], target: torch.Tensor
                  ) -> tuple[dict[str, tuple[float, float]], float]:
        """Per batch: <its loss gradient, the target batch's loss gradient> and its gradient norm; and the target
        gradient's norm, model k."""
        raise NotImplementedError(f"the {type(self).__name__} cannot probe one model; train this run alone")

    @abstractmethod
    def save(self, models: Sequence[int], paths: Sequence[Path], states: Sequence[dict[str, Any]]) -> None:
        """Write `states[i]` plus model `models[i]`'s weights and optimizer state to `paths[i]`."""

    @abstractmethod
    def load(self, paths: Sequence[Path]) -> None:
        """Restore every model's weights and optimizer state from its checkpoint."""


class SingleEngine(Engine):
    """One litgpt GPT on one device: the proxy trainer of CPU sweeps and single runs."""

    def __init__(self, settings: TrainingSettings, vocab_size: int, device: torch.device):
        torch.manual_seed(settings.seed)
        self.device = device
        self.settings = settings
        self.model = build_model(settings.model_name, vocab_size, settings.block_size).to(device)
        self.non_embedding_parameters = non_embedding_parameters(self.model)
        self.optimizer = adamw(self.model.parameters(), settings, fused=True)
        self.alive = [True]
        self.model.train()

    def step(self, lr: float, draw: Draw, accumulation: int) -> tuple[list[float], list[float]]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        loss, norm = self.mean_loss(self.accumulate(draw, accumulation), accumulation), self.clip()
        if not (math.isfinite(loss) and math.isfinite(norm)):
            self.fail(0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return [loss], [norm]

    def accumulate(self, draw: Draw, accumulation: int) -> torch.Tensor:
        """Forward and backward `accumulation` micro-batches; the summed loss."""
        total = torch.zeros((), device=self.device)
        for _ in range(accumulation):
            batch = draw()[0].to(self.device, non_blocking=True)
            with autocast(self.device):
                loss = next_token_loss(self.model, batch)
            (loss / accumulation).backward()
            total += loss.detach()
        return total

    def clip(self) -> float:
        """Clip the gradient norm; the norm before clipping."""
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip, foreach=True).item()

    def mean_loss(self, total: torch.Tensor, accumulation: int) -> float:
        return total.item() / accumulation

    def evaluate(self, valid: dict[str, torch.Tensor], batch_size: int) -> list[dict[str, float]]:
        return [evaluate_model(self.model, valid, batch_size, self.device)]

    def token_losses(self, k: int, tokens: torch.Tensor) -> torch.Tensor:
        return per_token_losses(self.model, tokens, self.device)

    def alignment(self, k: int, batches: dict[str, torch.Tensor], target: torch.Tensor
                  ) -> tuple[dict[str, tuple[float, float]], float]:
        """Gradients one batch at a time: the target's is kept, each batch's is dotted with it and dropped.

        Runs between optimizer steps (gradients are None there) and leaves them None.
        """
        params = [p for p in self.model.parameters() if p.requires_grad]

        def gradient(batch: torch.Tensor) -> list[torch.Tensor]:
            self.optimizer.zero_grad(set_to_none=True)
            with autocast(self.device):
                loss = next_token_loss(self.model, batch.to(self.device))
            loss.backward()
            return [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]

        reference = [g.clone() for g in gradient(target)]
        target_norm = torch.stack([r.float().pow(2).sum() for r in reference]).sum().sqrt().item()
        out = {}
        for name, batch in batches.items():
            grads = gradient(batch)
            dot = torch.stack([(g.float() * r.float()).sum() for g, r in zip(grads, reference)]).sum()
            norm = torch.stack([g.float().pow(2).sum() for g in grads]).sum().sqrt()
            out[name] = (dot.item(), norm.item())
        self.optimizer.zero_grad(set_to_none=True)
        return out, target_norm

    def save(self, models: Sequence[int], paths: Sequence[Path], states: Sequence[dict[str, Any]]) -> None:
        save_states(paths, [{**states[0], "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}])

    def load(self, paths: Sequence[Path]) -> None:
        state = read_checkpoint(paths[0])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
