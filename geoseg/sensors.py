"""Sensor presets: which bands a sensor's files hold, in which order, and how their pixel values
become reflectance; and telling the sensor from a file's name where that is possible.

``--sensor naip`` says "band 1 is red, 2 green, 3 blue, 4 nir, and the values are 0-255": geoseg then
matches the model's inputs by these names and scales by the preset's factor instead of the model
card's (a card describes what the model wants; a preset describes what the scene holds).
Band names are STAC ``eo:common_name``s, the vocabulary model cards use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from geoseg.errors import ConfigError


@dataclass(frozen=True)
class Sensor:
    name: str
    description: str
    bands: tuple[str, ...]  # common names, in the order of the sensor's usual multi-band files
    wavelengths_um: tuple[float, ...]  # centre wavelength of each band
    scale: float  # DN -> reflectance: DN * scale + offset
    offset: float = 0.0
    dtype: str = "uint16"  # the pixel type its products come in

    def __post_init__(self) -> None:
        assert len(self.bands) == len(self.wavelengths_um), self.name


_S2 = ("coastal", "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "narrow_nir", "wv", "cirrus",
       "swir16", "swir22")
_S2_UM = (0.443, 0.490, 0.560, 0.665, 0.705, 0.740, 0.783, 0.842, 0.865, 0.945, 1.375, 1.610, 2.190)
_L2A_S2 = tuple(b for b in _S2 if b != "cirrus")
_L2A_UM = tuple(w for b, w in zip(_S2, _S2_UM, strict=True) if b != "cirrus")
_LANDSAT_SCALE, _LANDSAT_OFFSET = 2.75e-5, -0.2  # Collection 2 Level-2 surface reflectance

#: Presets by name (``--sensor``).
SENSORS: dict[str, Sensor] = {s.name: s for s in (
    Sensor("sentinel2-l1c", "Sentinel-2 MSI Level-1C, 13 bands B01..B12 with B8A (TOA reflectance x 10000; "
           "products from 2022 on add 1000: use --scale/--bands for those offsets)", _S2, _S2_UM, 1e-4),
    Sensor("sentinel2-l2a", "Sentinel-2 MSI Level-2A, 12 bands (no B10; BOA reflectance x 10000)", _L2A_S2, _L2A_UM,
           1e-4),
    Sensor("landsat8", "Landsat 8/9 OLI Collection 2 Level-2, SR_B1..SR_B7", ("coastal", "blue", "green", "red", "nir",
           "swir16", "swir22"), (0.443, 0.482, 0.561, 0.655, 0.865, 1.609, 2.201), _LANDSAT_SCALE, _LANDSAT_OFFSET),
    Sensor("landsat7", "Landsat 7 ETM+ Collection 2 Level-2, SR_B1..SR_B5, SR_B7", ("blue", "green", "red", "nir",
           "swir16", "swir22"), (0.485, 0.560, 0.660, 0.835, 1.650, 2.220), _LANDSAT_SCALE, _LANDSAT_OFFSET),
    Sensor("landsat5", "Landsat 4/5 TM Collection 2 Level-2, SR_B1..SR_B5, SR_B7", ("blue", "green", "red", "nir",
           "swir16", "swir22"), (0.485, 0.560, 0.660, 0.830, 1.650, 2.215), _LANDSAT_SCALE, _LANDSAT_OFFSET),
    Sensor("naip", "USDA NAIP aerial imagery, 4 bands red, green, blue, NIR, uint8", ("red", "green", "blue", "nir"),
           (0.635, 0.560, 0.465, 0.835), 1 / 255, dtype="uint8"),
    Sensor("planetscope", "PlanetScope 4-band analytic surface reflectance (x 10000)", ("blue", "green", "red", "nir"),
           (0.490, 0.565, 0.665, 0.865), 1e-4),
    Sensor("planetscope-8b", "PlanetScope SuperDove 8-band analytic surface reflectance (x 10000)",
           ("coastal", "blue", "green_i", "green", "yellow", "red", "rededge", "nir"),
           (0.443, 0.490, 0.531, 0.565, 0.610, 0.665, 0.705, 0.865), 1e-4),
)}


def get_sensor(name: str) -> Sensor:
    try:
        return SENSORS[name]
    except KeyError:
        raise ConfigError(f"unknown sensor {name!r}; choose one of {', '.join(SENSORS)}") from None


#: File-name patterns of products whose sensor (and so band order) is known.
_PRODUCT_NAMES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"(^|_)S2[ABCD]_(.*_)?(MSI)?L1C(_|\.|$)"), "sentinel2-l1c"),
    (re.compile(r"(^|_)S2[ABCD]_(.*_)?(MSI)?L2A(_|\.|$)"), "sentinel2-l2a"),
    (re.compile(r"(^|_)L[CO]0[89]_L2S[PR]"), "landsat8"),
    (re.compile(r"(^|_)LE07_L2S[PR]"), "landsat7"),
    (re.compile(r"(^|_)LT0[45]_L2S[PR]"), "landsat5"),
)


def sensor_from_name(file_name: str) -> Sensor | None:
    """The sensor a product's file name tells (Sentinel-2 and Landsat Collection 2 names), or None."""
    upper = file_name.upper()
    for pattern, name in _PRODUCT_NAMES:
        if pattern.search(upper):
            return SENSORS[name]
    return None


#: Acquisition times in product names: Sentinel-2 ``S2A_MSIL2A_20170216T101021_...`` (or a date after the tile,
#: ``S2A_T33UUU_20170216_...``), Landsat Collection 2 ``LC08_L2SP_190024_20200418_20200822_02_T1`` (the first
#: date is the acquisition, the second the processing).
_ACQUIRED_IN_NAMES: tuple[re.Pattern[str], ...] = (
    re.compile(r"^S2[ABCD]_MSI[A-Z0-9]{3}_(\d{8})T(\d{6})_"),
    re.compile(r"^S2[ABCD]_T\d{2}[A-Z]{3}_(\d{8})(?:T(\d{6}))?_"),
    re.compile(r"^L[COTEM]0\d_L[12][A-Z]{2}_\d{6}_(\d{8})_\d{8}_"),
)
#: Metadata tags that hold an acquisition (GDAL's Sentinel-2 and Landsat drivers, STAC-minded writers).
_ACQUIRED_TAGS = ("ACQUISITION_DATETIME", "ACQUISITIONDATETIME", "DATETIME_ACQUIRED", "DATE_ACQUIRED",
                  "ACQUISITION_DATE", "SENSING_TIME", "PRODUCT_START_TIME", "DATATAKE_1_DATATAKE_SENSING_START")


def acquisition_time(file_name: str, tags: dict[str, str]) -> tuple[datetime, str] | None:
    """When the scene was acquired (UTC), and what says so (``"tag NAME"`` or ``"file name"``), from its
    metadata tags or its product name; None where neither tells. A tag wins over the name."""
    upper = {k.upper(): v for k, v in tags.items()}
    for key in _ACQUIRED_TAGS:
        text = upper.get(key, "").strip()
        if not text:
            continue
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            continue
        return (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC), f"tag {key}"
    for pattern in _ACQUIRED_IN_NAMES:
        found = pattern.match(file_name)
        if found:
            day, clock = found.group(1), (found.group(2) if found.lastindex and found.lastindex > 1 else None)
            try:
                return datetime.strptime(day + (clock or "000000"), "%Y%m%d%H%M%S").replace(tzinfo=UTC), "file name"
            except ValueError:
                return None
    return None
