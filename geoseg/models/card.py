"""The model card: everything geoseg needs to know to feed a model and to label its output.

One frozen, typed object per model. It is written as ``config.json`` beside the weights of a
model folder, so a folder describes itself (as smp's hub checkpoints do).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import ModelError

#: Class values 0..254 fit a uint8 mask whose 255 is nodata.
MAX_CLASSES = 255


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its value in the mask, a name, and an RGB colour for the colour table."""

    value: int
    name: str
    color: tuple[int, int, int]


@dataclass(frozen=True)
class Scaling:
    """How raw pixel values become the model's physical input (e.g. DN -> reflectance).

    Integer scenes are multiplied by ``integer_scale`` and shifted by ``integer_offset``
    (Sentinel-2 L1C: DN / 10000); float scenes are taken as already scaled, times ``float_scale``.
    """

    integer_scale: float = 1.0
    integer_offset: float = 0.0
    float_scale: float = 1.0

    def factors(self, dtype: np.dtype | str) -> tuple[float, float]:
        """``(scale, offset)`` for a scene of ``dtype``."""
        if np.dtype(dtype).kind == "f":
            return self.float_scale, 0.0
        return self.integer_scale, self.integer_offset


@dataclass(frozen=True)
class ModelCard:
    """A segmentation model described for geoseg (see module docstring)."""

    name: str
    architecture: str  # an smp class name: "Unet", "UnetPlusPlus", ...
    encoder: str  # an smp encoder name: "efficientnet-b4", "resnet34", "vgg16", ...
    bands: tuple[str, ...]  # model inputs in order, by common name
    mean: tuple[float, ...]  # per input band, after scaling
    std: tuple[float, ...]
    classes: tuple[ClassInfo, ...]
    scaling: Scaling = field(default_factory=Scaling)
    tile_size: int = 512
    overlap: int = 64
    resolution_m: float | None = None  # ground resolution the model was trained at
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    description: str = ""
    #: The smp constructor's arguments as smp's own ``config.json`` holds them (``_model_class``,
    #: ``encoder_name``, ...), for a model package (:mod:`geoseg.models.package`); None for a card of
    #: the older layout, whose network is ``architecture`` + ``encoder`` + ``decoder_channels``.
    network: dict[str, Any] | None = field(default=None, hash=False)
    #: Where the card's mean and std and scaling came from, for ``geoseg models show`` (free text).
    provenance: str = ""

    def __post_init__(self) -> None:
        n = len(self.bands)
        if len(self.mean) != n or len(self.std) != n:
            raise ModelError(f"model card {self.name!r}: {n} bands but {len(self.mean)} means, "
                             f"{len(self.std)} stds; give one of each per band")
        if any(s <= 0 for s in self.std):
            raise ModelError(f"model card {self.name!r}: every std must be > 0, got {self.std}")
        values = [c.value for c in self.classes]
        if values != list(range(len(values))) or not values:
            raise ModelError(f"model card {self.name!r}: class values must be 0..N-1 in order, got {values}")
        if len(values) > MAX_CLASSES:
            raise ModelError(f"model card {self.name!r}: {len(values)} classes, but masks are uint8 with 255 as "
                             f"nodata, so at most {MAX_CLASSES} classes (uint16 masks are not supported yet)")

    @property
    def in_channels(self) -> int:
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_scaling(self, scale: float | None) -> ModelCard:
        """A copy whose inputs are multiplied by ``scale`` whatever their dtype (the ``--scale`` flag)."""
        if scale is None:
            return self
        return replace(self, scaling=Scaling(integer_scale=scale, integer_offset=0.0, float_scale=scale))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        data = dict(data)
        try:
            data["classes"] = tuple(
                ClassInfo(int(c["value"]), str(c["name"]), tuple(c["color"])) for c in data["classes"]
            )
            data["scaling"] = Scaling(**data.get("scaling", {}))
            for key in ("bands", "mean", "std", "decoder_channels"):
                if key in data:
                    data[key] = tuple(data[key])
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise ModelError(f"model card is incomplete or has an unknown field ({exc}); "
                             f"see geoseg.models.card.ModelCard for the fields") from None

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{path}: cannot read the model card ({exc}); it must be a JSON model card") from None


#: Architectures whose constructor takes ``decoder_channels`` (a card of the older layout sets it).
_WITH_DECODER_CHANNELS = {"Unet", "UnetPlusPlus", "MAnet"}


def network_config(card: ModelCard) -> dict[str, Any]:
    """smp's constructor arguments for ``card``, with ``_model_class`` (smp's ``config.json`` keys)."""
    if card.network is not None:
        return dict(card.network)
    config: dict[str, Any] = {"_model_class": card.architecture, "encoder_name": card.encoder,
                              "encoder_weights": None, "in_channels": card.in_channels,
                              "classes": card.num_classes}
    if card.architecture in _WITH_DECODER_CHANNELS:
        config["decoder_channels"] = list(card.decoder_channels)
    return config
