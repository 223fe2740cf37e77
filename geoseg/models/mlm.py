"""A model described for catalogues: a STAC Item with the Machine Learning Model extension (MLM v1.5.0).

``geoseg models show MODEL --stac`` prints it; :func:`mlm_item` builds it from the card alone, without
loading weights or importing torch. What it says, from the card:

- ``mlm:input``: one input of the card's bands in order, patches of ``tile_size`` px (``[-1, bands, tile,
  tile]``, float32), standardised per band. MLM's ``value_scaling`` is a list of steps per band; geoseg's
  scaling (integer pixels times a factor plus an offset) and its z-score are written as one z-score on the
  integer pixels themselves (mean ``(mean - offset) / factor``, stddev ``std / factor``: the same numbers).
  Float pixels are scaled by ``float_scale`` first; the input's description says so.
- ``mlm:output``: the class scores (``[-1, classes, tile, tile]``) with ``classification:classes`` (value,
  name, colour). geoseg's masks hold the argmax, with 255 as nodata.
- ``bands`` (STAC 1.1 core, in the properties and on the weights asset): the band names MLM's input refers
  to; ``gsd`` where the card gives the
  resolution the model was trained at; ``mlm:hyperparameters``: smp's constructor arguments.
- assets: the weights (role ``mlm:model``, with its ``mlm:artifact_type``), geoseg's card and smp's
  config, by absolute path.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import struct
from importlib import metadata
from pathlib import Path
from typing import Any

from geoseg.errors import ModelError
from geoseg.models.card import ModelCard, network_config

MLM = "https://stac-extensions.github.io/mlm/v1.5.0/schema.json"
CLASSIFICATION = "https://stac-extensions.github.io/classification/v1.1.0/schema.json"

#: smp class names as the literature writes them (``mlm:architecture``); others are given as smp names them.
ARCHITECTURES = {"Unet": "U-Net", "UnetPlusPlus": "U-Net++", "DeepLabV3": "DeepLabV3", "DeepLabV3Plus": "DeepLabV3+",
                 "FPN": "FPN", "PSPNet": "PSPNet", "Linknet": "LinkNet", "MAnet": "MA-Net", "PAN": "PAN",
                 "UPerNet": "UPerNet", "Segformer": "SegFormer", "DPT": "DPT"}

#: MLM's pattern for ``mlm:framework_version`` (semantic versions).
_SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
#: MLM's pattern for ``mlm:name``.
_NAME = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.\-\s]+[a-zA-Z0-9]$")


def mlm_item(card: ModelCard, model: str | Path) -> dict[str, Any]:
    """The STAC MLM Item of ``card``, the card of ``model`` (a built-in name, a package folder or an ONNX file)."""
    assets, framework = _assets(model)
    weights = Path(assets["model"]["href"])
    made = dt.datetime.fromtimestamp(weights.stat().st_mtime, dt.UTC).replace(microsecond=0)
    net = network_config(card)
    tile = card.tile_size
    properties: dict[str, Any] = {
        "datetime": made.isoformat().replace("+00:00", "Z"),
        "title": card.name,
        "description": card.description or f"geoseg segmentation model {card.name}",
        "mlm:name": _mlm_name(card.name),
        "mlm:architecture": ARCHITECTURES.get(net["_model_class"], net["_model_class"]),
        "mlm:tasks": ["semantic-segmentation"],
        "mlm:framework": framework,
        "mlm:accelerator": "cuda",
        "mlm:accelerator_constrained": False,
        "mlm:accelerator_summary": "a CUDA GPU through PyTorch, or the CPU (PyTorch, ONNX Runtime, OpenVINO)",
        "mlm:hyperparameters": net,
        "mlm:input": [_input(card)],
        "mlm:output": [{
            "name": "class scores",
            "description": f"one score per class and pixel; geoseg writes the highest-scoring class (0 to "
                           f"{card.num_classes - 1}) as a uint8 mask with 255 as nodata",
            "tasks": ["semantic-segmentation"],
            "result": {"shape": [-1, card.num_classes, tile, tile], "dim_order": ["batch", "class", "height", "width"],
                       "data_type": "float32"},
            "classification:classes": [{"value": c.value, "name": c.name, "description": c.name,
                                        "color_hint": "".join(f"{v:02X}" for v in c.color)} for c in card.classes],
            "post_processing_function": None,
        }],
        "bands": _bands(card),
    }
    assets["model"]["bands"] = _bands(card)  # STAC 1.1 allows an Item's bands only where an asset has bands
    version = _framework_version(framework)
    if version:
        properties["mlm:framework_version"] = version
    parameters = _parameters(weights)
    if parameters is not None:
        properties["mlm:total_parameters"] = parameters
    if card.resolution_m:
        properties["gsd"] = card.resolution_m
    return {
        "type": "Feature",
        "stac_version": "1.1.0",
        "stac_extensions": [MLM, CLASSIFICATION],
        "id": card.name,
        "geometry": None,
        "properties": properties,
        "links": [],
        "assets": assets,
    }


def _bands(card: ModelCard) -> list[dict[str, str]]:
    return [{"name": b, "description": f"input {i + 1}: {b}"} for i, b in enumerate(card.bands)]


def _input(card: ModelCard) -> dict[str, Any]:
    factor, offset = card.scaling.integer_scale, card.scaling.integer_offset
    scaling = [{"type": "z-score", "mean": (m - offset) / factor, "stddev": s / factor}
               for m, s in zip(card.mean, card.std, strict=True)]
    return {
        "name": "bands",
        "bands": list(card.bands),
        "description": (f"patches of {card.tile_size} px, {card.overlap} px overlap, blended; integer pixels are "
                        f"standardised as value_scaling says; float pixels are taken as reflectance times "
                        f"{card.scaling.float_scale:g}, then standardised with mean {list(card.mean)} and std "
                        f"{list(card.std)}"),
        "input": {"shape": [-1, card.in_channels, card.tile_size, card.tile_size],
                  "dim_order": ["batch", "bands", "height", "width"], "data_type": "float32"},
        "value_scaling": scaling,
        "resize_type": None,
    }


def _assets(model: str | Path) -> tuple[dict[str, dict[str, Any]], str]:
    """The model's files as STAC assets, and the framework that runs its weights."""
    from geoseg.models.builtin import CSMASK_VARIANTS, onnx_path
    from geoseg.models.onnxfile import is_onnx_model
    from geoseg.models.package import CARD_FILE, SMP_CONFIG, WEIGHTS_FILE
    from geoseg.models.registry import PICKLE_FILES

    name = str(model)
    if name in CSMASK_VARIANTS:  # ukis-csmask's ONNX file, whose initialisers geoseg loads into an smp network
        return {"model": _weights_asset(onnx_path(name), "onnx", "application/octet-stream; application=onnx",
                                        "ukis-csmask's ONNX file; geoseg loads its weights into the smp network")}, \
            "PyTorch"
    if is_onnx_model(name):
        return {"model": _weights_asset(Path(name), "onnx", "application/octet-stream; application=onnx",
                                        "the ONNX model")}, "ONNX"
    folder = Path(name)
    found = [folder / f for f in (WEIGHTS_FILE, *PICKLE_FILES) if (folder / f).is_file()]
    if not found:
        raise ModelError(f"{folder}: no weights file ({WEIGHTS_FILE} or {', '.join(PICKLE_FILES)}); a model "
                         f"package holds its weights beside its card")
    weights = found[0]
    kind = ("safetensors.torch.save_file", "application/octet-stream; application=safetensors") \
        if weights.name == WEIGHTS_FILE else ("torch.save", "application/octet-stream; application=pytorch")
    assets = {"model": _weights_asset(weights, *kind, "the network's weights")}
    for key, file, title in (("card", CARD_FILE, "geoseg's model card"), ("config", SMP_CONFIG,
                                                                           "smp's constructor arguments")):
        if (folder / file).is_file():
            assets[key] = {"href": str((folder / file).resolve()), "type": "application/json", "roles": ["metadata"],
                           "title": title}
    return assets, "PyTorch"


def _weights_asset(path: Path, artifact: str, media: str, title: str) -> dict[str, Any]:
    return {"href": str(path.resolve()), "type": media, "title": title, "roles": ["mlm:model", "mlm:weights", "data"],
            "mlm:artifact_type": artifact}


def _mlm_name(name: str) -> str:
    """``name`` within MLM's pattern (a letter first, letters, digits, ``_.-`` and spaces, a letter or digit last)."""
    if _NAME.match(name):
        return name
    fixed = re.sub(r"[^a-zA-Z0-9_.\-\s]", "-", name).strip("_.- ")
    fixed = fixed if fixed[:1].isalpha() else f"model-{fixed}"
    return fixed if _NAME.match(fixed) else "geoseg-model"


def _framework_version(framework: str) -> str | None:
    """The installed version of the package that runs the weights, where it is a semantic version."""
    try:
        version = metadata.version("torch" if framework == "PyTorch" else "onnxruntime")
    except metadata.PackageNotFoundError:
        return None
    return version if _SEMVER.match(version) else None


def _parameters(weights: Path) -> int | None:
    """The number of weights in a safetensors file, from its header (no tensor is read)."""
    if weights.suffix != ".safetensors":
        return None
    try:
        with weights.open("rb") as f:
            size = struct.unpack("<Q", f.read(8))[0]
            if size > 100_000_000:
                return None
            header = json.loads(f.read(size))
        return sum(math.prod(v["shape"]) for k, v in header.items() if k != "__metadata__")
    except (OSError, ValueError, KeyError, TypeError, struct.error):
        return None
