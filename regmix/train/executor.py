"""Where many runs train: `local` (processes on this machine, the default) or `ray` (tasks on a Ray cluster).

With Ray the driver is the scheduler: it hands each group of proxies to exactly one task (so no run locks
are taken: flock over a network file system is often advisory or off) and collects what each task returns
for the one progress bar and the summary. Tasks write their runs atomically to shared storage (the
corpus and the run folders must be at the same path on every node), declare their GPU and CPU needs,
and are retried up to `retries` times when their worker or node dies; a retried task resumes each run
from its last checkpoint, on whichever node Ray places it. Ray is an optional extra
(`pip install 'regmix[ray]'`); the local executor never imports it.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

from regmix.cli import integer_at_least, number_above

KINDS = ("local", "ray")


@dataclass(frozen=True)
class Executor:
    """`address`: ray's `auto` (a running cluster), `ray://host:10001` (Ray Client), or None: a local Ray
    started on the spot. `gpus`/`cpus`: what one task asks for (`gpus` None: 1 when the device is CUDA or,
    with no device given, when the cluster has GPUs; a fraction packs several tasks on one GPU)."""

    kind: str = "local"
    address: str | None = None
    gpus: float | None = None
    cpus: float = 1.0
    retries: int = 3

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown executor {self.kind!r}; choose local, ray or ray:ADDRESS")
        if self.gpus is not None and self.gpus < 0 or self.cpus <= 0 or self.retries < 0:
            raise ValueError(f"executor needs gpus >= 0, cpus > 0 and retries >= 0, got gpus={self.gpus}, "
                             f"cpus={self.cpus}, retries={self.retries}")

    @classmethod
    def parse(cls, text: str, **resources: Any) -> Executor:
        """`local`, `ray` (a local Ray unless RAY_ADDRESS is set) or `ray:ADDRESS` (`ray:auto`, `ray:ray://h:10001`)."""
        kind, _, address = text.partition(":")
        return cls(kind, address or None, **resources)

    def __str__(self) -> str:
        return self.kind + (f":{self.address}" if self.address else "")

    def task_gpus(self, device: str | None) -> float:
        """GPUs per task for a device setting (connects to Ray to see the cluster when neither says)."""
        import torch  # here, not at the top: commands that only parse their flags start without it

        if self.gpus is not None:
            if self.gpus > 0 and device is not None and torch.device(device).type == "cpu":
                raise ValueError(f"executor asks for {self.gpus} GPUs per task but the device is {device}")
            return self.gpus
        if device is not None:
            return float(torch.device(device).type == "cuda")
        return float(connect(self).cluster_resources().get("GPU", 0) > 0)


LOCAL = Executor()


def parallel_tasks(executor: Executor, gpus: float) -> int:
    """Tasks the Ray cluster runs at once: its GPUs (or CPUs) over what one task asks for."""
    resources = connect(executor).cluster_resources()
    return max(1, int(resources.get("GPU", 0) / gpus if gpus else resources.get("CPU", 1) / executor.cpus))


def connect(executor: Executor) -> Any:
    """The `ray` module, initialised once per process (a driver keeps its Ray for every later sweep)."""
    try:
        import ray
    except ImportError:
        raise ValueError("the ray executor needs Ray: pip install 'regmix[ray]'") from None
    if not ray.is_initialized():  # workers import regmix from their own install (every node needs it)
        ray.init(address=executor.address, include_dashboard=False, configure_logging=False)
    return ray


def _in_task(fn: Callable[[Any], Any], threads: int, item: Any) -> Any:
    """Run on a Ray worker: torch gets the task's CPUs as threads (workers are reused across tasks)."""
    import torch

    torch.set_num_threads(threads)
    return fn(item)


def ray_map(fn: Callable[[Any], Any], items: Sequence[Any], executor: Executor, gpus: float, name: str
            ) -> Iterator[tuple[int, Any]]:
    """Run fn(item) as one Ray task per item; yield (index, result) as tasks finish, the result being the
    exception when a task failed for good (its worker died more than `retries` times, or fn raised).
    `name`: the tasks' name in Ray's dashboard and their workers' process title (ray::<name>)."""
    ray = connect(executor)
    task = ray.remote(_in_task).options(num_cpus=executor.cpus, num_gpus=gpus, max_retries=executor.retries,
                                        name=name)
    function = ray.put(fn)  # shipped once, not once per task
    pending = {task.remote(function, max(1, int(executor.cpus)), item): i for i, item in enumerate(items)}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        index = pending.pop(done[0])
        try:
            yield index, ray.get(done[0])
        except Exception as exc:  # RayTaskError wraps fn's own; WorkerCrashedError, NodeDiedError, ...
            yield index, exc


def task_device(gpus: float) -> str:
    """The torch device inside a task: Ray shows it only the GPUs it asked for."""
    return "cuda" if gpus > 0 else "cpu"


def ray_call(fn: Callable[[str], Any], executor: Executor, device: str | None, name: str) -> Any:
    """fn(the task's device) as one Ray task, on a node like those the runs train on; its result, or its error
    raised here."""
    gpus = executor.task_gpus(device)
    [(_, result)] = ray_map(fn, [task_device(gpus)], executor, gpus, name)
    if isinstance(result, BaseException):
        raise result
    return result


def add_executor_arguments(parser: argparse.ArgumentParser) -> None:
    """--executor and the Ray task resources, the same on every command that trains many runs."""
    group = parser.add_argument_group("executor (where the runs train)")
    group.add_argument("--executor", metavar="{local,ray,ray:ADDRESS}",
                       help="local: processes on this machine (the default); ray: one Ray task per group of "
                            "proxies, on a local Ray started on the spot, ray:auto (a running cluster, e.g. "
                            "in a SLURM job) or ray:ray://HEAD:10001; needs pip install 'regmix[ray]'")
    group.add_argument("--ray-gpus", type=number_above(0, inclusive=True), metavar="N",
                       help="GPUs per Ray task (default: 1 on CUDA, 0 on CPU; 0.5 packs two tasks per GPU)")
    group.add_argument("--ray-cpus", type=number_above(0), metavar="N", help="CPUs per Ray task (default 1)")
    group.add_argument("--ray-retries", type=integer_at_least(0), metavar="N",
                       help="times a Ray task is retried when its worker or node dies (default 3)")


def executor_from_args(args: argparse.Namespace, base: Executor = LOCAL) -> Executor:
    """`base` (e.g. an experiment's sweep.executor) with the flags given on the command line."""
    if args.executor is not None:
        base = dataclasses.replace(Executor.parse(args.executor), gpus=base.gpus, cpus=base.cpus, retries=base.retries)
    given = {k: v for k, v in (("gpus", args.ray_gpus), ("cpus", args.ray_cpus), ("retries", args.ray_retries))
             if v is not None}
    return dataclasses.replace(base, **given)
