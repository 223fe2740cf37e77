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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from geoseg.errors import ConfigError

#: Backends by name (``--backend``); ``auto`` is ONNX Runtime on the CPU at ``--precision auto`` where it is
#: installed (the fastest measured there), else PyTorch. ``--precision fp32`` keeps PyTorch's fp32 as the reference.
BACKENDS = ("auto", "torch", "onnxruntime")
OPSET = 17


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


def onnx_file(network: torch.nn.Module, channels: int, tile: int) -> Path:
    """The network exported to ONNX, from geoseg's cache or exported now (atomically)."""
    import onnxruntime

    from geoseg.models.cache import cache_dir

    digest = hashlib.sha256(f"{torch.__version__}|{onnxruntime.__version__}|{OPSET}|{channels}|{tile}|"
                            f"{type(network).__name__}|plain-swish".encode())
    for name, tensor in network.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    path = cache_dir() / "onnx" / f"{digest.hexdigest()[:32]}.onnx"
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    example = torch.zeros(1, channels, tile, tile)
    encoder = getattr(network, "encoder", None)
    if hasattr(encoder, "set_swish"):  # EfficientNet: plain x * sigmoid(x), which ONNX Runtime fuses
        encoder.set_swish(memory_efficient=False)
    try:
        with torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(network.eval(), example, str(tmp), input_names=["x"], output_names=["logits"],
                              dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, opset_version=OPSET, dynamo=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


#: One export and one ONNX Runtime session per exported file (weights and shape) in a process, shared by the runs of a
#: batch (``--parallel`` runs call it from several threads; a session's ``run`` is thread-safe).
_SESSIONS: dict[str, Any] = {}
_LOCK = threading.Lock()


def onnxruntime_network(network: torch.nn.Module, channels: int, tile: int, threads: int | None = None
                        ) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable with the network's signature (NCHW float32 in, logits out, on the CPU) run by ONNX Runtime."""
    import onnxruntime as ort

    with _LOCK:
        path = onnx_file(network, channels, tile)  # keyed by the weights as they are now
        runner = _SESSIONS.get(str(path))
        if runner is None:
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads or max(1, (os.cpu_count() or 1))
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.enable_cpu_mem_arena = False  # the arena kept ~0.7 GiB more than ukis-csmask at 10980²
            runner = _SESSIONS[str(path)] = ort.InferenceSession(str(path), options,
                                                                 providers=["CPUExecutionProvider"])

    def run(batch: torch.Tensor) -> torch.Tensor:
        x = batch.float().contiguous().numpy()
        return torch.from_numpy(runner.run(None, {"x": x})[0])

    return run
