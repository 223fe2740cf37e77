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

from geoseg.config import DEFAULT_OVERLAP, DEFAULT_TILE_SIZE, MAX_TILE_SIZE, is_finite_number
from geoseg.errors import ModelError

#: Class values 0..254 fit a uint8 mask whose 255 is nodata.
MAX_CLASSES = 255


#: The longest class name a card may hold (it goes into tags, the QGIS style and the legend).
MAX_CLASS_NAME = 200


def parse_colour(value: object) -> tuple[int, int, int]:
    """An RGB colour from ``[r, g, b]`` (a list or tuple of three whole numbers in 0..255); ``ValueError``
    saying what is wrong otherwise."""
    if (not isinstance(value, list | tuple) or len(value) != 3
            or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value)):
        raise ValueError(f"colour {value!r} must be three whole numbers 0..255, e.g. [34, 139, 34]")
    return (int(value[0]), int(value[1]), int(value[2]))


def check_class_name(name: object) -> str:
    """A class name that fits a tag, an XML style and a terminal: printable text, 1..200 characters."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_CLASS_NAME or not name.isprintable():
        raise ValueError(f"class name {name!r} must be printable text of 1 to {MAX_CLASS_NAME} characters, without "
                         f"control characters")
    return name


@dataclass(frozen=True)
class ClassInfo:
    """One output class: its value in the mask, a name, and an RGB colour for the colour table."""

    value: int
    name: str
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        try:
            check_class_name(self.name)
            parse_colour(self.color)
        except ValueError as exc:
            raise ModelError(f"class {self.value}: {exc}") from None


@dataclass(frozen=True)
class Scaling:
    """How raw pixel values become the model's physical input (e.g. DN -> reflectance).

    Integer scenes are multiplied by ``integer_scale`` and shifted by ``integer_offset``
    (Sentinel-2 L1C: DN / 10000); float scenes are taken as already scaled, times ``float_scale``.
    """

    integer_scale: float = 1.0
    integer_offset: float = 0.0
    float_scale: float = 1.0

    def __post_init__(self) -> None:
        for name in ("integer_scale", "integer_offset", "float_scale"):
            value = getattr(self, name)
            if not is_finite_number(value):
                raise ModelError(f"scaling: {name} must be a finite number, got {value!r}")

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
    tile_size: int = DEFAULT_TILE_SIZE
    overlap: int = DEFAULT_OVERLAP
    resolution_m: float | None = None  # ground resolution the model was trained at
    decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16)
    description: str = ""
    #: The smp constructor's arguments as smp's own ``config.json`` holds them (``_model_class``,
    #: ``encoder_name``, ...), for a model package (:mod:`geoseg.models.package`); None for a card of
    #: the older layout, whose network is ``architecture`` + ``encoder`` + ``decoder_channels``.
    network: dict[str, Any] | None = field(default=None, hash=False)
    #: Where the card's mean and std and scaling came from, for ``geoseg models show`` (free text).
    provenance: str = ""
    #: For a trained package: the value each class had in the training labels, in class order. Masks hold class
    #: values 0..N-1 (255 is nodata, and classes must fit a uint8); this says which label value each became.
    label_values: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        n = len(self.bands)
        if len(self.mean) != n or len(self.std) != n:
            raise ModelError(f"model card {self.name!r}: {n} bands but {len(self.mean)} means, "
                             f"{len(self.std)} stds; give one of each per band")
        for key in ("mean", "std"):
            if not all(is_finite_number(v) for v in getattr(self, key)):
                raise ModelError(f"model card {self.name!r}: every {key} must be a finite number, got "
                                 f"{getattr(self, key)}")
        if any(s <= 0 for s in self.std):
            raise ModelError(f"model card {self.name!r}: every std must be > 0, got {self.std}")
        for key in ("tile_size", "overlap"):
            if isinstance(getattr(self, key), bool) or not isinstance(getattr(self, key), int):
                raise ModelError(f"model card {self.name!r}: {key} must be a whole number, got {getattr(self, key)!r}")
        if not 32 <= self.tile_size <= MAX_TILE_SIZE or not 0 <= self.overlap < self.tile_size:
            raise ModelError(f"model card {self.name!r}: tile_size {self.tile_size} must lie in 32..{MAX_TILE_SIZE} "
                             f"and overlap {self.overlap} in 0..tile_size-1")
        if self.resolution_m is not None and not (is_finite_number(self.resolution_m) and self.resolution_m > 0):
            raise ModelError(f"model card {self.name!r}: resolution_m must be a positive number, got "
                             f"{self.resolution_m!r}")
        values = [c.value for c in self.classes]
        if values != list(range(len(values))) or not values:
            raise ModelError(f"model card {self.name!r}: class values must be 0..N-1 in order, got {values}")
        if self.label_values is not None and len(self.label_values) != len(values):
            raise ModelError(f"model card {self.name!r}: {len(self.label_values)} label values for {len(values)} "
                             f"classes; give one per class")
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
                ClassInfo(int(c["value"]), c["name"], parse_colour(c["color"])) for c in data["classes"]
            )
            data["scaling"] = Scaling(**data.get("scaling", {}))
            if data.get("label_values") is not None:
                data["label_values"] = tuple(int(v) for v in data["label_values"])
            for key in ("bands", "mean", "std", "decoder_channels"):
                if key in data:
                    data[key] = tuple(data[key])
            return cls(**data)
        except ModelError:
            raise
        except ValueError as exc:
            raise ModelError(f"model card {data.get('name', '')!r}: {exc}; fix the card") from None
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


#: Colours for classes the caller gives without colours (distinct, readable on a map).
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))


#: Colours for common land-cover class names (word in the name -> RGB), close to ESA WorldCover's legend,
#: so that a model trained on "water, forest, farm ..." opens in a GIS looking like a land-cover map.
LAND_COVER_COLOURS: tuple[tuple[tuple[str, ...], tuple[int, int, int]], ...] = (
    (("water", "river", "lake", "sea", "ocean"), (0, 100, 200)),
    (("wetland", "marsh", "swamp", "bog", "mangrove"), (0, 150, 160)),
    (("forest", "tree", "wood"), (0, 100, 0)),
    (("scrub", "shrub", "bush", "heath"), (255, 187, 34)),
    (("meadow", "pasture", "hay"), (190, 230, 100)),
    (("grass", "park", "lawn"), (255, 255, 76)),
    (("farm", "crop", "agri", "arable", "field", "orchard", "vineyard"), (240, 150, 255)),
    (("residential", "urban", "built", "building", "industrial", "commercial", "road", "settlement"), (250, 0, 0)),
    (("bare", "sand", "rock", "soil", "quarry"), (180, 180, 180)),
    (("snow", "ice", "glacier"), (240, 240, 240)),
    (("cloud",), (255, 255, 255)),
    (("shadow",), (90, 70, 140)),
)


def class_colour(name: str, index: int) -> tuple[int, int, int]:
    """A colour for class ``name``: a land-cover colour when the name says what it is, else :data:`PALETTE`'s."""
    lower = name.lower()
    for words, rgb in LAND_COVER_COLOURS:
        if any(w in lower for w in words):
            return rgb
    return PALETTE[index % len(PALETTE)]
