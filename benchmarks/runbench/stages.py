"""Where a run's device time goes, by engine step (``bench_run.py --parts peers --device-stages``, issue 35).

The GPU timeline (``--profile-gpu``) says how busy the GPU was and which kernels ran, but a kernel's name does not
say which step of geoseg launched it (the network and the blender both run elementwise kernels). Here the engine's
device-side steps are wrapped, for one run, in pairs of CUDA events on the current stream: each step's seconds are
the GPU time between the events around its calls. While the GPU is behind the device thread (the usual case at
f = 1) that is the time its kernels took; where the GPU had caught up, it also holds the gap until the thread
launched the rest. Nested steps are reported as their own time (their children's subtracted). On a CPU the same
wrappers read the host clock, so the code path is the one the tests run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

from geoseg.engine import blender as blender_module
from geoseg.engine.blender import Blender, HostStrip
from geoseg.engine.input_rows import InputRows
from geoseg.engine.predictor import Predictor

#: (owner, attribute, step): what is wrapped. ``label_counts`` is looked up as a module function by the blender.
STEPS: tuple[tuple[Any, str, str], ...] = (
    (InputRows, "take_strip", "take in the strip"),
    (InputRows, "develop", "develop rows"),
    (InputRows, "patch_region", "cut block regions"),
    (InputRows, "validity", "validity"),
    (Blender, "begin_row", "grow the rolling rows"),
    (Blender, "_predict_pending", "batch: stack, weights, votes"),
    (Predictor, "__call__", "network (padding, graph replay)"),
    (Blender, "_blend_batch", "blend: batched adds"),
    (Blender, "_blend_each", "blend: per patch"),
    (Blender, "_labels", "labels"),
    (blender_module, "label_counts", "label counts"),
    (Blender, "_disagree", "seam votes"),
    (HostStrip, "of", "copy strips to the host"),
)


class StageClock:
    """Seconds per step, own time (see module docstring)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self._calls: list[tuple[str, Any, Any, list[tuple[Any, Any]]]] = []  # step, start, end, children's marks
        self._stack: list[list[tuple[Any, Any]]] = []

    def mark(self) -> Any:
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def wrap(self, step: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = self.mark()
            self._stack.append([])
            try:
                return fn(*args, **kwargs)
            finally:
                children = self._stack.pop()
                end = self.mark()
                if self._stack:
                    self._stack[-1].append((start, end))
                self._calls.append((step, start, end, children))

        return timed

    def _seconds(self, start: Any, end: Any) -> float:
        return start.elapsed_time(end) / 1000 if self.cuda else end - start

    def seconds(self) -> dict[str, float]:
        """Own seconds per step, largest first (waits for the device once)."""
        if self.cuda:
            torch.cuda.synchronize()
        own: dict[str, float] = {}
        for step, start, end, children in self._calls:
            spent = self._seconds(start, end) - sum(self._seconds(a, b) for a, b in children)
            own[step] = own.get(step, 0.0) + spent
        return {k: round(v, 4) for k, v in sorted(own.items(), key=lambda kv: -kv[1])}


@contextmanager
def stage_clock(cuda: bool) -> Iterator[StageClock]:
    """Wrap :data:`STEPS` for the block's runs; restore them on leaving."""
    clock = StageClock(cuda)
    saved = [(owner, name, owner.__dict__[name]) for owner, name, _ in STEPS]
    try:
        for owner, name, step in STEPS:
            original = owner.__dict__[name]
            if isinstance(original, classmethod):
                setattr(owner, name, classmethod(clock.wrap(step, original.__func__)))
            else:
                setattr(owner, name, clock.wrap(step, original))
        yield clock
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)
