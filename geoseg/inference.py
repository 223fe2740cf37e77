"""Running a network on batches of patches: device, precision, batching, softmax.

One :class:`Predictor` per run holds the network on its device; the engine's one device thread
calls it with batches of patches that are already there.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from geoseg.errors import ConfigError, DeviceError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


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
    """``auto`` is bf16 on GPUs that support it (fp16 otherwise) and fp32 on the CPU."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r} is not valid; use one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


class Predictor:
    """Softmax probabilities of a network for batches of normalised NCHW patches already on its device."""

    def __init__(self, network: torch.nn.Module, device: torch.device, precision: str, batch_size: int):
        if batch_size < 1:
            raise ConfigError(f"batch size {batch_size} must be at least 1")
        self.device = device
        self.precision = resolve_precision(precision, device)
        self.batch_size = batch_size
        self.network = network.eval().to(device)
        if device.type == "cuda":
            self.network = self.network.to(memory_format=torch.channels_last)
            torch.backends.cudnn.benchmark = True  # the engine sends one batch shape: tuned once

    def _autocast(self) -> torch.autocast | nullcontext:
        if self.precision in _AUTOCAST:
            return torch.autocast(self.device.type, dtype=_AUTOCAST[self.precision])
        return nullcontext()

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """``(N, C, T, T)`` float32 in, ``(N, K, T, T)`` float32 probabilities out, on the device."""
        with torch.inference_mode():
            if self.device.type == "cuda":
                batch = batch.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                logits = self.network(batch)
            return torch.softmax(logits.float(), dim=1)
