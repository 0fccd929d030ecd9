"""What a number of proxy runs costs: tokens, the model's size and the wall time on this machine, measured.

The time is not guessed from a table: the proxy is built as the sweep builds it (regmix.train.engine's
SingleEngine, the run's settings and vocabulary) and takes two real optimizer steps on random tokens of the
run's shape, on the torch threads one sweep worker gets; the first step warms up (allocation, kernel choice),
the second is timed. A run is that times its steps; the runs train `workers` at a time. Evaluations, data
loading and process start are not counted, so the real time is somewhat longer.
"""

from __future__ import annotations

import os
import time

from regmix.settings.training import TrainingSettings

CUDA_NOTE = ("on CUDA the sweep trains 16 proxies stacked per GPU, which is faster than 16 alone: an upper bound")


def estimate(settings: TrainingSettings, runs: int, vocab_size: int, device: str | None = None, workers: int = 0,
             timed: bool = True) -> list[str]:
    """Plan lines for `runs` proxies of `settings`: the model and its size, tokens a run and in all, and (`timed`)
    the wall time here from two timed steps, with `workers` as the sweep counts them (0: one per GPU or core)."""
    import torch

    from regmix.train.engine import resolve_device
    from regmix.train.models import model_size

    tokens = settings.max_step * settings.global_batch_size * settings.block_size
    size = model_size(settings.model_name, vocab_size, settings.block_size)
    lines = [f"proxy: {settings.model_name} ({size / 1e6:.2f}M non-embedding parameters, vocabulary {vocab_size}), "
             f"{settings.max_step:,} steps x {settings.global_batch_size} sequences x {settings.block_size} tokens "
             f"= {tokens:,} tokens a run",
             f"proxy runs: {runs}, {runs * tokens:,} tokens in all"]
    if not timed or runs == 0:
        return lines
    where = resolve_device(device)
    cuda = where.type == "cuda"
    workers = workers or (torch.cuda.device_count() if cuda else os.cpu_count() or 1)
    threads = 1 if cuda else max(1, (os.cpu_count() or 1) // workers)  # as regmix.train.sweep gives each worker
    seconds = step_seconds(settings, vocab_size, device, threads)
    run = seconds[1] * settings.max_step
    total = run * runs / min(workers, runs)
    lines.append(f"time here ({where.type}, {threads} thread{'s' * (threads > 1)} a worker): a step {seconds[1]:.3g} s "
                 f"(the second of two timed; the first {seconds[0]:.3g} s), a run {describe_seconds(run)}; "
                 f"{runs} runs, {min(workers, runs)} at once: about {describe_seconds(total)} "
                 "(evaluations and start-up not counted" + (f"; {CUDA_NOTE})" if cuda else ")"))
    return lines


def step_seconds(settings: TrainingSettings, vocab_size: int, device: str | None = None, threads: int = 0
                 ) -> tuple[float, float]:
    """Seconds of two real optimizer steps of the proxy `settings` builds, on `threads` torch threads (0: as they are):
    the first warms up, the second is the step's time."""
    import torch

    from regmix.train.engine import SingleEngine, resolve_device

    where = resolve_device(device)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        engine = SingleEngine(settings, vocab_size, where)
        generator = torch.Generator().manual_seed(0)

        def draw() -> torch.Tensor:
            return torch.randint(vocab_size, (1, settings.micro_batch_size, settings.block_size + 1),
                                 generator=generator)

        accumulation = settings.global_batch_size // settings.micro_batch_size
        seconds = []
        for _ in range(2):
            started = time.perf_counter()
            engine.step(settings.learning_rate, draw, accumulation)
            if where.type == "cuda":
                torch.cuda.synchronize(where)
            seconds.append(time.perf_counter() - started)
    finally:
        torch.set_num_threads(previous)
    return seconds[0], seconds[1]


def describe_seconds(seconds: float) -> str:
    """`42 s`, `7.5 min`, `3.2 h`, `2.1 days`."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.2g} s"
