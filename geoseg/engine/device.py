"""Devices: which one a run uses, in which precision, and the session that owns what outlives a run.

A :class:`DeviceSession` holds the state that must outlast one scene and be shared by the scenes
in flight in one process: networks placed on their device, the CUDA graphs captured for them, the
lock that lets a graph be captured only while its run is alone, and whether cuDNN tunes its
algorithms. ``geoseg batch`` makes one session for its scenes; a plain ``segment_scene`` uses the
process's default session (:meth:`DeviceSession.default`), so a notebook's second run replays the
first one's graphs. Several GPUs, dask workers or a trainer can each hold a session of their own.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import torch

from geoseg.config import PRECISIONS
from geoseg.errors import ConfigError, DeviceError

#: Captured CUDA graphs by batch shape: (graph, its input buffer, its output buffer).
Graphs = dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]]


def resolve_device(spec: str) -> torch.device:
    """``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    spec = spec.strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec!r} asked for, but no CUDA GPU is visible to torch; "
                              f"use device 'cpu' or 'auto' (--device cpu on the command line)")
        index = int(spec.split(":")[1]) if ":" in spec and spec.split(":")[1].isdigit() else 0
        if ":" in spec and not spec.split(":")[1].isdigit():
            raise ConfigError(f"device {spec!r} is not valid; use auto, cpu, cuda or cuda:N")
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec!r} does not exist; this machine has "
                              f"{torch.cuda.device_count()} GPU(s): cuda:0..cuda:{torch.cuda.device_count() - 1}")
        return torch.device("cuda", index)
    raise ConfigError(f"device {spec!r} is not valid; use auto, cpu, cuda or cuda:N")


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is bf16 on GPUs that support it (fp16 otherwise), bf16 on CPUs with bf16 instructions
    (:func:`cpu_has_bf16`), and fp32 on other CPUs."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not valid; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_bf16() else "fp32"


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), where oneDNN's bf16 kernels beat
    fp32 (benchmarks/RESULTS.md). Elsewhere bf16 is emulated, and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own (private) probes
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


class DeviceSession:
    """What outlives a run on the devices of one process (see module docstring). Thread-safe."""

    _default: ClassVar[DeviceSession | None] = None
    _default_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        # Guards _runs and CUDA graph captures: a graph is captured only while its run is the only one
        # in flight, and no run starts its GPU work during a capture: GPU work of other threads during a
        # capture invalidates it, or worse.
        self._capture = threading.Lock()
        self._runs = 0
        # Held while a network is moved: scenes in flight share one network.
        self._place = threading.Lock()
        # Graphs kept with their network between runs, with what they were captured for (device,
        # precision, compile, the parameters' addresses: a graph replays the memory it was captured
        # on). One set per network, held by one run at a time: a replay writes the graph's own buffers.
        self._kept: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, Graphs]] = weakref.WeakKeyDictionary()
        # Batch sizes a model has run at, by model and settings (:meth:`warm_batches`).
        self._warm: dict[tuple, set[int]] = {}

    @classmethod
    def default(cls) -> DeviceSession:
        """The process's session, for runs that are given none."""
        with cls._default_lock:
            if cls._default is None:
                cls._default = cls()
            return cls._default

    @contextmanager
    def run_in_flight(self) -> Iterator[None]:
        """Marks a run's GPU work (``segment_scene`` holds it); waits for a capture in progress to end."""
        with self._capture:
            self._runs += 1
        try:
            yield
        finally:
            with self._capture:
                self._runs -= 1

    @contextmanager
    def capturing(self) -> Iterator[bool]:
        """Held while a graph may be captured; yields whether the caller's run is alone in flight
        (only then may it capture)."""
        with self._capture:
            yield self._runs <= 1

    def place(self, network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """``network`` in eval mode on ``device`` in channels_last, cuDNN's and oneDNN's fast convolution
        layouts. Moved once: moving rewrites every parameter, and a network shared by scenes in flight
        must not be rewritten while another scene runs it."""
        with self._place:
            params = list(network.parameters()) + list(network.buffers())
            if not all(p.device == device and (p.dim() != 4 or p.is_contiguous(memory_format=torch.channels_last))
                       for p in params):
                network.eval().to(device).to(memory_format=torch.channels_last)
            elif network.training:
                network.eval()
        return network

    def take_graphs(self, network: torch.nn.Module, key: tuple) -> Graphs:
        """The graphs an earlier run kept for ``network``, if they were captured for ``key``; they are
        the caller's until it hands them back with :meth:`keep_graphs`."""
        with self._capture:
            kept = self._kept.pop(network, None)
        return kept[1] if kept is not None and kept[0] == key else {}

    def keep_graphs(self, network: torch.nn.Module, key: tuple, graphs: Graphs) -> None:
        """Keep ``graphs`` (captured for ``key``) with ``network`` for the next run."""
        if graphs:
            with self._capture:
                self._kept[network] = (key, graphs)

    def warm_batches(self, key: tuple) -> frozenset[int]:
        """The batch sizes a network named by ``key`` (its weights, patch, precision, device) has already run at
        in this session: shapes whose cuDNN plans and kernels are ready (a new shape costs seconds on a GPU)."""
        with self._capture:
            return frozenset(self._warm.get(key, ()))

    def ran_batches(self, key: tuple, batch_size: int) -> None:
        """Remember that the network named by ``key`` ran batches of ``batch_size`` (:meth:`warm_batches`)."""
        with self._capture:
            self._warm.setdefault(key, set()).add(batch_size)

    @staticmethod
    def tune_for_many_scenes() -> None:
        """Let cuDNN time its algorithms once per batch shape: worth it when many patches follow;
        not in a process made reproducible (:meth:`make_reproducible`).

        (cuDNN's setting is process-wide; this and :meth:`make_reproducible` are where geoseg changes it.)"""
        if not DeviceSession._reproducible:
            torch.backends.cudnn.benchmark = True

    _reproducible: ClassVar[bool] = False

    @staticmethod
    def make_reproducible() -> None:
        """From now on in this process, cuDNN picks algorithms by its heuristics, which depend only on the
        shapes and the GPU: the same bits in every process (``--reproducible``). Timed choices can differ
        from process to process, and so can near-tie labels."""
        DeviceSession._reproducible = True
        torch.backends.cudnn.benchmark = False


#: The message of torch's sync debug mode (:func:`torch.cuda.set_sync_debug_mode`) for a call that waits.
_WAIT_MESSAGE = "synchronizing CUDA operation"
#: The geoseg package's folder: the frames :func:`device_waits` names a wait by.
_PACKAGE = str(Path(__file__).resolve().parents[1])


@contextmanager
def device_waits(on: bool) -> Iterator[Counter[str]]:
    """Diagnostics: the calls made while open that made the host wait for the GPU (a read-back, a copy from pageable
    memory, a synchronize), counted by thread and by their three innermost geoseg frames
    (``geoseg-device: blender.py:250 _blend_batch <- ...``), from torch's sync debug mode. In the pipeline such a wait
    drains the queue of network batches: the GPU idles until the device thread, back from the wait and from the
    reader threads' hold on the GIL, queues more. ``on`` False (or no GPU): counts nothing.

    The mode is the process's: waits on other threads are counted too; it is put back as it was. Other warnings are
    shown as usual (every time, while it is open)."""
    import traceback
    import warnings

    waits: Counter[str] = Counter()
    if not on or not torch.cuda.is_available():
        yield waits
        return
    shown = warnings.showwarning

    def record(message, category, filename, lineno, file=None, line=None) -> None:
        if _WAIT_MESSAGE not in str(message):
            shown(message, category, filename, lineno, file, line)
            return
        ours = [f for f in traceback.extract_stack()[:-1] if f.filename.startswith(_PACKAGE)][-3:]
        where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(ours))
        waits[f"{threading.current_thread().name}: {where or f'{Path(filename).name}:{lineno}'}"] += 1

    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            yield waits
        finally:
            torch.cuda.set_sync_debug_mode(previous)
