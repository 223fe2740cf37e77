"""Inference backends behind :class:`~geoseg.engine.predictor.Predictor`: PyTorch, or ONNX Runtime on the CPU.

PyTorch's CPU kernels run these U-Nets about 3x slower than ONNX Runtime's in fp32 (benchmarks/RESULTS.md
section 4). ``onnxruntime`` exports the loaded network once to ONNX (opset 17, a dynamic batch axis) and
caches the file under geoseg's cache, keyed by the weights, the input shape and the library versions;
later runs load it straight away. The run's blending, patch grid and exactness are the same: for a
given backend the mask does not depend on the block or batch size; against PyTorch fp32 only
near-ties differ.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from geoseg.errors import ConfigError

#: Backends by name (``--backend``); ``auto`` is ONNX Runtime on the CPU at ``--precision auto`` where it is
#: installed (the fastest measured there), else PyTorch. ``--precision fp32`` keeps PyTorch's fp32 as the reference.
BACKENDS = ("auto", "torch", "onnxruntime")
OPSET = 17
#: Patches per ONNX Runtime call when no batch size is given. One patch's activations stay nearer the
#: caches: on 2 AVX2 cores 4 patches took 1.16 s one by one and 1.32 s as one batch (benchmarks/RESULTS.md section 9).
ONNXRUNTIME_BATCH = 1


def resolve_backend(name: str, device: torch.device, precision: str) -> str:
    """The backend a run uses: ``auto`` -> onnxruntime on the CPU at precision ``auto`` when importable, else torch."""
    if name not in BACKENDS:
        raise ConfigError(f"backend {name!r} is not valid; use one of {', '.join(BACKENDS)}")
    available = _has_onnxruntime()
    if name == "auto":
        return "onnxruntime" if device.type == "cpu" and precision == "auto" and available else "torch"
    if name == "onnxruntime":
        if device.type != "cpu":
            raise ConfigError(f"--backend onnxruntime runs on the CPU, not {device}; use --device cpu or "
                              f"--backend torch")
        if precision not in ("auto", "fp32"):
            raise ConfigError(f"--backend onnxruntime runs fp32; drop --precision {precision} or use --backend torch")
        if not available:
            raise ConfigError("--backend onnxruntime: the onnxruntime package is not installed; "
                              "pip install onnxruntime, or use --backend torch")
    return name


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def used_state(network: torch.nn.Module, channels: int, tile: int) -> list[tuple[str, torch.Tensor]]:
    """The parameters and buffers of the modules a forward pass reaches, by name.

    Networks can hold modules their forward never calls, with weights no file sets: smp's EfficientNet
    encoders keep the classifier's ``_conv_head``, randomly initialised at every load. They do not
    reach the exported graph, so they must not key its cache (they made every run export anew).
    """
    reached: set[int] = set()
    hooks = [m.register_forward_hook(lambda m, i, o: reached.add(id(m))) for m in network.modules()]
    side = PROBE_SIDE if tile >= PROBE_SIDE else tile
    try:
        with torch.inference_mode():
            network.eval()(torch.zeros(1, channels, side, side))
    finally:
        for hook in hooks:
            hook.remove()
    return [(f"{prefix}.{name}" if prefix else name, tensor)
            for prefix, module in network.named_modules() if id(module) in reached
            for name, tensor in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]]


#: Side of the probe patch :func:`used_state` runs (U-Nets of depth 5 need a multiple of 32).
PROBE_SIDE = 64


def _export_settings(channels: int, tile: int) -> str:
    import onnxruntime

    return f"{torch.__version__}|{onnxruntime.__version__}|{OPSET}|{channels}|{tile}|plain-swish"


def _alias(weights_key: str, channels: int, tile: int) -> Path:
    """Where the name of the export of the weights ``weights_key`` names is kept (see :func:`cached_export`)."""
    from geoseg.models.cache import cache_dir

    digest = hashlib.sha256(f"{weights_key}|{_export_settings(channels, tile)}".encode()).hexdigest()[:32]
    return cache_dir() / "onnx" / "by-weights" / digest


def cached_export(weights_key: str, channels: int, tile: int) -> Path | None:
    """The cached export of the weights that ``weights_key`` names (a model's file identity), found without
    building the network: a CPU run that finds it imports neither smp nor timm nor torchvision."""
    alias = _alias(weights_key, channels, tile)
    try:
        path = alias.parent.parent / alias.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return path if path.is_file() and path.suffix == ".onnx" else None


def onnx_file(network: torch.nn.Module, channels: int, tile: int, weights_key: str | None = None) -> Path:
    """The network exported to ONNX, from geoseg's cache or exported now (atomically).

    ``weights_key``, given only where ``network`` is exactly what its file holds, is recorded with the
    export for :func:`cached_export`.
    """
    from geoseg.models.cache import cache_dir

    digest = hashlib.sha256(f"{_export_settings(channels, tile)}|{type(network).__name__}".encode())
    for name, tensor in used_state(network, channels, tile):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = cache_dir() / "onnx" / f"{digest.hexdigest()[:32]}.onnx"
    if not path.is_file():
        _export(network, channels, tile, path)
    if weights_key is not None:
        alias = _alias(weights_key, channels, tile)
        alias.parent.mkdir(parents=True, exist_ok=True)
        partial = alias.with_name(f".{alias.name}.{os.getpid()}.tmp")
        partial.write_text(path.name)
        os.replace(partial, alias)
    return path


def _export(network: torch.nn.Module, channels: int, tile: int, path: Path) -> None:
    """Export ``network`` for ``channels x tile x tile`` patches (a dynamic batch axis) to ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    example = torch.zeros(1, channels, tile, tile)
    encoder = getattr(network, "encoder", None)
    if hasattr(encoder, "set_swish"):  # EfficientNet: plain x * sigmoid(x), which ONNX Runtime fuses
        encoder.set_swish(memory_efficient=False)
    try:
        # The TorchScript exporter warns about what it cannot fold; those are notes for torch's
        # developers, not for a user of a finished export.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(network.eval(), example, str(tmp), input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, opset_version=OPSET, dynamo=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


#: One export and one ONNX Runtime session per exported file (weights and shape) in a process, shared by the runs of a
#: batch (``--parallel`` runs call it from several threads; a session's ``run`` is thread-safe).
_SESSIONS: dict[str, Any] = {}
_LOCK = threading.Lock()


def onnxruntime_network(network: torch.nn.Module | None, channels: int, tile: int, threads: int | None = None, *,
                        exported: Path | None = None, weights_key: str | None = None
                        ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable with the network's signature (NCHW float32 in, logits out, on the CPU) run by ONNX Runtime:
    of ``exported`` (a :func:`cached_export`) or of ``network`` exported now or found in the cache."""
    import onnxruntime as ort

    with _LOCK:
        if exported is not None:
            path = exported
        else:
            assert network is not None
            path = onnx_file(network, channels, tile, weights_key)  # keyed by the weights as they are now
        runner = _SESSIONS.get(str(path))
        if runner is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or max(1, (os.cpu_count() or 1))
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # The arena keeps freed activations for the next call. Without it every call maps and zero-fills
            # them anew: 17 s of system time in a 10980² run, 5 s more wall. With one patch per call it
            # holds less than ukis-csmask's whole run (section 9).
            options.enable_cpu_mem_arena = True
            # Idle pool threads sleep rather than spin: the reader and writer threads need those cores
            # between calls (1.6 s of a 10980² run on 2 cores).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            runner = _SESSIONS[str(path)] = ort.InferenceSession(str(path), options,
                                                                 providers=["CPUExecutionProvider"])

    def run(batch: torch.Tensor) -> torch.Tensor:
        x = batch.float().contiguous().numpy()
        return torch.from_numpy(runner.run(None, {"x": x})[0])

    return run
