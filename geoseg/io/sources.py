"""The parts of a band stack (:mod:`geoseg.io.stack`): a band source, a stack, and the tags a stack carries. Where
GDAL reads an href (``https://`` through ``/vsicurl/``, ``s3://`` through ``/vsis3/``) is
:func:`geoseg.io.names.gdal_href`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: The most bytes of a STAC Item (or catalog, or a product's metadata file) geoseg reads.
ITEM_BYTES = 16 * 2**20
#: Tags a stack carries for the run (:mod:`geoseg.io.stack`'s docstring).
SCALE_TAG, OFFSET_TAG, ITEM_TAG, PLATFORM_TAG = "GEOSEG_SCALE", "GEOSEG_OFFSET", "GEOSEG_STAC_ITEM", "GEOSEG_PLATFORM"
#: The Item's id, and the ``updated`` times the Item and its assets carry (a changed one rewrites the stack).
ITEM_ID_TAG, UPDATED_TAG = "GEOSEG_STAC_ITEM_ID", "GEOSEG_STAC_UPDATED"


@dataclass(frozen=True)
class BandSource:
    """One band of a stack: where GDAL reads it, what it is called, and how its values scale."""

    href: str
    name: str
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    band: int = 1  # the band of ``href`` (a stack of one multi-band remote raster reads each of its bands)


@dataclass(frozen=True)
class Stack:
    """Per-band sources that make one scene; ``name`` names the mask (an Item's id, the files' common prefix)."""

    sources: tuple[BandSource, ...]
    name: str
    tags: dict[str, str]
    folder: Path  # where the mask goes by default: beside the Item or the first file
