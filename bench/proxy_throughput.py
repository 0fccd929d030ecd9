"""Proxy-training throughput: K proxies stacked (regmix.train.stacked's engine) vs the plain litgpt loop.

Both train the same preset on random tokens with the published batch (global batch sequences of
block tokens per optimizer step, as micro-batches), AdamW fused, bf16 autocast on CUDA (fp32 on CPU).
The plain loop is the single trainer's step: one litgpt GPT, full logits, clip_grad_norm_.

Model FLOPs per trained token (stated so figures can be compared):
    6 * (non-embedding parameters + output-layer parameters) + 6 * n_layer * n_embd * block
the second term is causal attention (QK^T and AV, 2 * block * n_embd multiply-adds forward per layer
on average, times 3 for forward + backward). MFU divides by the device's peak: dense bf16 for known
GPUs (--peak-tflops to override); on CPU the best measured fp32 rate of a 2048^3 matmul. Step times are medians.

    python bench/proxy_throughput.py                                  # CUDA: tinyllama_1M, K = 16
    python bench/proxy_throughput.py --k 8 16 32
    python bench/proxy_throughput.py --vocab 4096 --block 256 --k 4 --global-batch 8 --micro-batch 4
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable

import torch

from regmix.settings.training import TrainingSettings
from regmix.train.engine import adamw, autocast, next_token_loss
from regmix.train.models import build_model, non_embedding_parameters
from regmix.train.stacked import DEFAULT_LOSS_CHUNK, StackedEngine

PEAK_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0, "L40S": 362.1, "A10G": 70.0}


class RandomTokens:
    """Uniform random token windows: the data stand-in (sampling cost is not what is measured)."""

    def __init__(self, vocab: int, block: int, seed: int):
        self.vocab, self.block = vocab, block
        self.generator = torch.Generator().manual_seed(seed)

    def next_batch(self, size: int) -> torch.Tensor:
        return torch.randint(0, self.vocab, (size, self.block + 1), generator=self.generator)


def flops_per_token(model: torch.nn.Module, block: int) -> float:
    c = model.config
    return 6.0 * (non_embedding_parameters(model) + model.lm_head.weight.numel()) + 6.0 * c.n_layer * c.n_embd * block


def peak_flops(device: torch.device, override: float | None) -> tuple[float, str]:
    if override:
        return override * 1e12, "given"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in PEAK_BF16_TFLOPS.items():
            if key in name:
                return tflops * 1e12, f"{key} dense bf16"
        raise SystemExit(f"unknown peak for {name}: pass --peak-tflops")
    a = torch.randn(2048, 2048)
    best = math.inf
    for _ in range(6):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 2048**3 / best, "measured fp32 matmul, best of 6"


def timed(step: Callable[[], None], warmup: int, steps: int, device: torch.device) -> tuple[float, float]:
    """Median seconds per step after warm-up (compilation; robust to busy shared machines), and peak
    memory in GiB (CUDA only, else nan)."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    return statistics.median(times), memory


def plain_step(args: argparse.Namespace, device: torch.device) -> Callable[[], None]:
    """The single trainer's step on one litgpt GPT."""
    torch.manual_seed(0)
    model = build_model(args.model, args.vocab, args.block).to(device)
    settings = TrainingSettings()
    optimizer = adamw(model.parameters(), settings, fused=True)
    loss_fn = torch.compile(next_token_loss) if args.compile_plain else next_token_loss
    data = RandomTokens(model.config.padded_vocab_size, args.block, 0)
    accumulation = args.global_batch // args.micro_batch

    def step() -> None:
        for _ in range(accumulation):
            batch = data.next_batch(args.micro_batch).to(device, non_blocking=True)
            with autocast(device):
                loss = loss_fn(model, batch)
            (loss / accumulation).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def group_step(args: argparse.Namespace, k: int, device: torch.device, compile: bool) -> Callable[[], None]:
    settings = TrainingSettings(model_name=args.model, global_batch_size=args.global_batch,
                                micro_batch_size=args.micro_batch, block_size=args.block, learning_rate=4e-4)
    samplers = [RandomTokens(args.vocab, args.block, i) for i in range(k)]
    engine = StackedEngine(settings, list(range(k)), args.vocab, device, compile, args.loss_chunk)

    def draw() -> torch.Tensor:
        return torch.stack([s.next_batch(args.micro_batch) for s in samplers])

    accumulation = args.global_batch // args.micro_batch
    return lambda: engine.step(4e-4, draw, accumulation)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tinyllama_1M", help="preset of regmix.train.models")
    p.add_argument("--vocab", type=int, default=50432)
    p.add_argument("--block", type=int, default=2048)
    p.add_argument("--global-batch", type=int, default=512, help="sequences per optimizer step (per proxy)")
    p.add_argument("--micro-batch", type=int, default=16, help="sequences per micro-batch (per proxy)")
    p.add_argument("--plain-micro-batch", type=int, default=None,
                   help="micro-batch of the plain loop (default: as --micro-batch)")
    p.add_argument("--k", type=int, nargs="+", default=[16], help="group sizes to measure")
    p.add_argument("--steps", type=int, default=5, help="timed optimizer steps (the median is reported)")
    p.add_argument("--warmup", type=int, default=1, help="untimed optimizer steps first (compilation)")
    p.add_argument("--loss-chunk", type=int, default=DEFAULT_LOSS_CHUNK)
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile the group's model and loss chunks (auto: on CUDA only)")
    p.add_argument("--compile-plain", action="store_true", help="torch.compile the plain loop's loss too")
    p.add_argument("--no-plain", action="store_true", help="skip the plain loop")
    p.add_argument("--device", default=None)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for MFU (TFLOP/s)")
    args = p.parse_args()
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    compile = args.compile == "on" or (args.compile == "auto" and device.type == "cuda")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True

    probe = build_model(args.model, args.vocab, args.block)
    per_token = flops_per_token(probe, args.block)
    peak, peak_source = peak_flops(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    tokens = args.global_batch * args.block
    print(f"device {name}; {args.model} vocab {probe.config.padded_vocab_size} block {args.block}; "
          f"{args.global_batch} x {args.block} tokens per step per proxy; {per_token / 1e6:.1f} MFLOP/token; "
          f"peak {peak / 1e12:.1f} TFLOP/s ({peak_source})")

    def report(label: str, seconds: float, proxies: int, memory: float) -> float:
        rate = proxies * tokens / seconds
        print(f"{label:<34} {rate:>12,.0f} tokens/s  MFU {100 * rate * per_token / peak:5.1f}%  "
              f"{seconds:7.3f} s/step  peak memory {memory:6.2f} GiB", flush=True)
        return rate

    plain = None
    if not args.no_plain:
        plain_args = argparse.Namespace(**{**vars(args), "micro_batch": args.plain_micro_batch or args.micro_batch})
        seconds, memory = timed(plain_step(plain_args, device), args.warmup, args.steps, device)
        plain = report(f"plain litgpt loop (micro {plain_args.micro_batch})", seconds, 1, memory)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    for k in args.k:
        seconds, memory = timed(group_step(args, k, device, compile), args.warmup, args.steps, device)
        rate = report(f"stacked K={k}{' compiled' if compile else ''}", seconds, k, memory)
        if plain:
            print(f"{'':<34} {rate / plain:.2f}x the plain loop", flush=True)
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
