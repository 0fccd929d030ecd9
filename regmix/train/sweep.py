"""Proxy sweeps: train every config of a folder once, across processes and machines, resumably.

Each config's run lives in `<output>/<config name>/` (config.yaml, metrics.jsonl, result.json,
checkpoint.pt while training, lock, wandb/). A run with a result.json is skipped; a worker claims a
run by its lock (regmix.train.locks), so workers and machines sharing the folder never train one
twice. Claimed runs are trained `group_size` at a time: one run alone by the single engine, several
together by the stacked engine, always through the one training loop. A bad config or a crashed run
is reported and the sweep goes on. One progress bar counts the sweep's runs.

With the Ray executor (regmix.train.executor) each group is one Ray task and the driver alone decides who
trains what: no locks are taken, and a task retried after its node died resumes its runs' checkpoints.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing as mp
import os
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Collection, Sequence

import torch
from tqdm.auto import tqdm

from regmix.cli import describe_os_error
from regmix.core.files import ConfigError
from regmix.core.results import RunResult, load_result
from regmix.core.schema import CHECKPOINT_NAME, CONFIG_NAME, LOCK_NAME, RESULT_NAME, safe_name
from regmix.data.corpus import CorpusManifest
from regmix.settings.run_config import RunConfig, load_run_config
from regmix.train.checkpoint import check_resumable, checkpoint_step, differences, run_identity
from regmix.train.engine import SingleEngine, resolve_device
from regmix.train.executor import LOCAL, Executor, ray_map, task_device
from regmix.train.locks import acquire_lock, lock_holder, release_lock
from regmix.train.loop import group_key, train
from regmix.train.models import model_config
from regmix.train.runlog import check_wandb
from regmix.train.stacked import StackedEngine, stack_problem

CUDA_GROUP_SIZE = 16
CPU_GROUP_SIZE = 1


def train_proxies(configs: Sequence[RunConfig], manifest: CorpusManifest, run_dirs: Sequence[str | os.PathLike], *,
                  device: str | torch.device | None = None, sources: Sequence[str | Path] | None = None,
                  wandb_mode: str = "auto", wandb_project: str = "regmix", wandb_group: str | None = None,
                  progress: bool = False, compile: bool | None = None, keep_checkpoint: bool = False
                  ) -> list[RunResult]:
    """Train proxies (one, or several of one group_key together), resuming each from its run folder;
    `keep_checkpoint` keeps the trained models (a reference model for DoReMi, say)."""
    device = resolve_device(device)
    settings, vocab = configs[0].training, manifest.tokenizer.vocab_size
    if len(configs) == 1:
        engine: Any = SingleEngine(settings, vocab, device)
        extra = {}
    else:
        engine = StackedEngine(settings, [c.training.seed for c in configs], vocab, device, compile)
        extra = {"group_size": len(configs)}
    label = configs[0].name if len(configs) == 1 else f"group of {len(configs)}"
    with tqdm(total=settings.max_step, desc=label, unit="step", leave=False, disable=not progress,
              dynamic_ncols=True) as bar:
        bar.update(checkpoint_step(Path(run_dirs[0])))
        return train(engine, configs, manifest, [Path(d) for d in run_dirs], sources=sources, wandb_mode=wandb_mode,
                     wandb_project=wandb_project, wandb_group=wandb_group, bar=bar if progress else None,
                     extra=extra, keep_checkpoint=keep_checkpoint)


@dataclass
class SweepEntry:
    """What happened to one config of a sweep: finished, failed, skipped (already done) or busy."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class SweepOptions:
    output: Path
    device: str | None
    wandb_mode: str
    wandb_project: str
    group_size: int
    progress: bool  # a step bar for a sweep of one run
    locks: bool = True  # False where one scheduler (the Ray driver) hands out the runs
    keep: frozenset[str] = frozenset()  # runs whose trained model stays (checkpoint.pt): a DoReMi reference


def finished_entry(path: Path, output: Path) -> SweepEntry | None:
    """The entry of a config whose run has a result: skipped, or failed if that result is another run's.

    Another run: another requested mixture, schedule, valid domains or settings (max_step included)
    than the config holds now, read from the result and the config.yaml the run was trained with.
    """
    try:
        run_dir = output / safe_name(path.stem, "run name (the file's name)", path)
    except ConfigError as exc:
        return SweepEntry(path.stem, "failed", str(exc))
    result_path = run_dir / RESULT_NAME
    if not result_path.exists():
        return None
    try:
        result, config = load_result(result_path), load_run_config(path)
        trained = run_dir / CONFIG_NAME
        saved = run_identity(load_run_config(trained)) if trained.exists() else {"valid": list(config.valid)}
    except ConfigError as exc:
        return SweepEntry(path.stem, "failed", str(exc))
    found = differences({**saved, "requested": result.requested.to_dict(), "settings": result.settings}, config)
    if result.settings.get("max_step", config.training.max_step) != config.training.max_step:
        found.append("other settings (max_step)")
    if found:
        return SweepEntry(path.stem, "failed", f"{result_path}: a run with {' and '.join(found)} than {path} holds "
                                               f"now (configs written again?); move {run_dir} away to train it anew")
    return SweepEntry(path.stem, "skipped", "result.json exists")


@dataclass
class Claim:
    path: Path
    config: RunConfig
    run_dir: Path
    lock_fd: int | None


def claim(path: Path, manifest: CorpusManifest, output: Path, lock: bool = True) -> Claim | SweepEntry:
    """Lock a config's run (if `lock`) unless it is done or taken, load and check it; else the entry saying
    why not."""
    run_dir = output / path.stem
    lock_path = run_dir / LOCK_NAME
    try:
        config = load_run_config(path)
        config.check_corpus(manifest, path)
    except ConfigError as exc:
        return SweepEntry(path.stem, "failed", str(exc))
    fd = acquire_lock(lock_path) if lock else None
    if lock and fd is None:
        return SweepEntry(path.stem, "busy", f"locked by {lock_holder(lock_path)}")
    try:
        entry = finished_entry(path, output)  # another worker may have finished it since
        if entry is None:
            check_resumable(run_dir / CHECKPOINT_NAME, config, manifest)
            return Claim(path, config, run_dir, fd)
    except ConfigError as exc:
        entry = SweepEntry(path.stem, "failed", str(exc))
    if fd is not None:
        release_lock(lock_path, fd)
    return entry


def _entries(configs: Sequence[RunConfig], train_them: Callable[[], list[RunResult]]) -> list[SweepEntry]:
    """Train and report; a bug or resource error must not end the sweep (no result.json: a rerun retries)."""
    try:
        return [SweepEntry(r.name, r.status, r.error or " ".join(f"{d}={v:.4f}" for d, v in r.valid_losses.items()),
                           r.seconds) for r in train_them()]
    except ConfigError as exc:
        return [SweepEntry(c.name, "failed", str(exc)) for c in configs]
    except OSError as exc:  # a full disk, a lost mount: say which file
        return [SweepEntry(c.name, "failed", describe_os_error(exc)) for c in configs]
    except Exception as exc:
        detail = f"{type(exc).__name__}: {exc}"
        if os.environ.get("REGMIX_DEBUG"):
            detail += "\n" + traceback.format_exc(limit=3)
        return [SweepEntry(c.name, "failed", detail) for c in configs]


@functools.cache
def stackable(model_name: str, vocab_size: int, block_size: int) -> bool:
    """Whether the stacked engine can train this model; one that it cannot (not LLaMA-style) is said once per
    process and its runs train one at a time, each through litgpt's own GPT."""
    problem = stack_problem(model_config(model_name, vocab_size, block_size))
    if problem:
        print(f"note: {problem}; its runs train one at a time instead", flush=True)
    return problem is None


def run_chunk(paths: Sequence[Path], manifest: CorpusManifest, options: SweepOptions) -> list[SweepEntry]:
    """Claim the chunk's configs and train them, those of one group_key and step together."""
    claims = [claim(Path(p), manifest, options.output, options.locks) for p in paths]
    entries = [c for c in claims if isinstance(c, SweepEntry)]
    held = [c for c in claims if isinstance(c, Claim)]
    groups: dict[tuple, list[Claim]] = {}
    for c in held:
        kept = c.config.name in options.keep
        stack = options.group_size > 1 and stackable(c.config.training.model_name, manifest.tokenizer.vocab_size,
                                                     c.config.training.block_size)
        key = (group_key(c.config), checkpoint_step(c.run_dir), kept) if stack else (c.path,)
        groups.setdefault(key, []).append(c)
    try:
        for members in groups.values():
            configs = [c.config for c in members]
            entries += _entries(configs, functools.partial(
                train_proxies, configs, manifest, [c.run_dir for c in members], device=options.device,
                sources=[c.path for c in members], wandb_mode=options.wandb_mode,
                wandb_project=options.wandb_project, wandb_group=options.output.name, progress=options.progress,
                keep_checkpoint=members[0].config.name in options.keep))
    finally:
        for c in held:
            if c.lock_fd is not None:
                release_lock(c.run_dir / LOCK_NAME, c.lock_fd)
    return entries


_worker_options: SweepOptions | None = None


def _init_worker(slots: Any, options: SweepOptions, threads: int, gpus: int) -> None:
    """Give a pool worker its torch threads on CPU, or its GPU (round robin)."""
    global _worker_options
    slot = slots.get()
    torch.set_num_threads(threads)
    _worker_options = dataclasses.replace(options, device=f"cuda:{slot % gpus}" if gpus else options.device)


def _pool_task(paths: Sequence[Path], manifest: CorpusManifest) -> list[SweepEntry]:
    assert _worker_options is not None, "pool worker without options"
    return run_chunk(paths, manifest, _worker_options)


def train_sweep(config_paths: Sequence[Path], manifest: CorpusManifest, output: str | os.PathLike, *,
                workers: int = 0, device: str | None = None, group_size: int = 0, wandb_mode: str = "auto",
                wandb_project: str = "regmix", progress: bool = True, executor: Executor = LOCAL,
                keep: Collection[str] = (), report: Callable[[str], None] = print) -> list[SweepEntry]:
    """Train every config not yet done into `output/<name>/`; print and return what happened to each.

    The runs named in `keep` keep their trained model (checkpoint.pt); one whose result exists without it
    is trained again.
    `workers` 0 means one per GPU on CUDA and one per core on CPU (local executor; Ray places its tasks
    itself). `group_size` 0 means 16 proxies trained at once per GPU on CUDA and CPU_GROUP_SIZE on CPU.
    """
    if workers < 0 or group_size < 0:
        raise ValueError(f"workers and group_size must be >= 0, got {workers} and {group_size}")
    check_wandb(wandb_mode)
    if executor.kind == "ray":
        task_gpus = executor.task_gpus(device)
        cuda, device = task_gpus > 0, task_device(task_gpus)
    else:
        cuda = resolve_device(device).type == "cuda"
    gpus = torch.cuda.device_count() if cuda and ":" not in (device or "") else 0  # an explicit cuda:N is kept
    group_size = group_size or (CUDA_GROUP_SIZE if cuda else CPU_GROUP_SIZE)
    output = Path(output)
    for name in keep:  # a kept model was asked for after the run finished without it: train it again
        if (output / name / RESULT_NAME).exists() and not (output / name / CHECKPOINT_NAME).exists():
            (output / name / RESULT_NAME).unlink()
    finished = {Path(p): finished_entry(Path(p), output) for p in config_paths}
    todo = [p for p, entry in finished.items() if entry is None]
    chunks = [todo[i:i + group_size] for i in range(0, len(todo), group_size)]
    workers = min(workers or (torch.cuda.device_count() if cuda else os.cpu_count() or 1), max(1, len(chunks)))
    options = SweepOptions(output, device, wandb_mode, wandb_project, group_size,
                           progress=progress and len(config_paths) == 1 and executor.kind == "local",
                           locks=executor.kind == "local", keep=frozenset(keep))
    started = time.perf_counter()
    entries: list[SweepEntry] = []
    bar = tqdm(total=len(config_paths), desc=f"sweep {output.name}", unit="run", dynamic_ncols=True,
               disable=not progress or len(config_paths) == 1)

    def record(chunk_entries: list[SweepEntry]) -> None:
        for entry in chunk_entries:
            entries.append(entry)
            bar.update()
            if entry.status == "failed" and len(config_paths) > 1:  # live news; the summary has it all
                bar.write(f"FAILED {entry.name}: {entry.detail.splitlines()[0]}")

    record([entry for entry in finished.values() if entry is not None])
    if executor.kind == "ray":  # tasks run elsewhere, in another folder: every path absolute
        chunks = [[Path(p).resolve() for p in chunk] for chunk in chunks]
        task = functools.partial(run_chunk, manifest=manifest.absolute(),
                                 options=dataclasses.replace(options, output=output.resolve()))
        for index, chunk_entries in ray_map(task, chunks, executor, task_gpus, "regmix_sweep"):
            if isinstance(chunk_entries, BaseException):  # given up on: no result.json, so a rerun retries
                chunk_entries = [SweepEntry(Path(p).stem, "failed", f"Ray task failed after {executor.retries} "
                                            f"retries: {type(chunk_entries).__name__}: {chunk_entries}")
                                 for p in chunks[index]]
            record(chunk_entries)
    elif workers == 1:
        for chunk in chunks:
            record(run_chunk(chunk, manifest, options))
    else:
        context = mp.get_context("spawn")
        slots = context.Queue()
        for slot in range(workers):
            slots.put(slot)
        threads = 1 if cuda else max(1, (os.cpu_count() or 1) // workers)
        with context.Pool(workers, initializer=_init_worker, initargs=(slots, options, threads, gpus)) as pool:
            for chunk_entries in pool.imap_unordered(functools.partial(_pool_task, manifest=manifest), chunks):
                record(chunk_entries)
            pool.close()  # let the workers exit on their own: terminating them leaks their semaphores
            pool.join()
        slots.close()
    bar.close()
    report(summarize(entries, time.perf_counter() - started))
    return entries


def summarize(entries: Sequence[SweepEntry], seconds: float) -> str:
    """One line of counts, then one line per failed run with its reason."""
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.status] = counts.get(entry.status, 0) + 1
    lines = [f"sweep: {len(entries)} configs in {seconds:.1f}s: "
             + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    lines += [f"  failed {e.name}: " + e.detail.replace("\n", "\n    ") for e in entries if e.status == "failed"]
    return "\n".join(lines)
