"""Running a network on batches of patches: precision, batch size, out-of-memory back-off, CUDA graphs.

One :class:`Predictor` per run holds the network on its device (placed through the run's
:class:`geoseg.engine.device.DeviceSession`); the engine's device thread calls it with batches of
patches that are already there. The predictor owns the batch size: it picks it
(:func:`auto_batch_size` from the GPU's free memory), pads short batches to it on a GPU (one shape:
tuned and captured once), and halves it when the GPU runs out of memory (:attr:`Predictor.notes`).

Speed options: ``tune`` lets cuDNN time its algorithms for the batch shape once per process;
``compile`` wraps the network in ``torch.compile``; ``cuda_graphs`` (on by default on a GPU)
records each batch shape's forward pass once as a CUDA graph and replays it: one launch instead of
hundreds, so the model keeps its pace while reader threads take the CPU. A network that cannot be
captured runs eagerly, with a note. Captured graphs stay with their network in the session when a
run ends (:meth:`Predictor.close`), so the next scene of a ``geoseg batch`` replays them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING

import torch

from geoseg.engine.backends import EXPORTED, EXPORTED_BATCH, exported_network, exported_precision, resolve_backend
from geoseg.engine.device import DeviceSession, Graphs, resolve_precision
from geoseg.engine.tta import averaged
from geoseg.errors import WRITE_ERRNOS, ConfigError, DeviceError, ModelError, OutputError

if TYPE_CHECKING:
    from pathlib import Path

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: The largest batch :func:`auto_batch_size` picks: beyond it a U-Net gains little and the padded
#: last batch of a small scene costs more.
MAX_AUTO_BATCH = 16
#: Batch size on the CPU when none is given.
CPU_BATCH = 4
#: Share of the GPU's free memory the automatic batch may take (the rest: the input and blend rows).
AUTO_BATCH_SHARE = 0.4


class Predictor:
    """Softmax probabilities of a network for batches of normalised NCHW patches already on its device."""

    def __init__(self, network: torch.nn.Module | None, device: torch.device, precision: str, batch_size: int | None,
                 *, channels: int, patch: int, compile: bool = False, cuda_graphs: bool | None = None,
                 tune: bool = True, session: DeviceSession | None = None, backend: str = "torch",
                 reproducible: bool = False, exported: Path | None = None, weights_key: str | None = None,
                 network_source: Callable[[], torch.nn.Module] | None = None, traced: bool = False,
                 tta: str = "none", probabilities_out: bool = False):
        """``network`` may be None only for an exported backend (onnxruntime, openvino) with ``exported``, a
        cached export of its weights (:func:`geoseg.engine.backends.cached_export`); ``weights_key`` names the
        weights of a network fresh from its file, so that its export can be found that way next time.
        ``network_source`` gives the network where ``network`` is None and PyTorch must take over: with
        ``backend="auto"``, a network the exported backends cannot run (an operator the ONNX exporter lacks,
        as in smp's PSPNet and UPerNet) runs with PyTorch, with a note; a backend asked for by name fails
        with a one-line :class:`ModelError`. ``traced``: ``network`` is a trace with the precision's autocast
        recorded inside it (:mod:`geoseg.engine.traced`), run without autocast. ``tta``: the probabilities
        averaged over each patch's symmetric copies (:mod:`geoseg.engine.tta`), inside the CUDA graph.
        ``probabilities_out``: the network already ends in a softmax (an ONNX model made for QGIS Deepness)."""
        self.traced = traced
        self.tta = tta
        self.probabilities_out = probabilities_out
        if cuda_graphs is None:  # on by default where they exist (benchmarks/RESULTS.md)
            cuda_graphs = device.type == "cuda"
        if cuda_graphs and device.type != "cuda":
            raise ConfigError(f"CUDA graphs need a CUDA device, not {device}; drop --cuda-graphs or use --device cuda")
        self.device = device
        self.session = session or DeviceSession.default()
        #: What the predictor had to change on the way (out-of-memory back-offs, a backend that could not
        #: run the network), for the run summary.
        self.notes: list[str] = []
        self.backend = resolve_backend(backend, device, precision)
        self.precision = (exported_precision(self.backend, precision) if self.backend in EXPORTED else
                          resolve_precision(precision, device))
        if network is None and (self.backend not in EXPORTED or exported is None):
            raise ValueError("a Predictor needs the network unless it runs a cached ONNX export")
        self.network = self.session.place(network, device) if network is not None else None
        if reproducible:
            self.session.make_reproducible()
        elif device.type == "cuda" and tune:
            self.session.tune_for_many_scenes()  # the engine sends one batch shape: tuned once per process
        self._net: Callable[[torch.Tensor], torch.Tensor] = (
            torch.compile(self.network, dynamic=False) if compile else self.network)  # type: ignore[assignment]
        if self.backend in EXPORTED:
            if compile:
                raise ConfigError("--compile is for the torch backend; drop it or use --backend torch")
            try:
                self._net = exported_network(self.backend, self.network, channels, patch, self.precision,
                                             exported=exported, weights_key=weights_key)
            except Exception as exc:  # the exporter or the runtime could not take this network
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].split(". ")[0][:200]
                full = isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS
                if full and backend != "auto":  # the disk, not the network: the export had nowhere to go
                    from geoseg.models.cache import CACHE_ENV, cache_dir

                    raise OutputError(f"{cache_dir()}: the network's export for --backend {self.backend} cannot be "
                                      f"written ({exc.strerror}); free space there or point {CACHE_ENV} at a "
                                      f"folder with room") from None
                if backend != "auto" or (self.network is None and network_source is None):
                    raise ModelError(f"--backend {self.backend} cannot run this network ({reason}); use "
                                     f"--backend torch") from None
                self.notes.append(f"the network could not run with {self.backend} ({reason}); it ran with PyTorch")
                self.network = self.session.place(self.network if self.network is not None else network_source(),
                                                  device)
                self.backend, self.precision = "torch", resolve_precision(precision, device)
                self._net = self.network
        self.cuda_graphs = cuda_graphs
        self._graphs: Graphs = {}
        self._used: set[tuple[int, ...]] = set()  # batch shapes replayed by this run
        weights = self.network.parameters() if self.network is not None else ()
        self._captured_for = (device, self.precision, compile, tuple(p.data_ptr() for p in weights))
        if cuda_graphs:  # the graphs an earlier run of this network captured, if they fit
            self._graphs = self.session.take_graphs(self.network, self._captured_for)
        if compile and device.type == "cpu":
            self.notes.append("--compile on the CPU compiles the network with a C++ compiler before the first patch "
                              "(about 135 s for the built-in model on 2 cores): it pays only on long runs")
        self.patches = 0  # patches predicted (padding included)
        self._spans: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []  # CUDA: each call's device time
        self._host_seconds = 0.0  # CPU: each call's wall time
        # probed eagerly: no compile for the probe's shape. Reproducible: one size in every process (a batch of
        # another size runs other cuDNN kernels, whose logits differ in the last bits).
        # The probe's result is kept in geoseg's cache for these weights and settings: a later process knows
        # the memory a patch takes without the probe's new shape (3.2 s of cuDNN plans and kernels in a cold
        # process on the H100, benchmarks/RESULTS.md "Cold start").
        remember = (probe_record_path(weights_key, channels, patch, self.precision, tta, traced, device)
                    if weights_key and device.type == "cuda" else None)
        self.batch_size = batch_size or (MAX_AUTO_BATCH if reproducible and device.type == "cuda" else
                                         EXPORTED_BATCH if self.backend in EXPORTED else
                                         auto_batch_size(lambda x: self._forward(x, self.network), device,
                                                         channels, patch, remember))

    def _autocast(self) -> torch.autocast | nullcontext:
        if self.precision in AUTOCAST_DTYPES and self.backend == "torch" and not self.traced:  # exported backends
            # set their own precision; a trace has its autocast inside
            return torch.autocast(self.device.type, dtype=AUTOCAST_DTYPES[self.precision])
        return nullcontext()

    def _forward(self, batch: torch.Tensor, net: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        with torch.inference_mode():
            return averaged(lambda x: self._softmax(x, net), batch, self.tta)

    def _softmax(self, batch: torch.Tensor, net: Callable[[torch.Tensor], torch.Tensor] | None) -> torch.Tensor:
        """One pass of the network, as probabilities (inside :meth:`_forward`'s inference mode)."""
        if self.backend == "torch":
            batch = batch.contiguous(memory_format=torch.channels_last)
        # A trace runs on TorchScript's plain interpreter: its optimising executor would fuse kernels after a few
        # calls (other numerics, and seconds of compiling), so the trace would stop being the eager network.
        with self._autocast(), torch.jit.optimized_execution(not self.traced):
            logits = (net or self._net)(batch)
        return logits.float() if self.probabilities_out else torch.softmax(logits.float(), dim=1)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, T)`` float32 in, ``(N, K, T, T)`` float32 probabilities out, on the device.

        ``N`` is at most :attr:`batch_size`; on a GPU a shorter batch is padded to it (one shape:
        tuned and captured once). Out of GPU memory, the batch is split in halves (and the batch size
        halved for what follows) until it fits; a single patch that does not fit raises
        :class:`DeviceError`. The result may live in a graph's buffer until the next call.
        """
        n = len(batch)
        if self.device.type == "cuda" and n < self.batch_size:
            batch = torch.cat([batch, batch.new_zeros((self.batch_size - n, *batch.shape[1:]))])
        return self._predict(batch)[:n]

    def predict_patches(self, patches: Sequence[torch.Tensor]) -> torch.Tensor:
        """``self(torch.stack(patches))`` for at most :attr:`batch_size` ``(C, T, T)`` patches (views into the
        developed rows). Where a CUDA graph is already recorded for the padded batch's shape, the patches are
        copied straight into the graph's input buffer (:func:`fill_batch`): no stacked batch in between, one pass
        over each batch fewer on the GPU. Same values, same probabilities."""
        n = len(patches)
        key = (self.batch_size, *patches[0].shape)
        if not (self.cuda_graphs and self.device.type == "cuda" and key in self._graphs and n <= self.batch_size):
            return self(torch.stack(list(patches)))
        probs = self._on_device(lambda: self._replay(key, lambda buffer: fill_batch(buffer, patches)))
        self.patches += self.batch_size
        return probs[:n]

    def _on_device(self, run: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``run()`` (work queued on the GPU) between two timing events: its device time counts in
        :attr:`model_seconds`."""
        span = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        span[0].record()
        probs = run()
        span[1].record()
        self._spans.append(span)
        return probs

    def _predict(self, batch: torch.Tensor) -> torch.Tensor:
        try:
            if self.device.type != "cuda":
                started = time.perf_counter()
                probs = self._forward(batch)
                self._host_seconds += time.perf_counter() - started
            else:
                probs = self._on_device(lambda: self._graphed(batch) if self.cuda_graphs else self._forward(batch))
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
        if self.cuda_graphs:
            self.session.keep_graphs(self.network, self._captured_for, graphs)
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
            with self.session.capturing() as alone:
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
        return self._replay(key, lambda buffer: buffer.copy_(batch))

    def _replay(self, key: tuple[int, ...], fill: Callable[[torch.Tensor], object]) -> torch.Tensor:
        """Replay the graph recorded for batch shape ``key`` after ``fill`` has written the batch into its input
        buffer; the output is the graph's own buffer."""
        graph, static_in, static_out = self._graphs[key]
        self._used.add(key)
        fill(static_in)
        graph.replay()
        return static_out

    def _record(self, batch: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]:
        """A CUDA graph of the forward pass for ``batch``'s shape, with its input and output buffers."""
        # in the layout the network takes (channels_last): the copy into it is the layout change, and the graph has
        # none of its own (:meth:`_softmax`'s ``contiguous`` is then a no-op), one pass over each batch fewer
        static_in = batch.clone(memory_format=torch.channels_last if self.backend == "torch" else torch.preserve_format)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):  # warm up (cuDNN tuning, lazy init) outside the capture
            for _ in range(2):
                self._forward(static_in)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the reader threads' copies and page-locking on other streams are not part of the
        # capture, and must not invalidate it (the global mode would: their work is outside the captured
        # stream). The caller holds the session's capture lock.
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            static_out = self._forward(static_in)
        return graph, static_in, static_out


def fill_batch(buffer: torch.Tensor, patches: Sequence[torch.Tensor]) -> None:
    """Copy ``patches`` into the first rows of ``buffer`` (``(N, C, T, T)``, any memory layout) and zero the rest:
    the values of ``torch.cat([torch.stack(patches), zeros])``, the padded batch :meth:`Predictor.__call__` makes."""
    for i, patch in enumerate(patches):
        buffer[i].copy_(patch)
    if len(patches) < len(buffer):
        buffer[len(patches) :].zero_()


def auto_batch_size(forward: Callable[[torch.Tensor], torch.Tensor], device: torch.device, channels: int,
                    patch: int, remember: Path | None = None) -> int:
    """A batch size that fits the GPU's free memory: the largest power of two, up to
    :data:`MAX_AUTO_BATCH`, whose working memory fits :data:`AUTO_BATCH_SHARE` of what is free. The memory a
    patch takes is measured by one probe forward pass of two patches, or read from ``remember``, where an
    earlier probe of the same weights and settings kept it (and where this probe keeps it). :data:`CPU_BATCH`
    on the CPU."""
    if device.type != "cuda":
        return CPU_BATCH
    per_patch = _remembered(remember)
    if per_patch is None:
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        probe = torch.zeros((2, channels, patch, patch), device=device)
        with torch.backends.cudnn.flags(enabled=True, benchmark=False):  # no tuning for a shape used once
            forward(probe)
        torch.cuda.synchronize(device)
        per_patch = max(1.0, (torch.cuda.max_memory_allocated(device) - base) / 2)
        del probe
        _remember(remember, per_patch)
    free, _ = torch.cuda.mem_get_info(device)
    fits = AUTO_BATCH_SHARE * free / per_patch
    return int(min(MAX_AUTO_BATCH, 2 ** max(0, math.floor(math.log2(max(fits, 1))))))


def probe_record_path(weights_key: str, channels: int, patch: int, precision: str, tta: str, traced: bool,
                      device: torch.device) -> Path:
    """Where the batch-size probe of these weights and settings keeps the memory a patch took (geoseg's cache):
    keyed by everything that changes it, the GPU's model and the libraries' versions included."""
    import hashlib

    from geoseg.models.cache import cache_dir

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    settings = (f"{torch.__version__}|{torch.backends.cudnn.version()}|{name}|{precision}|{channels}|{patch}|{tta}|"
                f"traced={traced}|{weights_key}")
    return cache_dir() / "probes" / f"{hashlib.sha256(settings.encode()).hexdigest()[:32]}.json"


def _remembered(path: Path | None) -> float | None:
    """The bytes a patch took, as an earlier probe kept them; None where there is no sound record."""
    import json

    if path is None:
        return None
    try:
        value = json.loads(path.read_text())["bytes_per_patch"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) and math.isfinite(value) and value >= 1 else None


def _remember(path: Path | None, per_patch: float) -> None:
    import contextlib
    import json

    from geoseg.io.integrity import publish_text

    if path is None:
        return
    with contextlib.suppress(OSError):  # a read-only or full cache: the next process probes again
        path.parent.mkdir(parents=True, exist_ok=True)
        publish_text(path, json.dumps({"bytes_per_patch": per_patch}))
