"""The cluster a run or batch uses: an existing dask scheduler, or a local one made for it.

``--scheduler ADDRESS`` connects to a running cluster (SLURM through dask-jobqueue, Kubernetes through
dask-kubernetes or the dask Helm chart; see workflows/README.md). ``--cluster local`` starts one here:
with ``--gpus N``, one worker process per GPU, each seeing only its own
(``CUDA_VISIBLE_DEVICES``), so ``--device auto`` / ``cuda`` on a worker is that worker's GPU; with
``--workers N``, CPU-only workers (tests, machines without a GPU). Each local worker offers one
``scene`` resource, so it runs one scene or row band at a time with all its cores as reader threads;
workers of an external cluster get the same when they are started with ``--resources scene=1``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from geoseg.errors import ConfigError

#: The resource a local worker offers once: one scene (or row band) at a time per worker.
SCENE_RESOURCE = "scene"
#: How long to wait for an external scheduler before giving up (seconds).
CONNECT_TIMEOUT_S = 30


@dataclass(frozen=True)
class ClusterSpec:
    """Where the work goes: ``scheduler`` (an address), or a local cluster of ``gpus`` GPU workers or
    ``workers`` CPU workers with ``threads`` threads each (default: the cores shared out)."""

    scheduler: str | None = None
    gpus: int | None = None
    workers: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.scheduler is not None and (self.gpus or self.workers):
            raise ConfigError("--scheduler connects to an existing cluster; --gpus/--workers make a local one: "
                              "give one or the other")
        if self.scheduler is None and not (self.gpus or self.workers):
            raise ConfigError("--cluster local needs --gpus N (one worker per GPU) or --workers N (CPU workers)")
        if self.gpus and self.workers:
            raise ConfigError("give --gpus N (one worker per GPU) or --workers N (CPU workers), not both")
        for name in ("gpus", "workers", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} {value} must be at least 1")


def local_workers(spec: ClusterSpec) -> dict[str, dict]:
    """The worker specs of a local cluster (see module docstring)."""
    from distributed import Nanny

    count = spec.gpus or spec.workers or 1
    threads = spec.threads or max(1, (os.cpu_count() or 1) // count)
    workers = {}
    for i in range(count):
        env = {"CUDA_VISIBLE_DEVICES": str(i)} if spec.gpus else {}
        workers[f"geoseg-{i}"] = {"cls": Nanny, "options": {
            "nthreads": threads, "env": env, "resources": {SCENE_RESOURCE: 1}, "name": f"geoseg-{i}",
            "memory_limit": 0, "silence_logs": 40}}
    return workers


@contextmanager
def connect(spec: ClusterSpec) -> Iterator[object]:
    """A ``distributed.Client`` for ``spec``; a local cluster is shut down on leaving."""
    from distributed import Client, Scheduler, SpecCluster

    if spec.scheduler is not None:
        try:
            client = Client(spec.scheduler, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"no dask scheduler answers at {spec.scheduler} ({exc}); start one (dask scheduler, "
                              f"dask-jobqueue, the dask Helm chart) or use --cluster local") from None
        try:
            yield client
        finally:
            client.close()
        return
    if spec.gpus:
        import torch

        found = torch.cuda.device_count()
        if found < spec.gpus:
            from geoseg.errors import DeviceError

            raise DeviceError(f"--gpus {spec.gpus} asked for, but this machine has {found} CUDA GPU(s); use --gpus "
                              f"{found}" if found else f"--gpus {spec.gpus} asked for, but no CUDA GPU is visible; "
                              f"use --cpu-workers N")
    import dask

    threads = spec.threads or max(1, (os.cpu_count() or 1) // (spec.gpus or spec.workers or 1))
    with dask.config.set(worker_environment(threads)):
        cluster = SpecCluster(workers=local_workers(spec),
                              scheduler={"cls": Scheduler, "options": {"dashboard_address": ":0"}},
                              silence_logs=40)
        try:
            with Client(cluster) as client:
                yield client
        finally:
            cluster.close()


def worker_environment(threads: int) -> dict[str, object]:
    """dask config for the environment a local worker process starts with (set before it spawns):

    * ``MALLOC_TRIM_THRESHOLD_`` unset: dask's nanny sets it to 64 KiB, which also turns off glibc's
      adaptive mmap threshold, so every large numpy buffer (a decoded chunk, a label strip, an overview
      level) is mapped and unmapped page by page (a scene 8 % slower in such a CPU worker here);
      :func:`relax_malloc` undoes it in workers of clusters geoseg did not start;
    * ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``: the CPU backends' threads, the worker's share of the cores
      (dask's default, 1, would leave a CPU worker's network on one core). Workers of other clusters get
      them from their own environment (``OMP_NUM_THREADS=16`` in the pod or job script wins over dask's)."""
    key = "distributed.nanny.pre-spawn-environ"
    return {f"{key}.MALLOC_TRIM_THRESHOLD_": None, f"{key}.OMP_NUM_THREADS": threads,
            f"{key}.MKL_NUM_THREADS": threads}


def scene_resources(client: object) -> dict[str, int] | None:
    """``{"scene": 1}`` when every worker offers the scene resource (then each runs one task at a time),
    else None: a task that asks for a resource no worker has would wait for ever."""
    workers = client.scheduler_info()["workers"].values()  # type: ignore[attr-defined]
    if workers and all(SCENE_RESOURCE in (w.get("resources") or {}) for w in workers):
        return {SCENE_RESOURCE: 1}
    return None


#: glibc's mallopt parameters, and the values glibc's adaptive thresholds would reach on their own.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 2**20
_relaxed = False


def relax_malloc() -> None:
    """In a dask worker started with dask's ``MALLOC_TRIM_THRESHOLD_`` (64 KiB), give glibc back the
    thresholds it would have grown to itself: buffers under 32 MiB reused from the heap instead of mapped
    and unmapped on every use. Once per process; nothing where the variable is not set or not glibc."""
    global _relaxed
    if _relaxed or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _relaxed = True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc: its allocator has no such knobs
        pass
