"""``geoseg models import``: a model package from weights made elsewhere.

Sources: an smp folder (``save_pretrained``), a geoseg folder of the older layout, a safetensors file,
a pickled state dict or a TorchGeo / Lightning ``.ckpt`` (``model.`` prefix, hyper-parameters naming
the architecture and encoder), or a TorchScript archive. Pickled and TorchScript sources need
``trust_checkpoint`` and are read with ``torch.load(weights_only=True)`` / ``torch.jit.load``; the
package written is safetensors only. What the weights cannot say (band names, class names, the
normalisation) the caller gives.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from geoseg.config import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE
from geoseg.errors import ConfigError, ModelError
from geoseg.models.architectures import ARCHITECTURES
from geoseg.models.card import ClassInfo, ModelCard, Scaling, check_class_name, class_colour, parse_colour
from geoseg.models.package import SMP_CONFIG, WEIGHTS_FILE, folder_layout, read_card, save_package
from geoseg.models.registry import weights_file
from geoseg.models.weights import read_checkpoint, read_tensors, read_torchscript, state_dict_of
from geoseg.sensors import get_sensor
from geoseg.textfiles import load_yaml, read_text

#: TorchGeo's ``SemanticSegmentationTask(model=...)`` names, and lower-case smp names, to smp classes.
_ARCHITECTURE_ALIASES = {"deeplabv3+": "DeepLabV3Plus", "unet++": "UnetPlusPlus",
                         **{name.lower(): name for name in ARCHITECTURES}}



@dataclass
class Source:
    """What a source file or folder told: its tensors, and the network / card it names, if any."""

    tensors: dict[str, torch.Tensor]
    network: dict[str, Any]  # smp constructor arguments known so far (``_model_class``, ``encoder_name`` ...)
    card: ModelCard | None = None  # a geoseg card found in the source (older layout, or a package)
    kind: str = ""


def architecture_name(name: str) -> str:
    try:
        return _ARCHITECTURE_ALIASES[name.lower()]
    except KeyError:
        raise ModelError(f"unknown architecture {name!r}; choose one of {', '.join(sorted(ARCHITECTURES))}") from None


def read_source(source: Path, trust_checkpoint: bool) -> Source:
    """Tensors and what is known of the network from any supported source."""
    if source.is_dir():
        layout = folder_layout(source)
        if layout == "package" or layout == "card-only":
            card = read_card(source)
            tensors = read_tensors(weights_file(source, trust_checkpoint), trust_checkpoint)
            network = dict(card.network or {"_model_class": card.architecture, "encoder_name": card.encoder})
            return Source(tensors, network, card, f"geoseg folder ({layout})")
        config = json.loads((source / SMP_CONFIG).read_text())
        weights = source / WEIGHTS_FILE
        if not weights.is_file():
            pickled = source / "pytorch_model.bin"
            if not pickled.is_file():
                raise ModelError(f"{source}: smp folder without {WEIGHTS_FILE}; save it with smp's save_pretrained")
            weights = pickled
        return Source(read_tensors(weights, trust_checkpoint), config, None, "smp folder")
    if not source.is_file():
        raise ModelError(f"{source}: no such file or folder")
    if source.suffix == ".safetensors":
        return Source(read_tensors(source), {}, None, "safetensors file")
    if _is_torchscript(source):
        return Source(read_torchscript(source, trust_checkpoint), {}, None, "TorchScript archive")
    obj = read_checkpoint(source, trust_checkpoint)
    network: dict[str, Any] = {}
    kind = "state dict"
    if isinstance(obj, dict) and isinstance(obj.get("hyper_parameters"), dict):
        kind = "Lightning checkpoint"
        network = _network_from_hparams(obj["hyper_parameters"])
    return Source(state_dict_of(obj, source), network, None, kind)


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())


def _network_from_hparams(hp: dict[str, Any]) -> dict[str, Any]:
    """smp arguments from a TorchGeo / Lightning module's hyper-parameters."""
    network: dict[str, Any] = {}
    model = hp.get("model") or hp.get("arch") or hp.get("architecture")
    if isinstance(model, str):
        network["_model_class"] = architecture_name(model)
    encoder = hp.get("backbone") or hp.get("encoder") or hp.get("encoder_name")
    if isinstance(encoder, str):
        network["encoder_name"] = encoder
    for ours, theirs in (("in_channels", "in_channels"), ("classes", "num_classes"), ("classes", "classes")):
        if isinstance(hp.get(theirs), int):
            network[ours] = hp[theirs]
    return network


def infer_shape(tensors: dict[str, torch.Tensor]) -> tuple[int | None, int | None]:
    """(input bands, classes) read off the weights: the first encoder convolution and the segmentation head."""
    bands = next((v.shape[1] for k, v in tensors.items() if k.startswith("encoder.") and v.ndim == 4), None)
    heads = [v for k, v in tensors.items() if k.startswith("segmentation_head.") and k.endswith("weight")]
    return (int(bands) if bands is not None else None), (int(heads[-1].shape[0]) if heads else None)


#: The largest class table geoseg reads (255 classes with names and colours take a few kB).
MAX_CLASS_FILE_BYTES = 2**20


def load_class_spec(spec: str | None) -> list | dict | None:
    """``--classes`` as written: a YAML/JSON file (a list, or a mapping of value to name) or comma-separated
    names; None when not given."""
    if spec is None:
        return None
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        try:
            data = load_yaml(read_text(path, MAX_CLASS_FILE_BYTES, "class table"), path, "class table")
        except yaml.YAMLError as exc:
            first = (str(exc).splitlines() or ["not valid YAML"])[0]
            raise ConfigError(f"{path}: cannot read the classes ({first}); give a YAML list of names") from None
        if not isinstance(data, list | dict):
            raise ConfigError(f"{path}: give a list of names or a mapping of label value to name")
        return data
    return [n.strip() for n in spec.split(",")]


def parse_classes(spec: str | None) -> tuple[ClassInfo, ...] | None:
    """``--classes``: a YAML/JSON file (a list of names, a list of {name, color}, or {value: name}) or
    comma-separated names; values are 0..N-1 in order, colours from :func:`class_colour` where not given."""
    data = load_class_spec(spec)
    if data is None:
        return None
    if isinstance(data, dict):
        if not all(str(k).isdigit() for k in data) or sorted(int(k) for k in data) != list(range(len(data))):
            raise ConfigError(f"{spec}: class values must be 0..N-1, got {sorted(map(str, data))}")
        data = [data[k] for k in sorted(data, key=int)]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"{spec}: give the classes as a list of names (YAML/JSON) or comma-separated names")
    classes = []
    for i, item in enumerate(data):
        name, color = (item.get("name"), item.get("color")) if isinstance(item, dict) else (item, None)
        if not name:
            raise ConfigError(f"{spec}: class {i} has no name")
        try:
            rgb = parse_colour(color) if color is not None else class_colour(str(name), i)
            classes.append(ClassInfo(i, check_class_name(str(name)), rgb))
        except (ValueError, ModelError) as exc:
            raise ConfigError(f"{spec}: class {i}: {exc}") from None
    return tuple(classes)


def import_model(source: Path, output: Path, *, bands: Sequence[str] | None = None,
                 classes: tuple[ClassInfo, ...] | None = None, architecture: str | None = None,
                 encoder: str | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 scale: float | None = None, tile_size: int | None = None, overlap: int | None = None,
                 resolution_m: float | None = None, name: str | None = None, trust_checkpoint: bool = False,
                 overwrite: bool = False, sensor: str | None = None) -> ModelCard:
    """Write a model package at ``output`` from ``source``; what the source does not say comes from the
    arguments (the arguments win where both do). ``sensor`` (a preset's name) gives the bands and the
    scaling where ``bands`` and ``scale`` do not. Returns the package's card."""
    if sensor is not None:
        preset = get_sensor(sensor)
        bands = bands if bands is not None else preset.bands
        scale = scale if scale is not None else preset.scale
    found = read_source(source, trust_checkpoint)
    network = dict(found.network)
    if architecture:
        network["_model_class"] = architecture_name(architecture)
    if encoder:
        network["encoder_name"] = encoder
    if "_model_class" not in network or "encoder_name" not in network:
        raise ModelError(f"{source}: a {found.kind} does not say which network it is; pass --architecture "
                         f"(e.g. Unet) and --encoder (e.g. resnet34)")
    in_bands, n_classes = infer_shape(found.tensors)
    base = found.card
    band_names = tuple(bands) if bands else (base.bands if base else None)
    if band_names is None:
        raise ConfigError(f"{source}: name the model's {in_bands or 'N'} input bands in order with --bands "
                          f"(e.g. red,green,blue,nir) or --sensor")
    class_list = classes or (base.classes if base else None)
    if class_list is None:
        raise ConfigError(f"{source}: name the model's {n_classes or 'N'} classes with --classes "
                          f"(comma-separated names or a YAML file)")
    if in_bands is not None and in_bands != len(band_names):
        raise ConfigError(f"{source}: the weights take {in_bands} bands but --bands names {len(band_names)} "
                          f"({', '.join(band_names)})")
    if n_classes is not None and n_classes != len(class_list):
        raise ConfigError(f"{source}: the weights give {n_classes} classes but --classes names {len(class_list)}")
    network.update(in_channels=len(band_names), classes=len(class_list), encoder_weights=None)
    n = len(band_names)
    given_stats = mean is not None or std is not None
    card = ModelCard(
        name=name or output.name, architecture=network["_model_class"], encoder=network["encoder_name"],
        bands=band_names,
        mean=tuple(mean) if mean is not None else (base.mean if base else (0.0,) * n),
        std=tuple(std) if std is not None else (base.std if base else (1.0,) * n),
        classes=class_list,
        scaling=Scaling(integer_scale=scale) if scale is not None else (base.scaling if base else Scaling()),
        tile_size=tile_size or (base.tile_size if base else DEFAULT_TILE_SIZE),
        overlap=overlap if overlap is not None else (base.overlap if base else DEFAULT_OVERLAP),
        resolution_m=resolution_m if resolution_m is not None else (base.resolution_m if base else None),
        description=base.description if base else f"imported from {source.name}",
        network=network,
        provenance=(f"imported from {source} ({found.kind})"
                    + ("" if given_stats or base else "; no normalisation given: mean 0, std 1")),
    )
    return save_package(output, card, found.tensors, overwrite=overwrite)
