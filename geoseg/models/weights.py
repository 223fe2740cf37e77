"""Reading weights (safetensors; pickled checkpoints and TorchScript only when trusted) and loading
them into a network with an error that names every tensor that does not fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from geoseg.errors import ModelError, reason
from geoseg.models.cache import load_weights

#: Suffixes of pickled PyTorch files: loading one can run code, so it needs ``trust_checkpoint``.
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl")


def read_checkpoint(path: Path, trust_checkpoint: bool) -> Any:
    """The object in a pickled checkpoint, read with ``torch.load(weights_only=True)`` (tensors,
    containers and plain values only), after the user said they trust it."""
    if not trust_checkpoint:
        raise ModelError(f"{path}: is a pickled checkpoint, which can run code when loaded; convert it to "
                         f"safetensors or pass --trust-checkpoint if you trust its source")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"{path}: cannot be read as a checkpoint of tensors ({first[:200]}); save its "
                         f"state_dict() alone (torch.save(model.state_dict(), ...)) or as safetensors") from None


def read_torchscript(path: Path, trust_checkpoint: bool) -> dict[str, torch.Tensor]:
    """The parameters and buffers of a TorchScript archive (``torch.jit.save``), which also carries code."""
    if not trust_checkpoint:
        raise ModelError(f"{path}: is a TorchScript archive, which carries code; pass --trust-checkpoint if you "
                         f"trust its source")
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise ModelError(f"{path}: cannot be read as TorchScript ({reason(exc)})") from None
    return {k: v for k, v in module.state_dict().items()}


def read_tensors(path: Path, trust_checkpoint: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or (trusted) a pickled state dict or Lightning checkpoint."""
    if path.suffix == ".safetensors":
        try:
            return load_weights(path)
        except Exception as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise ModelError(f"{path}: weights cannot be read ({first}); the file is damaged or not "
                             f"safetensors: re-export it") from None
    state = read_checkpoint(path, trust_checkpoint)
    return state_dict_of(state, path)


def state_dict_of(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint object (a plain state dict, ``{"state_dict": ...}`` as
    Lightning writes it, or ``{"model": ...}``), with Lightning's ``model.`` prefix removed."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: holds no state dict of tensors; save model.state_dict()")
    if all(k.startswith("model.") for k in obj):
        obj = {k.removeprefix("model."): v for k, v in obj.items()}
    return dict(obj)


def load_state(network: torch.nn.Module, tensors: dict[str, torch.Tensor], allowed_missing: frozenset[str],
               source: str) -> None:
    """Load ``tensors`` into ``network``; raise, naming the missing, unexpected and mis-shaped tensors,
    unless only ``allowed_missing`` keys stay unset."""
    own = network.state_dict()
    misshaped = [f"{k} {tuple(v.shape)} (network: {tuple(own[k].shape)})" for k, v in tensors.items()
                 if k in own and tuple(own[k].shape) != tuple(v.shape)]
    missing = sorted(k for k in set(own) - set(tensors) - allowed_missing if not k.endswith("num_batches_tracked"))
    unexpected = sorted(set(tensors) - set(own))
    if misshaped or missing or unexpected:
        parts = []
        if misshaped:
            parts.append(f"{len(misshaped)} mis-shaped, e.g. {misshaped[:2]}")
        if missing:
            parts.append(f"{len(missing)} missing, e.g. {missing[:2]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected, e.g. {unexpected[:2]}")
        raise ModelError(f"model {source!r}: weights do not fit the architecture ({'; '.join(parts)}); check the "
                         f"architecture, encoder, bands and classes the weights were trained with")
    broken = [k for k, v in tensors.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if broken:
        raise ModelError(f"model {source!r}: {len(broken)} weight tensor(s) hold NaN or infinite values, e.g. "
                         f"{broken[:2]}; the training diverged or the file is damaged: retrain it or export it again")
    network.load_state_dict(tensors, strict=False)
