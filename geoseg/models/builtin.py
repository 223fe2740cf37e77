"""The built-in models: ukis-csmask's cloud / cloud-shadow U-Nets, converted from ONNX once.

ukis-csmask ships four smp ``Unet("efficientnet-b4")`` models (6 or 4 bands, Sentinel-2/Landsat
L1C or L2A) as ONNX files with a JSON of band names and statistics. Their ONNX initializers are
the network's weights under a ``model.`` prefix; they load into the smp network with only the
encoder's unused head (``_conv_head``, ``_bn1``) left unset. The converted weights are cached as
safetensors, keyed by the ONNX file's size and the package version.
"""

from __future__ import annotations

import contextlib
import json
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.config import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from geoseg.errors import ModelError
from geoseg.models.cache import cache_dir, load_weights, save_weights
from geoseg.models.card import ClassInfo, ModelCard, Scaling

if TYPE_CHECKING:
    import torch

#: EfficientNet's classifier head, which a segmentation encoder never uses.
UNUSED_KEYS = frozenset({
    "encoder._conv_head.weight", "encoder._bn1.weight", "encoder._bn1.bias",
    "encoder._bn1.running_mean", "encoder._bn1.running_var", "encoder._bn1.num_batches_tracked",
})

CSMASK_CLASSES = (
    ClassInfo(0, "clear", (76, 175, 80)),
    ClassInfo(1, "cloud", (240, 240, 240)),
    ClassInfo(2, "cloud shadow", (90, 70, 140)),
)

#: The encoder of every built-in network (``geoseg train --init csmask-...`` trains on it).
BUILTIN_ENCODER = "efficientnet-b4"
#: Built-in name -> (ONNX stem in the package, product level, description).
CSMASK_VARIANTS: dict[str, tuple[str, str]] = {
    "csmask-6b-l1c": ("model_6b_l1c", "Sentinel-2/Landsat top-of-atmosphere (L1C), 6 bands"),
    "csmask-6b-l2a": ("model_6b_l2a", "Sentinel-2/Landsat surface reflectance (L2A), 6 bands"),
    "csmask-4b-l1c": ("model_4b_l1c", "Sentinel-2/Landsat top-of-atmosphere (L1C), 4 bands"),
    "csmask-4b-l2a": ("model_4b_l2a", "Sentinel-2/Landsat surface reflectance (L2A), 4 bands"),
}


def _package_dir() -> Path:
    try:
        import ukis_csmask
    except ImportError:  # pragma: no cover - it is a hard dependency
        raise ModelError("the built-in models need the ukis-csmask package; pip install ukis-csmask") from None
    return Path(ukis_csmask.__file__).parent


def csmask_card(name: str) -> ModelCard:
    stem, what = CSMASK_VARIANTS[name]
    meta_path = _package_dir() / f"{stem}.json"
    try:
        meta = json.loads(meta_path.read_text())
        stats = meta["data"]["dataset_statistics"]
        mean, std = stats["img"]
        bands = stats["band_names"]
    except (OSError, KeyError, ValueError) as exc:
        raise ModelError(f"{meta_path}: unreadable model description ({exc}); reinstall ukis-csmask") from None
    return ModelCard(
        name=name,
        architecture="Unet",
        encoder=meta["model"]["encoder_name"],
        bands=tuple(bands),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        classes=CSMASK_CLASSES,
        # DN are reflectance x 10000 (Sentinel-2 L1C/L2A before baseline 04.00, Landsat C2 rescaled).
        scaling=Scaling(integer_scale=1e-4),
        tile_size=DEFAULT_TILE_SIZE,
        overlap=DEFAULT_OVERLAP,
        resolution_m=30.0,
        description=f"ukis-csmask {meta['model']['version']}: cloud and cloud-shadow U-Net, {what}",
    )


def onnx_path(name: str) -> Path:
    """The ONNX file in ukis-csmask that holds a built-in model's weights."""
    stem, _ = CSMASK_VARIANTS[name]
    path = _package_dir() / f"{stem}.onnx"
    if not path.is_file():
        raise ModelError(f"{path}: the built-in model's weights are missing; reinstall ukis-csmask")
    return path


def csmask_source(name: str) -> str:
    """Names the source of a built-in model's weights: ukis-csmask's version and its ONNX file's size."""
    return f"{metadata.version('ukis-csmask')}-{onnx_path(name).stat().st_size}"


def csmask_weights(name: str) -> dict[str, torch.Tensor]:
    """The smp state dict of a built-in model, from the cache or converted from its ONNX file."""
    source = onnx_path(name)
    cached = cache_dir() / "models" / f"{name}-{csmask_source(name)}.safetensors"
    if cached.is_file():
        try:
            return load_weights(cached)
        except Exception:  # a damaged cache entry is rebuilt, never trusted
            cached.unlink(missing_ok=True)
    tensors = _onnx_initializers(source)
    with contextlib.suppress(OSError):  # a read-only or full cache: the weights serve this process all the same
        save_weights(cached, tensors)
    return tensors


def _onnx_initializers(path: Path) -> dict[str, torch.Tensor]:
    import onnx
    import torch
    from onnx import numpy_helper

    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:
        raise ModelError(f"{path}: not a readable ONNX model ({exc}); reinstall ukis-csmask") from None
    return {
        init.name.removeprefix("model."): torch.from_numpy(numpy_helper.to_array(init).copy())
        for init in graph.initializer
        if init.name.startswith("model.")
    }
