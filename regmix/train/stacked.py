"""Train K proxy models with different mixtures at once, in one process on one device.

A 1M-parameter proxy leaves a GPU mostly idle, and most of its compute is the output layer, whose
(tokens x vocabulary) logits cost more memory traffic than arithmetic. So the group trainer:

- stacks the K litgpt GPTs' parameters into (K, ...) tensors and runs all K with batched matmuls
  (`torch.bmm` over the leading K dimension; attention folds K into the batch of one SDPA call);
- computes output layer + cross-entropy in chunks of tokens, deriving the gradients in the forward
  pass, so (K, tokens, vocab) logits never exist at once and are read from memory only twice;
- trains each proxy exactly as the single engine would alone: the same seed and initial weights,
  AdamW (elementwise, so one AdamW over stacked parameters is K independent ones) and gradient
  clipping by each proxy's own gradient norm; the loop gives each its own sampler and schedule.

A proxy whose loss turns NaN/inf is retired: its weights and optimizer state are zeroed (so it stays
finite and inert) and the others go on. Each proxy's checkpoint holds its own litgpt state_dict and
optimizer state, so either engine resumes a run the other started.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from litgpt import GPT, Config
from litgpt.model import apply_rope

from regmix.settings.training import TrainingSettings
from regmix.train.checkpoint import read_checkpoint
from regmix.train.engine import Draw, Engine, adamw, autocast, save_states
from regmix.train.models import build_model, non_embedding_parameters

DEFAULT_LOSS_CHUNK = 1024  # tokens per proxy whose logits exist at once in the loss


# ---- the stacked model ------------------------------------------------------------------------------

def stack_problem(config: Config) -> str | None:
    """Why the batched forward cannot run `config` (None if it can): it implements LLaMA-style blocks only
    (RMSNorm, SwiGLU MLP, full rotary, serial residual, no bias), so pythia's GPT-NeoX blocks, say, must
    train one model at a time through litgpt's own GPT rather than silently as another architecture."""
    expected = dict(norm_class_name="RMSNorm", mlp_class_name="LLaMAMLP", rotary_percentage=1.0,
                    parallel_residual=False, bias=False, attn_bias=False, lm_head_bias=False,
                    scale_embeddings=False, norm_qk=False, post_attention_norm=False, post_mlp_norm=False,
                    sliding_window_size=None, attention_logit_softcapping=None,
                    final_logit_softcapping=None, attention_scores_scalar=None, rope_adjustments=None,
                    rope_interleave=False, rope_indices=None, latent_attention=None, n_expert=0)
    wrong = {k: getattr(config, k) for k, v in expected.items() if getattr(config, k, v) != v}
    return f"the multi-proxy trainer runs LLaMA-style blocks only; {config.name} has {wrong}" if wrong else None


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """litgpt's RMSNorm (fp32 statistics) with one weight row per proxy: x (K, N, d), weight (K, d)."""
    dtype = x.dtype
    x = x.float()
    x_normed = x * torch.rsqrt(torch.mean(x * x, dim=-1, keepdim=True) + eps)
    return (x_normed * weight.float().unsqueeze(1)).to(dtype=dtype)


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """K bias-free linear layers at once: x (K, N, in), weight (K, out, in) -> (K, N, out)."""
    return torch.bmm(x, weight.transpose(1, 2))


def _chunk_loss_and_grads(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          scale: torch.Tensor, with_grads: bool):
    """Summed cross-entropy of one token chunk per proxy, and its gradients scaled by `scale` (K,).

    The logits are formed in the matmul dtype and reduced in fp32; softmax - onehot is the gradient
    of the logits, computed in place in the logits' buffer, so the chunk's logits are never stored for
    a backward pass and no second (K, chunk, vocab) tensor is made.
    """
    logits = torch.bmm(hidden, weight.transpose(1, 2)).float()  # (K, c, V)
    lse = torch.logsumexp(logits, dim=-1)
    index = targets.unsqueeze(-1)
    losses = (lse - logits.gather(-1, index).squeeze(-1)).sum(-1)
    if not with_grads:
        return losses, None, None
    grad_logits = logits.sub_(lse.unsqueeze(-1)).exp_()
    grad_logits.scatter_add_(-1, index, torch.full(index.shape, -1.0, device=logits.device))
    grad_logits = grad_logits.mul_(scale.view(-1, 1, 1)).to(hidden.dtype)
    return losses, torch.bmm(grad_logits, weight), torch.bmm(grad_logits.transpose(1, 2), hidden)


class _LinearCrossEntropy(torch.autograd.Function):
    """Per-proxy mean cross-entropy of `hidden @ weight.T`, chunked over tokens, gradients in forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int, dtype: torch.dtype, chunk_fn: Any) -> torch.Tensor:
        K, N, _ = hidden.shape
        with_grads = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        h, w = hidden.to(dtype), weight.to(dtype)
        scale = torch.full((K,), 1.0 / N, device=hidden.device)
        total = torch.zeros(K, device=hidden.device)
        grad_hidden = torch.empty_like(hidden) if with_grads else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if with_grads else None
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, N, chunk):
                part = slice(start, min(start + chunk, N))
                losses, g_h, g_w = chunk_fn(h[:, part], w, targets[:, part], scale, with_grads)
                total += losses
                if with_grads:
                    grad_hidden[:, part] = g_h
                    grad_weight += g_w
        if with_grads:
            ctx.save_for_backward(grad_hidden, grad_weight.to(weight.dtype))
        return total / N

    @staticmethod
    def backward(ctx: Any, grad_loss: torch.Tensor):
        grad_hidden, grad_weight = ctx.saved_tensors
        g = grad_loss.view(-1, 1, 1)
        return grad_hidden * g.to(grad_hidden.dtype), grad_weight * g.to(grad_weight.dtype), None, None, None, None


class StackedGPT(torch.nn.Module):
    """K litgpt GPTs of one architecture as stacked (K, ...) parameters, run by batched matmuls.

    Parameter i is litgpt's parameter `names[i]` of every proxy stacked on dim 0, in litgpt's order, so
    `proxy_state(k)` is a litgpt state_dict and optimizer state indices match a single GPT's.
    """

    def __init__(self, models: Sequence[GPT], loss_chunk: int = DEFAULT_LOSS_CHUNK, compile: bool = False):
        super().__init__()
        config = models[0].config
        problem = stack_problem(config)
        if problem:
            raise ValueError(problem)
        if any(m.config != config for m in models):
            raise ValueError("all proxies of a group need the same model config")
        self.config = config
        self.names = [name for name, _ in models[0].named_parameters()]
        params = [dict(m.named_parameters()) for m in models]
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.stack([p[name].detach() for p in params])) for name in self.names)
        self.register_buffer("cos", models[0].cos.detach().clone(), persistent=False)
        self.register_buffer("sin", models[0].sin.detach().clone(), persistent=False)
        self.loss_chunk = loss_chunk
        self.chunk_fn = torch.compile(_chunk_loss_and_grads, dynamic=False) if compile else _chunk_loss_and_grads
        self.body = torch.compile(self.hidden, dynamic=False) if compile else self.hidden

    @property
    def size(self) -> int:
        return self.weights[0].size(0)

    def param(self, name: str) -> torch.Tensor:
        return self.weights[self.names.index(name)]

    def proxy_state(self, k: int) -> dict[str, torch.Tensor]:
        """Proxy k's litgpt state_dict (copies, so saving it does not save the whole stack)."""
        return {name: p[k].detach().clone() for name, p in zip(self.names, self.weights)}

    @torch.no_grad()
    def load_proxy_state(self, k: int, state: dict[str, torch.Tensor]) -> None:
        for name, p in zip(self.names, self.weights):
            p[k].copy_(state[name])

    def _attention(self, x: torch.Tensor, block: str, batch: int) -> torch.Tensor:
        c = self.config
        K, N, _ = x.shape
        T = N // batch
        qkv = _linear(x, self.param(f"{block}.attn.qkv.weight")).view(K * batch, T, -1)
        q, k, v = qkv.split((c.n_head * c.head_size, c.n_query_groups * c.head_size,
                             c.n_query_groups * c.head_size), dim=-1)
        q = q.view(K * batch, T, c.n_head, c.head_size).transpose(1, 2)
        k = k.view(K * batch, T, c.n_query_groups, c.head_size).transpose(1, 2)
        v = v.view(K * batch, T, c.n_query_groups, c.head_size).transpose(1, 2)
        cos, sin = self.cos[:T].unsqueeze(0), self.sin[:T].unsqueeze(0)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=1.0 / math.sqrt(c.head_size),
                                           enable_gqa=c.n_query_groups != c.n_head)
        y = y.transpose(1, 2).reshape(K, N, c.n_head * c.head_size)
        return _linear(y, self.param(f"{block}.attn.proj.weight"))

    def _mlp(self, x: torch.Tensor, block: str) -> torch.Tensor:
        gate = _linear(x, self.param(f"{block}.mlp.fc_1.weight"))
        up = _linear(x, self.param(f"{block}.mlp.fc_2.weight"))
        return _linear(F.silu(gate) * up, self.param(f"{block}.mlp.proj.weight"))

    def hidden(self, idx: torch.Tensor) -> torch.Tensor:
        """Final-norm hidden states (K, B*T, n_embd) of token ids (K, B, T), as litgpt's GPT computes."""
        K, B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        wte = self.param("transformer.wte.weight")
        offsets = torch.arange(K, device=idx.device).view(K, 1, 1) * wte.size(1)
        x = F.embedding((idx + offsets).view(K, B * T), wte.reshape(-1, wte.size(-1)))
        eps = self.config.norm_eps
        for i in range(self.config.n_layer):
            block = f"transformer.h.{i}"
            x = x + self._attention(_rms_norm(x, self.param(f"{block}.norm_1.weight"), eps), block, B)
            x = x + self._mlp(_rms_norm(x, self.param(f"{block}.norm_2.weight"), eps), block)
        return _rms_norm(x, self.param("transformer.ln_f.weight"), eps)

    def loss(self, batch: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Per-proxy mean next-token loss (K,) of token windows (K, B, T + 1); matmuls in `dtype`."""
        hidden = self.body(batch[..., :-1])
        targets = batch[..., 1:].reshape(self.size, -1)
        return _LinearCrossEntropy.apply(hidden, self.param("lm_head.weight"), targets, self.loss_chunk,
                                         dtype, self.chunk_fn)


def _matmul_dtype(device: torch.device) -> torch.dtype:
    """The output layer's matmul dtype: bf16 on CUDA as under the single trainer's autocast, else fp32."""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# ---- the engine: optimizer step, failures, evaluation, checkpoints -------------------------------------

class StackedEngine(Engine):
    """K proxies of one architecture and settings (their seeds may differ) as one stacked model and AdamW."""

    def __init__(self, settings: TrainingSettings, seeds: Sequence[int], vocab_size: int, device: torch.device,
                 compile: bool | None = None, loss_chunk: int = DEFAULT_LOSS_CHUNK):
        models = []
        for seed in seeds:
            torch.manual_seed(seed)
            models.append(build_model(settings.model_name, vocab_size, settings.block_size))
        self.non_embedding_parameters = non_embedding_parameters(models[0])
        self.device = device
        self.settings = settings
        compile = device.type == "cuda" if compile is None else compile
        self.model = StackedGPT(models, loss_chunk, compile).to(device)
        self.optimizer = adamw(self.model.parameters(), settings, fused=True)
        self.alive = [True] * len(models)
        self.dtype = _matmul_dtype(device)

    def step(self, lr: float, draw: Draw, accumulation: int) -> tuple[list[float], list[float]]:
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total = torch.zeros(self.size, device=self.device)
        for _ in range(accumulation):
            batch = draw()
            if self.device.type == "cuda":
                batch = batch.pin_memory()
            with autocast(self.device):
                loss = self.model.loss(batch.to(self.device, non_blocking=True), self.dtype)
            (loss.sum() / accumulation).backward()
            total += loss.detach()
        grads = [p.grad for p in self.model.parameters()]
        norms = torch.stack([g.flatten(1).float().norm(dim=1) for g in grads]).norm(dim=0)
        losses, norm_values = torch.stack([total / accumulation, norms]).tolist()
        for k in range(self.size):
            if self.alive[k] and not (math.isfinite(losses[k]) and math.isfinite(norm_values[k])):
                self.fail(k)
        alive = torch.tensor(self.alive, device=self.device)
        coef = torch.where(alive, (self.settings.grad_clip / (norms + 1e-6)).clamp(max=1.0), 0.0)
        for g in grads:
            g.mul_(coef.view((-1,) + (1,) * (g.dim() - 1)))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return losses, norm_values

    @torch.no_grad()
    def fail(self, k: int) -> None:
        """Retire proxy k: zero its weights, gradients and AdamW moments, so AdamW keeps them zero.

        Zero weights give finite (uniform) outputs and zero gradients, so a failed proxy stays inert.
        """
        self.alive[k] = False
        for p in self.model.parameters():
            p[k].zero_()
            if p.grad is not None:
                p.grad[k].zero_()
            for moment in ("exp_avg", "exp_avg_sq"):
                if moment in self.optimizer.state.get(p, {}):
                    self.optimizer.state[p][moment][k].zero_()

    @torch.no_grad()
    def evaluate(self, valid: dict[str, torch.Tensor], batch_size: int) -> list[dict[str, float]]:
        totals: dict[str, list[float]] = {}
        for domain, windows in valid.items():
            total = torch.zeros(self.size, device=self.device)
            for chunk in windows.split(batch_size):
                batch = chunk.to(self.device).expand(self.size, -1, -1)
                with autocast(self.device):
                    total += self.model.loss(batch, self.dtype) * len(chunk)
            totals[domain] = [t / len(windows) for t in total.tolist()]
        return [{d: v[k] for d, v in totals.items()} for k in range(self.size)]

    def save(self, models: Sequence[int], paths: Sequence[Path], states: Sequence[dict[str, Any]]) -> None:
        """Proxy k's litgpt state_dict and optimizer state (the single engine's layout) into its checkpoint."""
        full = self.optimizer.state_dict()
        checkpoints = []
        for k, state in zip(models, states):
            optimizer = {i: {key: (v[k].clone() if key != "step" else v.clone()) for key, v in s.items()}
                         for i, s in full["state"].items()}
            checkpoints.append({**state, "model": self.model.proxy_state(k),
                                "optimizer": {"state": optimizer, "param_groups": full["param_groups"]}})
        save_states(paths, checkpoints)

    def load(self, paths: Sequence[Path]) -> None:
        states = [read_checkpoint(path) for path in paths]
        for k, state in enumerate(states):
            self.model.load_proxy_state(k, state["model"])
        per_proxy = [s["optimizer"] for s in states]
        if per_proxy[0]["state"]:
            stacked = {i: {key: (torch.stack([o["state"][i][key] for o in per_proxy]) if key != "step"
                                 else per_proxy[0]["state"][i][key]) for key in per_proxy[0]["state"][i]}
                       for i in per_proxy[0]["state"]}
            self.optimizer.load_state_dict({"state": stacked, "param_groups": per_proxy[0]["param_groups"]})
