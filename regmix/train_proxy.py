"""Train RegMix proxy models: one per mixture config, a whole sweep folder of them, resumable.

`python -m regmix.train_proxy --config n1.yaml --corpus data/prepared` trains one proxy;
`--config FOLDER` trains every config in it. Each run lives in `<output>/<config name>/`:

    config.yaml      the config as trained (copied from the sweep folder)
    metrics.jsonl    one line per evaluation: step, tokens, train loss, metric/<valid>_val_loss, ...
    result.json      written last, atomically: its presence means the run is done (finished or failed)
    checkpoint.pt    model, optimizer, sampler state and step while training (removed at the end)
    lock             flock-ed by the worker training it (pid and host inside), so no run is trained twice
    wandb/           wandb's run files (offline-run-*/run-<id>.wandb unless online)

Runs with a result.json are skipped; an interrupted run resumes from its last checkpoint exactly.
A bad config or a diverged run (NaN/inf loss) is reported and the sweep goes on. A result or
checkpoint left by another mixture under the same name (a re-synthesized folder) is reported, never
reused or overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import functools
import json
import math
import multiprocessing as mp
import netrc
import os
import socket
import sys
import time
import traceback
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence
from urllib.parse import urlparse

import torch
from tqdm.auto import tqdm

from regmix.corpus import CorpusManifest, load_manifest
from regmix.data import MixtureSampler, validation_sets
from regmix.mixture import ConfigError, Mixture, RunConfig, TrainingSettings, load_run_config, \
    run_config_paths, save_run_config, write_atomic
from regmix.models import build_model, non_embedding_parameters
from regmix.results import HISTORY_NAME, RESULT_NAME, RunResult, evaluation_row, load_result, metric_name, \
    save_result
from regmix.wandb_runs import wait_until_complete

CHECKPOINT_NAME = "checkpoint.pt"
CONFIG_NAME = "config.yaml"
LOCK_NAME = "lock"
WANDB_MODES = ("auto", "online", "offline", "off")
ADAMW = dict(betas=(0.9, 0.95), weight_decay=0.1)  # TinyLlama's pre-training optimizer
GRAD_CLIP = 1.0
CUDA_GROUP_SIZE = 16


class Diverged(RuntimeError):
    """The loss became NaN or infinite: the run is over and recorded as failed."""


def learning_rate(step: int, settings: TrainingSettings) -> float:
    """Linear warm-up to learning_rate, then constant (as RegMix) or cosine decay to min_lr."""
    if step < settings.warmup_steps:
        return settings.learning_rate * (step + 1) / (settings.warmup_steps + 1)
    if settings.lr_schedule == "constant":
        return settings.learning_rate
    progress = (step - settings.warmup_steps) / max(1, settings.max_step - settings.warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return settings.min_lr + cosine * (settings.learning_rate - settings.min_lr)


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; fp32 elsewhere (bf16 matmuls are slow or inexact on most CPUs)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


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


def _loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of a (batch, block_size + 1) token tensor."""
    logits = model(batch[:, :-1])
    return CrossEntropy.apply(logits.reshape(-1, logits.size(-1)).float(), batch[:, 1:].reshape(-1))


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, sampler: MixtureSampler, lr: float,
               accumulation: int, micro_batch_size: int, device: torch.device) -> float:
    """One optimizer step over `accumulation` micro-batches, gradients clipped; returns the mean loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    total = torch.zeros((), device=device)
    for _ in range(accumulation):
        batch = sampler.next_batch(micro_batch_size).to(device, non_blocking=True)
        with _autocast(device):
            loss = _loss(model, batch)
        (loss / accumulation).backward()
        total += loss.detach()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP, foreach=True)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total.item() / accumulation


@torch.no_grad()
def evaluate(model: torch.nn.Module, valid: dict[str, torch.Tensor], batch_size: int,
             device: torch.device) -> dict[str, float]:
    """Mean token loss per validation domain over its fixed windows."""
    model.eval()
    losses = {}
    for domain, windows in valid.items():
        total = torch.zeros((), device=device)
        for chunk in windows.split(batch_size):
            with _autocast(device):
                total += _loss(model, chunk.to(device)) * len(chunk)
        losses[domain] = total.item() / len(windows)
    model.train()
    return losses


def resolve_wandb_mode(mode: str) -> str:
    """`auto`: WANDB_MODE if set, else online with a wandb login (API key or netrc), else offline."""
    if mode not in WANDB_MODES:
        raise ValueError(f"wandb mode must be one of {WANDB_MODES}, not {mode!r}")
    if mode != "auto":
        return mode
    env = os.environ.get("WANDB_MODE", "").lower()
    if env in ("disabled", "off"):
        return "off"
    if env in ("offline", "dryrun", "online", "run"):
        return "online" if env in ("online", "run") else "offline"
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname or ""
    try:
        return "online" if netrc.netrc(os.environ.get("NETRC")).authenticators(host) else "offline"
    except (OSError, netrc.NetrcParseError):
        return "offline"


class RunLog:
    """Where a run's metrics go: metrics.jsonl always, wandb unless off (RegMix's metric names)."""

    def __init__(self, config: RunConfig, run_dir: Path, mode: str, run_id: str | None, extra: dict,
                 project: str, group: str | None):
        self.history_path = run_dir / HISTORY_NAME
        self.wandb = None
        if mode == "off":
            return
        import wandb

        settings = wandb.Settings(silent=True, console="off", x_disable_stats=True, save_code=False,
                                  disable_git=True, x_save_requirements=False)
        self.wandb = wandb.init(project=project, group=group, name=config.name, id=run_id, resume="allow",
                                dir=run_dir, mode=mode, config={**config.to_yaml_dict(), **extra},
                                reinit="finish_previous", settings=settings)
        self.wandb.define_metric("trainer/global_step")
        self.wandb.define_metric("metric/*", step_metric="trainer/global_step")

    @property
    def run_id(self) -> str | None:
        return self.wandb.id if self.wandb else None

    def history(self, up_to_step: int) -> list[dict]:
        """Evaluations logged so far, dropping any logged after the checkpoint we resume from."""
        if not self.history_path.exists():
            return []
        lines = [line for line in self.history_path.read_text().splitlines() if line.strip()]
        rows = []
        for line in lines:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # the last line, cut off by a crash while appending
                break
        kept = [r for r in rows if r["trainer/global_step"] <= up_to_step]
        if len(kept) != len(lines):
            write_atomic(self.history_path, "".join(json.dumps(r) + "\n" for r in kept))
        return kept

    def train(self, step: int, loss: float, lr: float) -> None:
        if self.wandb:
            self.wandb.log({"trainer/global_step": step, "metric/train_loss": loss, "trainer/lr": lr})

    def evaluation(self, row: dict[str, Any]) -> None:
        with self.history_path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.wandb:
            self.wandb.log(row)

    def finish(self, failed: bool) -> None:
        if self.wandb:
            sync_file, offline = self.wandb.settings.sync_file, self.wandb.settings.mode == "offline"
            self.wandb.finish(exit_code=1 if failed else 0)
            if offline:
                wait_until_complete(sync_file)


def load_checkpoint(run_dir: Path, config: RunConfig, device: str | torch.device = "cpu") -> dict[str, Any] | None:
    """The run's checkpoint (None without one), refused if it was trained on another mixture than `config`'s."""
    path = run_dir / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=False, mmap=True)
        trained = Mixture.from_dict(state["sampler"]["weights"], path)
    except (OSError, RuntimeError, KeyError, TypeError) as exc:
        raise ConfigError(path, f"unreadable checkpoint ({exc}); delete it to train the run from scratch") from None
    if not trained.close_to(config.train):
        raise ConfigError(path, f"was trained on another mixture than {config.name}'s config holds now "
                                f"(configs synthesized again?); move {run_dir} away to train it anew")
    return state


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train_proxy(config: RunConfig, manifest: CorpusManifest, run_dir: str | os.PathLike, *,
                source: str | os.PathLike | None = None, device: str | torch.device | None = None,
                wandb_mode: str = "auto", wandb_project: str = "regmix", wandb_group: str | None = None,
                progress: bool = True, progress_position: int = 0) -> RunResult:
    """Train one proxy on `config`'s mixture, resuming from `run_dir`'s checkpoint; write its result.

    Returns the finished result, or a failed one if the loss diverged; a config that does not fit the
    corpus raises ConfigError naming `source`.
    """
    run_dir = Path(run_dir)
    config.check_corpus(manifest, source or run_dir / CONFIG_NAME)
    settings = config.training
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    accumulation = settings.global_batch_size // settings.micro_batch_size
    tokens_per_step = settings.global_batch_size * settings.block_size

    torch.manual_seed(settings.seed)
    model = build_model(settings.model_name, manifest.tokenizer.vocab_size, settings.block_size).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, fused=True, **ADAMW)
    sampler = MixtureSampler(manifest, config.train, settings.block_size, settings.seed)
    valid = validation_sets(manifest, config.valid, settings.block_size, settings.eval_tokens)

    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint_path = run_dir / CHECKPOINT_NAME
    step, seconds, run_id = 0, 0.0, None
    state = load_checkpoint(run_dir, config, device)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        step, seconds, run_id = state["step"], state["seconds"], state["wandb_id"]

    extra = {"non_embedding_parameters": non_embedding_parameters(model),
             "tokens_per_step": tokens_per_step, "device": device.type}
    log = RunLog(config, run_dir, resolve_wandb_mode(wandb_mode), run_id, extra, wandb_project, wandb_group)
    history = log.history(step)
    valid_losses = {d: row[metric_name(d)] for row in history[-1:] for d in valid}

    def checkpoint() -> None:
        _save_checkpoint(checkpoint_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "sampler": sampler.state_dict(),
            "step": step, "seconds": seconds + time.perf_counter() - started, "wandb_id": log.run_id})

    started = time.perf_counter()
    error = None
    bar = tqdm(total=settings.max_step, initial=step, desc=config.name, unit="step", leave=False,
               disable=not progress, position=progress_position, dynamic_ncols=True)
    model.train()
    try:
        while step < settings.max_step:
            lr = learning_rate(step, settings)
            train_loss = train_step(model, optimizer, sampler, lr, accumulation, settings.micro_batch_size, device)
            step += 1
            if not math.isfinite(train_loss):
                raise Diverged(f"training loss is {train_loss} at step {step}")
            log.train(step, train_loss, lr)
            bar.update()
            bar.set_postfix(loss=f"{train_loss:.3f}", refresh=False)
            at_eval = step % settings.eval_step_interval == 0 or step == settings.max_step
            if at_eval:
                valid_losses = evaluate(model, valid, settings.micro_batch_size, device)
                bad = {d: v for d, v in valid_losses.items() if not math.isfinite(v)}
                if bad:
                    raise Diverged(f"validation loss {bad} at step {step}")
                log.evaluation(evaluation_row(step, step * tokens_per_step, train_loss,
                                              seconds + time.perf_counter() - started, valid_losses))
            if step < settings.max_step and (at_eval or step % settings.save_step_interval == 0):
                checkpoint()
    except Diverged as exc:
        error = f"diverged: {exc}"
    finally:
        bar.close()
    log.finish(failed=error is not None)
    result = RunResult(
        name=config.name, status="failed" if error else "finished", mixture=config.train,
        valid_losses={} if error else valid_losses, step=step, tokens=step * tokens_per_step,
        seconds=round(seconds + time.perf_counter() - started, 3), error=error,
        settings={**dataclasses.asdict(settings), **extra})
    save_result(result, run_dir)
    checkpoint_path.unlink(missing_ok=True)
    return result


# ---- sweeps -----------------------------------------------------------------------------------------

def acquire_lock(path: Path) -> int | None:
    """Hold an exclusive flock on the run's lock file: its descriptor, or None if another process holds it.

    The kernel drops the lock when its holder dies, so a crashed worker leaves no stale lock behind
    (on NFS the client maps flock to locks the server arbitrates between machines).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            return fd
        os.close(fd)  # its holder released and removed it between our open and flock: take the new one


def release_lock(path: Path, fd: int) -> None:
    """Remove the lock file, then drop the lock (in this order, so nobody locks a removed file)."""
    path.unlink(missing_ok=True)
    os.close(fd)


def _holder(lock: Path) -> str:
    try:
        return lock.read_text().strip() or "?"
    except OSError:
        return "?"


@dataclass
class SweepEntry:
    """What happened to one config of a sweep: finished, failed, skipped (already done) or busy."""

    name: str
    status: str
    detail: str = ""
    seconds: float = 0.0


@dataclass
class _Options:
    output: Path
    device: str | None
    wandb_mode: str
    wandb_project: str
    progress: bool
    group_size: int = 1
    position: int = 1


def _done(path: Path, output: Path) -> SweepEntry | None:
    """The entry of a config whose run has a result: skipped, or failed if that result is another mixture's."""
    result_path = output / path.stem / RESULT_NAME
    if not result_path.exists():
        return None
    try:
        result, config = load_result(result_path), load_run_config(path)
    except ConfigError as exc:
        return SweepEntry(path.stem, "failed", str(exc))
    wanted = dataclasses.asdict(config.training)
    changed = sorted(k for k, v in wanted.items() if k in result.settings and result.settings[k] != v)
    if not result.mixture.close_to(config.train) or changed:
        what = f"other settings ({', '.join(changed)})" if changed else "another mixture"
        return SweepEntry(path.stem, "failed", f"{result_path}: a run with {what} than {path} holds now "
                                               f"(configs written again?); move {result_path.parent} away "
                                               "to train it anew")
    return SweepEntry(path.stem, "skipped", "result.json exists")


@dataclass
class _Claim:
    config: RunConfig
    run_dir: Path
    lock_fd: int


def _claim(path: Path, manifest: CorpusManifest, options: _Options) -> _Claim | SweepEntry:
    """Lock a config's run unless it is done or taken, load and check it; else the entry saying why not."""
    run_dir = options.output / path.stem
    lock = run_dir / LOCK_NAME
    try:
        config = load_run_config(path)
        config.check_corpus(manifest, path)
    except ConfigError as exc:
        return SweepEntry(path.stem, "failed", str(exc))
    fd = acquire_lock(lock)
    if fd is None:
        return SweepEntry(path.stem, "busy", f"locked by {_holder(lock)}")
    try:
        entry = _done(path, options.output)  # another worker may have finished it since
        if entry is None:
            load_checkpoint(run_dir, config)
            save_run_config(config, run_dir / CONFIG_NAME)
            return _Claim(config, run_dir, fd)
    except ConfigError as exc:
        entry = SweepEntry(path.stem, "failed", str(exc))
    release_lock(lock, fd)
    return entry


def _entry(result: RunResult) -> SweepEntry:
    losses = " ".join(f"{d}={v:.4f}" for d, v in result.valid_losses.items())
    return SweepEntry(result.name, result.status, result.error or losses, result.seconds)


def _crashed(name: str, exc: Exception) -> SweepEntry:
    """A bug or resource error in a run must not end the sweep; no result.json, so a rerun retries."""
    return SweepEntry(name, "failed", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}")


def _train_one(config: RunConfig, run_dir: Path, manifest: CorpusManifest, options: _Options) -> list[SweepEntry]:
    try:
        return [_entry(train_proxy(config, manifest, run_dir, device=options.device,
                                   wandb_mode=options.wandb_mode, wandb_project=options.wandb_project,
                                   wandb_group=options.output.name, progress=options.progress,
                                   progress_position=options.position))]
    except ConfigError as exc:
        return [SweepEntry(config.name, "failed", str(exc))]
    except Exception as exc:
        return [_crashed(config.name, exc)]


def _train_groups(claimed: list[tuple[RunConfig, Path]], manifest: CorpusManifest, options: _Options
                  ) -> list[SweepEntry]:
    """Train claimed runs K at a time with the multi-proxy trainer, grouped by shared settings and step."""
    from regmix.multi_proxy import checkpoint_step, group_key, train_group

    buckets: dict[tuple, list[tuple[RunConfig, Path]]] = {}
    for config, run_dir in claimed:
        buckets.setdefault((group_key(config), checkpoint_step(run_dir)), []).append((config, run_dir))
    entries = []
    for members in buckets.values():
        if len(members) == 1:
            entries += _train_one(*members[0], manifest, options)
            continue
        configs, run_dirs = [c for c, _ in members], [d for _, d in members]
        try:
            results = train_group(configs, manifest, run_dirs, device=options.device,
                                  wandb_mode=options.wandb_mode, wandb_project=options.wandb_project,
                                  wandb_group=options.output.name, progress=options.progress,
                                  progress_position=options.position)
            entries += [_entry(r) for r in results]
        except Exception as exc:
            entries += [_crashed(c.name, exc) for c in configs]
    return entries


def _run_chunk(paths: Sequence[Path], manifest: CorpusManifest, options: _Options) -> list[SweepEntry]:
    """Claim the chunk's configs and train them: together when group_size > 1, else one by one."""
    claims = [_claim(Path(p), manifest, options) for p in paths]
    entries = [c for c in claims if isinstance(c, SweepEntry)]
    held = [c for c in claims if isinstance(c, _Claim)]
    claimed = [(c.config, c.run_dir) for c in held]
    try:
        if options.group_size > 1:
            entries += _train_groups(claimed, manifest, options)
        else:
            for config, run_dir in claimed:
                entries += _train_one(config, run_dir, manifest, options)
    finally:
        for claim in held:
            release_lock(claim.run_dir / LOCK_NAME, claim.lock_fd)
    return entries


_worker_options: _Options | None = None


def _init_worker(slots: Any, options: _Options, threads: int, gpus: int) -> None:
    """Give a pool worker its slot: its torch threads on CPU, or its GPU (round robin), and its bar row."""
    global _worker_options
    slot = slots.get()
    torch.set_num_threads(threads)
    _worker_options = dataclasses.replace(options, position=slot + 1,
                                          device=f"cuda:{slot % gpus}" if gpus else options.device)


def _pool_task(paths: Sequence[Path], manifest: CorpusManifest) -> list[SweepEntry]:
    assert _worker_options is not None
    return _run_chunk(paths, manifest, _worker_options)


def train_sweep(config_paths: Sequence[Path], manifest: CorpusManifest, output: str | os.PathLike, *,
                workers: int = 0, device: str | None = None, group_size: int = 0, wandb_mode: str = "auto",
                wandb_project: str = "regmix", progress: bool = True,
                report: Callable[[str], None] = print) -> list[SweepEntry]:
    """Train every config not yet done into `output/<name>/`; print and return what happened to each.

    `workers` 0 means one per GPU on CUDA and one per core on CPU (tiny models gain little from more
    threads). `group_size` 0 means 16 proxies trained at once per GPU on CUDA (regmix.multi_proxy)
    and one at a time on CPU. Workers in other processes (or machines sharing the folder) never train
    the same run: lock files.
    """
    cuda = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cuda")
    gpus = torch.cuda.device_count() if cuda and ":" not in (device or "") else 0  # an explicit cuda:N is kept
    group_size = group_size or (CUDA_GROUP_SIZE if cuda else 1)
    finished = {Path(p): _done(Path(p), Path(output)) for p in config_paths}
    todo = [p for p, entry in finished.items() if entry is None]
    chunks = [todo[i:i + group_size] for i in range(0, len(todo), group_size)]
    workers = min(workers or (torch.cuda.device_count() if cuda else os.cpu_count() or 1), max(1, len(chunks)))
    options = _Options(Path(output), device, wandb_mode, wandb_project, progress, group_size)
    started = time.perf_counter()
    entries: list[SweepEntry] = []
    bar = tqdm(total=len(config_paths), desc=f"sweep {Path(output).name}", unit="run", disable=not progress,
               position=0, dynamic_ncols=True)

    def record(chunk_entries: list[SweepEntry]) -> None:
        for entry in chunk_entries:
            entries.append(entry)
            bar.update()
            if entry.status == "failed" and len(config_paths) > 1:  # live news; the summary has it all
                bar.write(f"FAILED {entry.name}: {entry.detail.splitlines()[0]}")

    record([entry for entry in finished.values() if entry is not None])
    if workers == 1:
        for chunk in chunks:
            record(_run_chunk(chunk, manifest, options))
    else:
        context = mp.get_context("spawn")
        slots = context.Queue()
        for slot in range(workers):
            slots.put(slot)
        threads = 1 if cuda else max(1, (os.cpu_count() or 1) // workers)
        with context.Pool(workers, initializer=_init_worker, initargs=(slots, options, threads, gpus)) as pool:
            for chunk_entries in pool.imap_unordered(functools.partial(_pool_task, manifest=manifest), chunks):
                record(chunk_entries)
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m regmix.train_proxy", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=__doc__,
        epilog="example:\n  python -m regmix.synthesize --prior the_pile --output mixture_config/demo "
               "--num-configs 16\n  python -m regmix.train_proxy --config mixture_config/demo "
               "--corpus data/prepared --workers 2")
    p.add_argument("--config", type=Path, required=True,
                   help="a mixture config (.yaml) or a folder of them (a sweep)")
    p.add_argument("--corpus", type=Path, required=True,
                   help="prepared corpus folder (with manifest.json), made by `python -m regmix.prepare`")
    p.add_argument("--output", type=Path, default=None,
                   help="folder for the run folders (default: runs/<name of the config folder>)")
    p.add_argument("--workers", type=int, default=0,
                   help="parallel workers; 0 = one per GPU on CUDA, one per core on CPU")
    p.add_argument("--group-size", type=int, default=0,
                   help="proxies trained at once by one worker (regmix.multi_proxy); 0 = 16 on CUDA, 1 on CPU")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    p.add_argument("--wandb", choices=WANDB_MODES, default="auto",
                   help="wandb logging: auto = online with a wandb login, otherwise offline files")
    p.add_argument("--wandb-project", default="regmix", help="wandb project name")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    folder = args.config if args.config.is_dir() else args.config.parent
    output = args.output or Path("runs") / folder.resolve().name
    try:
        if not args.config.exists():
            raise ConfigError(args.config, "no such config file or folder")
        manifest = load_manifest(args.corpus)
        paths = run_config_paths(args.config) if args.config.is_dir() else [args.config]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not paths:
        print(f"error: {args.config}: no .yaml configs in this folder", file=sys.stderr)
        return 2
    entries = train_sweep(paths, manifest, output, workers=args.workers, device=args.device,
                          group_size=args.group_size,
                          wandb_mode=args.wandb, wandb_project=args.wandb_project, progress=not args.no_progress)
    return 1 if any(e.status == "failed" for e in entries) else 0


if __name__ == "__main__":
    sys.exit(main())
