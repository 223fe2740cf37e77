"""The process's reader threads: kept across runs, shared by every read of a scene's pixels.

A thread's first GDAL open costs about 10 ms more than its later ones (its GDAL and PROJ state), and a run's
first strip waits for every reader's first open; so the threads live as long as the process, and each run (and
the input check's sample before it, :func:`geoseg.sanity.sample_means`) takes its share
(:class:`ReaderThreads`): what it submits, it can cancel and wait for, leaving the threads to the next run.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait


class ReaderThreads:
    """One run's share of the process's reader threads (:func:`reader_threads`): what it submits, it can cancel
    and wait for, leaving the threads to the next run."""

    def __init__(self, pool: ThreadPoolExecutor, own: bool = False):
        self.pool, self.own = pool, own  # own: threads of this run alone, ended by finish()
        self.submitted: list[Future] = []

    def submit(self, fn: Callable[..., object], *args: object) -> Future:
        future = self.pool.submit(fn, *args)
        self.submitted.append(future)
        return future

    def finish(self) -> None:
        """Cancel this run's reads that have not started and wait for those that have (they fill its buffers)."""
        for future in self.submitted:
            future.cancel()
        wait(self.submitted)
        self.submitted.clear()
        if self.own:
            self.pool.shutdown(wait=True)


_READER_POOLS: dict[int, ThreadPoolExecutor] = {}
_READER_POOLS_LOCK = threading.Lock()


def _forget_readers_after_fork() -> None:
    """A forked child has the pools but not their threads: it starts its own on its first run."""
    global _READER_POOLS_LOCK
    _READER_POOLS.clear()
    _READER_POOLS_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_readers_after_fork)


def reader_threads(workers: int, keep: bool = True) -> ReaderThreads:
    """``workers`` reader threads kept for the process's later runs (``keep``; else threads of one run's own). A
    thread's first GDAL open costs about 10 ms more than its later ones (its GDAL and PROJ state), and a run's
    first strip waits for every reader's first open. On the H100 host the first strip came about 0.2 s into every
    run however small it was, and sooner with fewer threads; on the development machine kept threads brought it
    0.1 s sooner (benchmarks/RESULTS.md section 14). Runs in one process share the threads."""
    if not keep:
        return ReaderThreads(ThreadPoolExecutor(workers, thread_name_prefix="geoseg-read"), own=True)
    with _READER_POOLS_LOCK:
        pool = _READER_POOLS.get(workers)
        if pool is None:
            pool = _READER_POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="geoseg-read")
    return ReaderThreads(pool)


def default_workers() -> int:
    """Reader threads when none are asked for: one per CPU core but one, which the device thread needs."""
    return max(1, (os.cpu_count() or 1) - 1)
