"""The network as TorchScript, traced under the run's autocast and cached by its weights.

Building an smp network imports segmentation-models-pytorch, timm and torchvision, and through
``torchvision.ops`` torch._dynamo and torch's custom-op registration: seconds of a cold ``geoseg run``
(benchmarks/RESULTS.md, "Start-up"). After a run on the torch backend whose network was built from its
file, :func:`save_traced` traces the placed network on its device with one patch, *under the run's
autocast*, so that the trace records autocast's casts as operations of its own; a later process with the
same weights, device kind, precision, channels and patch size loads it (:func:`load_traced`) with torch
alone and runs it **without** autocast: the same operations in the same precision, so the same bits as
the eager network under autocast (tests/engine/test_traced.py on the CPU, tests/test_gpu.py on CUDA).
Running the trace under autocast again would cast twice and differ.

A trace keeps the cuDNN flags it was traced under: each convolution's ``benchmark`` and ``deterministic``
arguments are constants of the traced graph, whatever ``torch.backends.cudnn`` says when it runs. So a trace
is made under the flags its run uses (``tuned``: cuDNN times its algorithms, as a large scene's run does;
else its fixed heuristics, as ``--reproducible`` and small scenes do) and keyed by them: a reproducible run
never replays a trace that times its algorithms.

The trace is keyed like the ONNX export (:func:`geoseg.engine.backends.cached_export`): the weight file's
identity (path, size, modification time, cards), torch's version and the settings above. A network that
cannot be traced is simply not cached; ``--compile`` runs never use a trace.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import warnings
from pathlib import Path

import torch

from geoseg.engine.predictor import AUTOCAST_DTYPES
from geoseg.models.cache import cache_dir


def traced_path(weights_key: str, channels: int, patch: int, precision: str, device: torch.device,
                tuned: bool = False) -> Path:
    """Where the trace of these weights for these settings lives in geoseg's cache."""
    tuned = tuned and device.type == "cuda"  # cuDNN's flags mean nothing elsewhere
    settings = f"{torch.__version__}|{device.type}|{precision}|{channels}|{patch}|{weights_key}|tuned={tuned}"
    return cache_dir() / "traced" / f"{hashlib.sha256(settings.encode()).hexdigest()[:32]}.pt"


#: Traces loaded by this process, by file and device: every scene of a batch runs the same module (one copy
#: of the weights on the device, and the CUDA graphs a scene captured are replayed by the next).
_LOADED: dict[tuple[Path, str], torch.jit.ScriptModule] = {}
_LOADING = threading.Lock()


def load_traced(weights_key: str, channels: int, patch: int, precision: str,
                device: torch.device, tuned: bool = False) -> torch.jit.ScriptModule | None:
    """The cached trace of these weights, on ``device``, or None when there is none (or it cannot be read)."""
    path = traced_path(weights_key, channels, patch, precision, device, tuned)
    with _LOADING:
        if (path, str(device)) in _LOADED:
            return _LOADED[path, str(device)]
        if not path.is_file():
            return None
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation note
                module = torch.jit.load(str(path), map_location=device).eval()
        except (RuntimeError, OSError, ValueError):  # damaged, or written by another build: traced again later
            return None
        _LOADED[path, str(device)] = module
        return module


def save_traced(network: torch.nn.Module, weights_key: str, channels: int, patch: int, precision: str,
                device: torch.device, tuned: bool = False) -> Path | None:
    """Trace ``network`` (placed on ``device``, in eval mode) with one patch under ``precision``'s autocast and
    the cuDNN flags of a ``tuned`` run or of one on cuDNN's heuristics, and write it to the cache atomically; None
    when the network cannot be traced or the cache cannot be written."""
    path = traced_path(weights_key, channels, patch, precision, device, tuned)
    if path.is_file():
        return path
    example = torch.zeros((1, channels, patch, patch), device=device).contiguous(memory_format=torch.channels_last)
    dtype = AUTOCAST_DTYPES.get(precision)
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation notes, and the tracer's on shape checks
            with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), \
                    torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, benchmark=tuned and
                                               device.type == "cuda", deterministic=False):
                traced = torch.jit.trace(network, example, check_trace=False)
            # Serialised in memory, written by Python: torch's own file writer aborts the process when a write
            # fails (a full disk), where Python raises OSError.
            torch.jit.save(traced, buffer)
    except Exception:  # a network the tracer cannot take: it runs eagerly
        return None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        os.replace(tmp, path)
    except OSError:  # a cache that cannot be written (full, read-only): the next process builds the network
        tmp.unlink(missing_ok=True)
        return None
    return path
