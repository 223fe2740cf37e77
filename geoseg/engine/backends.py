"""Inference backends behind :class:`~geoseg.engine.predictor.Predictor`: PyTorch, or on the CPU the
network exported once to ONNX and run by ONNX Runtime (fp32) or OpenVINO (fp32 or bf16).

On the CPU the exported backends are faster than PyTorch's CPU kernels for these U-Nets, and OpenVINO's
bf16 kernels faster still on CPUs with AMX / AVX512-BF16 (figures: benchmarks/RESULTS.md section 9). The
export (opset 17, a dynamic batch axis) is cached under geoseg's cache, keyed by the network's structure,
the weights its forward pass reaches, the input shape and the library versions; later runs load it
straight away, and a run of a model fresh from its file finds it without building the network
(:func:`cached_export`). The run's blending, patch grid and exactness are the same: for a given backend
and precision the mask does not depend on the block or batch size; against PyTorch fp32 only near-ties
differ.
"""

from __future__ import annotations

import functools
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from geoseg.errors import ConfigError
from geoseg.models.onnxfile import OPSET, export_network

#: ``auto`` on the CPU at ``--precision auto`` (:func:`resolve_backend`) is the fastest backend installed:
#: OpenVINO, in bf16 on a CPU with bf16 instructions and in fp32 on other x86 CPUs; ONNX Runtime in fp32 where
#: OpenVINO is missing or the CPU is not x86; PyTorch on a GPU and with an explicit ``--precision`` (``fp32``
#: keeps PyTorch's fp32 as the reference). The comparison is benchmarks/RESULTS.md section 9.
#: Backends that run the network's ONNX export (CPU only), and the precisions each offers.
EXPORTED = {"onnxruntime": ("fp32",), "openvino": ("fp32", "bf16")}
#: Patches per call of an exported backend when no batch size is given: one patch's activations stay nearer
#: the caches, so batching gains nothing on a CPU (benchmarks/RESULTS.md section 9).
EXPORTED_BATCH = 1


def resolve_backend(name: str, device: torch.device, precision: str) -> str:
    """The backend a run uses (see :data:`BACKENDS`), checked against the device and precision."""
    from geoseg.engine.device import cpu_has_bf16

    if name == "auto":
        if device.type != "cpu" or precision != "auto":
            return "torch"
        if (cpu_has_bf16() or _x86()) and _importable("openvino"):
            return "openvino"
        return "onnxruntime" if _importable("onnxruntime") else "torch"
    if name in EXPORTED:
        offered = EXPORTED[name]
        if device.type != "cpu":
            raise ConfigError(f"--backend {name} runs on the CPU, not {device}; use --device cpu or --backend torch")
        if precision not in ("auto", *offered):
            raise ConfigError(f"--backend {name} runs {' or '.join(offered)}; drop --precision {precision} or use "
                              f"--backend torch")
        if precision == "bf16" and not cpu_has_bf16():
            raise ConfigError(f"--backend {name} --precision bf16 needs a CPU with bf16 instructions (AVX512-BF16 "
                              f"or AMX), which this one lacks: it would be emulated, slower than fp32; use "
                              f"--precision fp32")
        if not _importable(name):
            raise ConfigError(f"--backend {name}: the {name} package is not installed; pip install {name}, or use "
                              f"--backend torch")
    return name


def exported_precision(backend: str, precision: str) -> str:
    """The precision an exported backend runs at: ``auto`` is bf16 where it offers it and the CPU has bf16
    instructions, else fp32."""
    from geoseg.engine.device import cpu_has_bf16

    if precision != "auto":
        return precision
    return "bf16" if "bf16" in EXPORTED[backend] and cpu_has_bf16() else "fp32"


def _x86() -> bool:
    """Whether this is an x86-64 CPU, where OpenVINO's fp32 was measured against ONNX Runtime's."""
    import platform

    return platform.machine().lower() in ("x86_64", "amd64")


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def cpu_threads() -> int:
    """Threads for an exported backend: ``OMP_NUM_THREADS`` where set (a dask worker's share of the cores,
    :func:`geoseg.cluster.workers.worker_environment`), else every core."""
    try:
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    except (KeyError, ValueError):
        return max(1, os.cpu_count() or 1)


def used_state(network: torch.nn.Module, channels: int, patch: int) -> list[tuple[str, torch.Tensor]]:
    """The parameters and buffers of the modules a forward pass reaches, by name.

    Networks can hold modules their forward never calls, with weights no file sets: smp's EfficientNet
    encoders keep the classifier's ``_conv_head``, randomly initialised at every load. They do not
    reach the exported graph, so they must not key its cache (they made every run export anew).
    """
    reached: set[int] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: reached.add(id(m))) for m in network.modules()]
    side = PROBE_SIDE if patch >= PROBE_SIDE else patch
    try:
        with torch.inference_mode():
            network.eval()(torch.zeros(1, channels, side, side))
    finally:
        for hook in hooks:
            hook.remove()
    return [(f"{prefix}.{name}" if prefix else name, tensor)
            for prefix, module in network.named_modules() if id(module) in reached
            for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]]


def graph_structure(network: torch.nn.Module) -> str:
    """Everything besides the weights that shapes the exported graph: each module's class and its plain
    settings (an smp decoder's ``interpolation_mode``, a layer's stride, an activation's kind). Two networks
    with the same weights but another setting must never share an export."""
    simple = (bool, int, float, str, type(None))
    parts = []
    for name, module in network.named_modules():
        settings = sorted((key, repr(value)) for key, value in vars(module).items()
                          if not key.startswith("_") and key != "training"
                          and (isinstance(value, simple) or (isinstance(value, tuple)
                                                             and all(isinstance(v, simple) for v in value))))
        parts.append(f"{name}:{type(module).__module__}.{type(module).__qualname__}{settings}")
    return "\n".join(parts)


#: Side of the probe patch :func:`used_state` runs (U-Nets of depth 5 need a multiple of 32).
PROBE_SIDE = 64


def _export_settings(channels: int, patch: int) -> str:
    import onnxruntime

    return f"{torch.__version__}|{onnxruntime.__version__}|{OPSET}|{channels}|{patch}|plain-swish"


def _alias(weights_key: str, channels: int, patch: int) -> Path:
    """Where the name of the export of the weights ``weights_key`` names is kept (see :func:`cached_export`)."""
    from geoseg.models.cache import cache_dir

    digest = hashlib.sha256(f"{weights_key}|{_export_settings(channels, patch)}".encode()).hexdigest()[:32]
    return cache_dir() / "onnx" / "by-weights" / digest


def cached_export(weights_key: str, channels: int, patch: int) -> Path | None:
    """The cached export of the weights that ``weights_key`` names (a model's file identity), found without
    building the network: a CPU run that finds it imports neither smp nor timm nor torchvision."""
    alias = _alias(weights_key, channels, patch)
    try:
        path = alias.parent.parent / alias.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return path if path.is_file() and path.suffix == ".onnx" else None


def onnx_file(network: torch.nn.Module, channels: int, patch: int, weights_key: str | None = None) -> Path:
    """The network exported to ONNX, from geoseg's cache or exported now (atomically).

    ``weights_key``, given only where ``network`` is exactly what its file holds, is recorded with the
    export for :func:`cached_export`.
    """
    from geoseg.models.cache import cache_dir

    digest = hashlib.sha256(f"{_export_settings(channels, patch)}|{graph_structure(network)}".encode())
    for name, tensor in used_state(network, channels, patch):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = cache_dir() / "onnx" / f"{digest.hexdigest()[:32]}.onnx"
    if not path.is_file():
        try:
            _export(network, channels, patch, path)
        except OSError:  # a read-only or full cache: this process's own export, removed at its exit
            path = _private_dir() / path.name
            if not path.is_file():
                _export(network, channels, patch, path)
            return path
    if weights_key is not None:
        alias = _alias(weights_key, channels, patch)
        partial = alias.with_name(f".{alias.name}.{os.getpid()}.tmp")
        try:
            alias.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(path.name)
            os.replace(partial, alias)
        except OSError:  # the export works all the same; the next run builds the network to find it
            partial.unlink(missing_ok=True)
    return path


@functools.cache
def _private_dir() -> Path:
    """A folder for this process's exports where the cache cannot take them, removed when it exits."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="geoseg-onnx-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _export(network: torch.nn.Module, channels: int, patch: int, path: Path) -> None:
    """Export ``network`` for ``channels x patch x patch`` patches (logits out, a dynamic batch axis), atomically."""
    export_network(network, channels, patch, path)


#: One export and one session (ONNX Runtime) or compiled model (OpenVINO) per exported file, precision and
#: thread count in a process, shared by the runs of a batch (``--parallel`` runs call them from several threads).
_SESSIONS: dict[tuple, Any] = {}
_LOCK = threading.Lock()


def exported_network(backend: str, network: torch.nn.Module | None, channels: int, patch: int,
                     precision: str = "fp32", threads: int | None = None, *, exported: Path | None = None,
                     weights_key: str | None = None) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable with the network's signature (NCHW float32 in, logits out, on the CPU) run by ``backend``
    (see :data:`EXPORTED`) at ``precision``: of ``exported`` (a :func:`cached_export`) or of ``network``
    exported now or found in the cache."""
    with _LOCK:
        if exported is not None:
            path = exported
        else:
            assert network is not None
            path = onnx_file(network, channels, patch, weights_key)  # keyed by the weights as they are now
        threads = threads or cpu_threads()
        runner = _SESSIONS.get((backend, str(path), precision, threads))
        if runner is None:
            make = _onnxruntime_runner if backend == "onnxruntime" else _openvino_runner
            runner = _SESSIONS[backend, str(path), precision, threads] = make(path, precision, threads)
    return runner


def _onnxruntime_runner(path: Path, precision: str, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime as ort

    assert precision == "fp32"
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # The arena keeps freed activations for the next call; without it every call maps and zero-fills
    # them anew, in system time. With one patch per call it stays small.
    options.enable_cpu_mem_arena = True
    # Idle pool threads sleep rather than spin: the reader and writer threads need those cores
    # between calls.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batch: torch.Tensor) -> torch.Tensor:  # a session's run is thread-safe
        x = batch.float().contiguous().numpy()
        return torch.from_numpy(session.run(None, {"x": x})[0])

    return run


def _openvino_runner(path: Path, precision: str, threads: int) -> Callable[[torch.Tensor], torch.Tensor]:
    import openvino as ov

    from geoseg.models.cache import cache_dir

    # The latency hint runs one call on every thread; the throughput hint (streams of calls side by side)
    # suits callers with many calls in flight, and the engine makes one at a time.
    settings = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
                "INFERENCE_NUM_THREADS": threads}
    try:
        # OpenVINO keeps what it compiled for this CPU (tens of MB a model and precision), so a later process
        # loads it instead of compiling again. The export's name is its content's digest.
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(cache_dir() / "openvino")})
        compiled = core.compile_model(str(path), "CPU", settings)
    except RuntimeError:  # the cache cannot be written (read-only, full): compiled for this process only
        compiled = ov.Core().compile_model(str(path), "CPU", settings)
    requests = threading.local()  # an infer request serves one call at a time: one per calling thread

    def run(batch: torch.Tensor) -> torch.Tensor:
        request = getattr(requests, "request", None)
        if request is None:
            request = requests.request = compiled.create_infer_request()
        request.infer({0: batch.float().contiguous().numpy()})
        return torch.from_numpy(request.get_output_tensor(0).data.copy())  # the request reuses its memory

    return run
