"""Running a network on batches of patches: device, precision, batching, softmax.

One :class:`Predictor` per run holds the network on its device; the engine's one device thread
calls it with batches of patches that are already there. Speed options:

* ``batch_size=None`` picks the batch from the GPU's free memory (:func:`auto_batch_size`);
* out of GPU memory, a batch is retried in halves, and the halved size is kept (:attr:`Predictor.notes`);
* ``tune`` lets cuDNN time its algorithms for the batch shape once per process (seconds for an
  EfficientNet-B4; :data:`TUNE_MIN_PATCHES` in :mod:`geoseg.run` decides when that pays back);
* ``compile`` wraps the network in ``torch.compile``; ``cuda_graphs`` (on by default on a GPU)
  records each batch shape's forward pass once as a CUDA graph and replays it: one launch instead
  of hundreds, so the model keeps its pace while reader threads take the CPU. A network that cannot
  be captured runs eagerly, with a note. Captured graphs stay with their network when a run ends
  (:meth:`Predictor.close`), so the next scene of a ``geoseg batch`` replays them without capturing.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext

import torch

from geoseg.errors import ConfigError, DeviceError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: The largest batch :func:`auto_batch_size` picks: beyond it a U-Net gains little and the padded
#: last batch of a small scene costs more.
MAX_AUTO_BATCH = 16
#: Batch size on the CPU when none is given.
CPU_BATCH = 4
#: Share of the GPU's free memory the automatic batch may take (the rest: input and blend bands).
AUTO_BATCH_SHARE = 0.4


#: Guards :data:`_runs` and CUDA graph captures: a graph is captured only while its run is the only
#: one in flight in the process, and no run starts its GPU work during a capture. (On an H200, runs
#: in flight in other threads during a capture crashed the process or failed runs.)
_CAPTURE = threading.Lock()
_runs = 0


@contextmanager
def run_in_flight() -> Iterator[None]:
    """Marks a run's GPU work (``segment_scene`` holds it); waits for a capture in progress to end."""
    global _runs
    with _CAPTURE:
        _runs += 1
    try:
        yield
    finally:
        with _CAPTURE:
            _runs -= 1


#: Captured CUDA graphs by batch shape: (graph, its input buffer, its output buffer).
Graphs = dict[tuple[int, ...], tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]]
#: Graphs kept with their network between runs, with what they were captured for (device, precision,
#: compile, the parameters' addresses: a graph replays the memory it was captured on). One set per
#: network, held by one run at a time: a replay writes the graph's own buffers. Guarded by _CAPTURE.
_KEPT: weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, Graphs]] = weakref.WeakKeyDictionary()


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
                              f"use --device cpu (or auto)")
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
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX), where oneDNN's bf16 kernels run
    the built-in EfficientNet-B4 2.9x faster than fp32 (benchmarks/RESULTS.md). Elsewhere bf16 is
    emulated, and slower than fp32."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own (private) probes
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


class Predictor:
    """Softmax probabilities of a network for batches of normalised NCHW patches already on its device."""

    def __init__(self, network: torch.nn.Module, device: torch.device, precision: str, batch_size: int | None,
                 *, channels: int, tile: int, compile: bool = False, cuda_graphs: bool | None = None,
                 tune: bool = True):
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch size {batch_size} must be at least 1")
        if cuda_graphs is None:  # on by default where they exist: 1.4x in the model stage at 32768² (RESULTS.md)
            cuda_graphs = device.type == "cuda"
        if cuda_graphs and device.type != "cuda":
            raise ConfigError(f"CUDA graphs need a CUDA device, not {device}; drop --cuda-graphs or use --device cuda")
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.network = place(network, device)
        if device.type == "cuda" and tune:
            tune_for_many_scenes()  # the engine sends one batch shape: tuned once per process
        self._net: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.network, dynamic=False) if compile else self.network)  # type: ignore[assignment]
        self.cuda_graphs = cuda_graphs
        self._graphs: Graphs = {}
        self._used: set[tuple[int, ...]] = set()  # batch shapes replayed by this run
        self._captured_for = (device, self.precision, compile, tuple(p.data_ptr() for p in self.network.parameters()))
        if cuda_graphs:  # the graphs an earlier run of this network captured, if they fit
            with _CAPTURE:
                kept = _KEPT.pop(self.network, None)
                if kept is not None and kept[0] == self._captured_for:
                    self._graphs = kept[1]
        #: What the predictor had to change on the way (out-of-memory back-offs), for the run summary.
        self.notes: list[str] = []
        self.patches = 0  # patches predicted (padding included)
        self._spans: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []  # CUDA: each call's device time
        self._host_seconds = 0.0  # CPU: each call's wall time
        self.batch_size = batch_size or auto_batch_size(lambda x: self._forward(x, self.network), device, channels,
                                                         tile)  # probed eagerly: no compile for the probe's shape

    def _autocast(self) -> torch.autocast | nullcontext:
        if self.precision in _AUTOCAST:
            return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])
        return nullcontext()

    def _forward(self, batch: torch.Tensor, net: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        with torch.inference_mode():
            batch = batch.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                logits = (net or self._net)(batch)
            return torch.softmax(logits.float(), dim=1)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, T)`` float32 in, ``(N, K, T, T)`` float32 probabilities out, on the device.

        Out of GPU memory, the batch is split in halves (and the batch size halved for what
        follows) until it fits; a single patch that does not fit raises :class:`DeviceError`.
        """
        try:
            if self.device.type != "cuda":
                started = time.perf_counter()
                probs = self._forward(batch)
                self._host_seconds += time.perf_counter() - started
            else:
                span = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                span[0].record()
                probs = self._graphed(batch) if self.cuda_graphs else self._forward(batch)
                span[1].record()
                self._spans.append(span)
            self.patches += len(batch)
            return probs
        except torch.OutOfMemoryError:
            pass  # retried below, outside the handler: its traceback still holds the failed pass's tensors
        self._graphs.clear()
        torch.cuda.empty_cache()
        if len(batch) == 1:
            raise DeviceError(f"{self.device} is out of memory even for one patch; use a smaller --tile-size "
                              f"or --block-size, or free the GPU")
        if len(batch) <= self.batch_size:
            self.batch_size = len(batch) // 2
            self.notes.append(f"{self.device} ran out of memory with batches of {len(batch)} patches; "
                              f"went on with {self.batch_size}")
        parts, start = [], 0
        while start < len(batch):  # at the batch size as it is now: a nested back-off lowers it
            parts.append(self(batch[start : start + self.batch_size]))
            start += len(parts[-1])
        return torch.cat(parts)

    def close(self) -> None:
        """End the run: its captured graphs stay with the network for the next run (the shapes it used).

        Call it once the run's work is done; the predictor runs eagerly afterwards.
        """
        graphs = {shape: self._graphs[shape] for shape in self._used if shape in self._graphs}
        if graphs and self.cuda_graphs:
            with _CAPTURE:
                _KEPT[self.network] = (self._captured_for, graphs)
        self._graphs, self._used, self.cuda_graphs = {}, set(), False

    @property
    def model_seconds(self) -> float:
        """Time spent in the network so far (device time on CUDA, from events; waits for the device)."""
        if self._spans:
            self._spans[-1][1].synchronize()
        return self._host_seconds + sum(a.elapsed_time(b) for a, b in self._spans) / 1000

    def _graphed(self, batch: torch.Tensor) -> torch.Tensor:
        """The forward pass replayed from a CUDA graph recorded for this batch shape.

        The output lives in the graph's own buffer until the next call: the engine consumes it first.
        """
        key = tuple(batch.shape)
        if key not in self._graphs:
            with _CAPTURE:
                alone = _runs <= 1
                try:
                    if alone:
                        self._graphs[key] = self._record(batch)
                except torch.OutOfMemoryError:
                    raise
                except RuntimeError as exc:  # a network that cannot be captured (host syncs, dynamic shapes ...)
                    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    self.notes.append(f"the model cannot be replayed from a CUDA graph ({first}); ran it eagerly")
            if key not in self._graphs:
                if not alone:
                    self.notes.append("other runs share the GPU in this process: CUDA graphs are captured only by a "
                                      "run alone; ran the model eagerly")
                self.cuda_graphs = False
                return self._forward(batch)
        graph, static_in, static_out = self._graphs[key]
        self._used.add(key)
        static_in.copy_(batch)
        graph.replay()
        return static_out

    def _record(self, batch: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        """A CUDA graph of the forward pass for ``batch``'s shape, with its input and output buffers."""
        static_in = batch.clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm up (cuDNN tuning, lazy init) outside the capture
            for _ in range(2):
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the reader threads' copies and page-locking on other streams are not part of the
        # capture, and must not invalidate it (the global mode failed a run on the H200). The caller
        # holds _CAPTURE.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self._forward(static_in)
        return graph, static_in, static_out


#: Held while a network is moved: scenes in flight share one network (``geoseg batch``).
_PLACE = threading.Lock()


def place(network: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``network`` in eval mode on ``device`` in channels_last, cuDNN's and oneDNN's fast convolution
    layouts (2.3x on a CPU for EfficientNet-B4). Moved once: moving rewrites every parameter, and a
    network shared by scenes in flight must not be rewritten while another scene runs it (that
    crashed ``geoseg batch`` on an H200)."""
    with _PLACE:
        params = list(network.parameters()) + list(network.buffers())
        if not all(p.device == device and (p.dim() != 4 or p.is_contiguous(memory_format=torch.channels_last))
                   for p in params):
            network.eval().to(device).to(memory_format=torch.channels_last)
        elif network.training:
            network.eval()
    return network


def tune_for_many_scenes() -> None:
    """Let cuDNN time its algorithms once for this process: worth it when many scenes follow."""
    torch.backends.cudnn.benchmark = True


def auto_batch_size(forward: Callable[[torch.Tensor], torch.Tensor], device: torch.device, channels: int,
                    tile: int) -> int:
    """A batch size that fits the GPU's free memory: the largest power of two, up to
    :data:`MAX_AUTO_BATCH`, whose measured working memory (one probe forward pass of two patches)
    fits :data:`AUTO_BATCH_SHARE` of what is free. :data:`CPU_BATCH` on the CPU."""
    if device.type != "cuda":
        return CPU_BATCH
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    probe = torch.zeros((2, channels, tile, tile), device=device)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False):  # no tuning for a shape used once
        forward(probe)
    torch.cuda.synchronize(device)
    per_patch = max(1, (torch.cuda.max_memory_allocated(device) - base) / 2)
    del probe
    free, _ = torch.cuda.mem_get_info(device)
    fits = AUTO_BATCH_SHARE * free / per_patch
    return int(min(MAX_AUTO_BATCH, 2 ** max(0, math.floor(math.log2(max(fits, 1))))))
