"""Class statistics of a mask: pixels, area (ha) and share of the valid area, whole or per region.

:func:`class_table` turns pixel counts into the table the run summary, ``--json`` and
``geoseg export stats`` print. :func:`mask_stats` counts a finished mask strip by strip (any size).
On a mask in geographic coordinates each row of pixels has its own area (a pixel shrinks towards the
poles), computed on the authalic sphere; on a projected mask every pixel has the same area.
:func:`zonal_stats` counts the mask's classes inside each polygon of a regions layer (reprojected to
the mask's CRS), reading only the windows the polygon covers.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from rasterio.warp import transform_geom
from rasterio.windows import Window, from_bounds

from geoseg.errors import ConfigError, SceneError, reason
from geoseg.export.legend import read_legend
from geoseg.models.card import ClassInfo

#: Radius of the authalic sphere (same surface as the WGS84 ellipsoid), metres.
AUTHALIC_RADIUS_M = 6_371_007.2
#: Rows read at a time.
STRIP_ROWS = 1024
#: ... and at most this many pixels per window, whatever the mask's width.
STRIP_PIXELS = 16 * 2**20


@dataclass(frozen=True)
class ClassStat:
    """One class of a mask (or of one region of it)."""

    value: int
    name: str
    pixels: int
    area_ha: float | None  # None without a CRS: pixels have no ground area then
    share: float  # of the valid (classified) area


def class_table(classes: tuple[ClassInfo, ...], pixels: np.ndarray, area_m2: np.ndarray) -> list[ClassStat]:
    """Statistics of each class from its pixel count and area (both indexed by class value); where the areas
    are not known (NaN: a grid without a CRS), ``area_ha`` is None and shares are of the valid pixels."""
    known = bool(np.isfinite([area_m2[c.value] for c in classes]).all())
    weights = area_m2 if known else pixels
    valid = float(sum(weights[c.value] for c in classes))
    return [ClassStat(c.value, c.name, int(pixels[c.value]), round(float(area_m2[c.value]) / 1e4, 4) if known else None,
                      round(float(weights[c.value]) / valid, 6) if valid else 0.0) for c in classes]


def pixel_area_m2(crs: CRS | None, transform: Affine, rows: np.ndarray | None = None) -> np.ndarray | float:
    """Ground area of one pixel in m²: one figure on a projected grid, one per row (``rows``, 0-based) on a
    geographic grid, and NaN without a CRS (pixel units are not metres: no area is better than a wrong one)."""
    det = abs(transform.a * transform.e - transform.b * transform.d)
    if crs is None:
        return math.nan
    if not crs.is_geographic:
        unit = crs.linear_units_factor[1] if crs.is_projected else 1.0
        return det * unit**2
    if rows is None:
        raise ValueError("a geographic grid needs the rows whose pixel area is asked for")
    # A pixel between latitudes phi0 and phi1, dlon wide: R^2 * dlon * |sin(phi0) - sin(phi1)|.
    top = transform.f + rows * transform.e
    phi0, phi1 = np.radians(top), np.radians(top + transform.e)
    return AUTHALIC_RADIUS_M**2 * math.radians(abs(transform.a)) * np.abs(np.sin(phi0) - np.sin(phi1))


def mask_stats(mask: Path) -> tuple[list[ClassStat], dict[str, Any]]:
    """Class statistics of a whole mask, and what it is (path, size, CRS, nodata pixels)."""
    with _open(mask) as ds:
        classes = read_legend(ds)
        pixels, area = np.zeros(65536, np.int64), np.zeros(65536, np.float64)
        for window, values in _strips(ds, 0, ds.height, 0, ds.width):
            _count(values, ds, window, pixels, area)
        nodata = int(pixels[int(ds.nodata)]) if ds.nodata is not None else 0
        about = {"mask": str(mask), "width": ds.width, "height": ds.height,
                 "crs": ds.crs.to_string() if ds.crs else None, "nodata_pixels": nodata}
    return class_table(classes, pixels, area), about


def zonal_stats(mask: Path, regions: Path, by: str | None) -> list[dict[str, Any]]:
    """Class statistics inside each polygon of ``regions`` (any vector format GDAL reads); rows named
    by the field ``by`` (default: the feature's index)."""
    import pyogrio
    import shapely

    try:
        meta, _, geometry, fields = pyogrio.raw.read(regions)
    except Exception as exc:
        raise ConfigError(f"{regions}: regions layer cannot be read ({reason(exc)}); give a vector file "
                          f"(GeoPackage, shapefile, GeoJSON ...)") from None
    names = list(meta["fields"])
    if by is not None and by not in names:
        raise ConfigError(f"{regions}: has no field {by!r}; its fields are {', '.join(names) or 'none'}")
    labels = fields[names.index(by)] if by is not None else np.arange(len(geometry))
    rows = []
    with _open(mask) as ds:
        classes = read_legend(ds)
        src_crs = meta["crs"] or (ds.crs.to_string() if ds.crs else None)
        for label, wkb in zip(labels, geometry, strict=True):
            if wkb is None:
                continue
            shape = shapely.geometry.mapping(shapely.from_wkb(wkb))
            if src_crs and ds.crs and CRS.from_user_input(src_crs) != ds.crs:
                shape = transform_geom(src_crs, ds.crs, shape)
            pixels, area = np.zeros(65536, np.int64), np.zeros(65536, np.float64)
            bounds = shapely.bounds(shapely.geometry.shape(shape))
            span = from_bounds(*bounds, transform=ds.transform)
            r0, c0 = max(0, math.floor(span.row_off)), max(0, math.floor(span.col_off))
            r1 = min(ds.height, math.ceil(span.row_off + span.height))
            c1 = min(ds.width, math.ceil(span.col_off + span.width))
            if r0 < r1 and c0 < c1:
                for strip, values in _strips(ds, r0, r1, c0, c1):
                    inside = geometry_mask([shape], (int(strip.height), int(strip.width)),
                                           ds.window_transform(strip), invert=True)
                    _count(values, ds, strip, pixels, area, inside)
            rows.append({"region": label.item() if hasattr(label, "item") else label,
                         "classes": [vars(s) for s in class_table(classes, pixels, area)]})
    return rows


def _count(values: np.ndarray, ds: rasterio.io.DatasetReader, window: Window, pixels: np.ndarray,
           area: np.ndarray, inside: np.ndarray | None = None) -> None:
    """Add the pixels and areas of a strip (only where ``inside``) to the per-value totals."""
    per_pixel = pixel_area_m2(ds.crs, ds.transform, np.arange(window.row_off, window.row_off + window.height))
    if np.ndim(per_pixel) == 0:
        picked = values if inside is None else values[inside]
        found = np.bincount(picked.ravel(), minlength=len(pixels))
        pixels += found
        area += found * float(per_pixel)
        return
    for i, row_area in enumerate(per_pixel):  # geographic: each row its own pixel area
        picked = values[i] if inside is None else values[i][inside[i]]
        found = np.bincount(picked, minlength=len(pixels))
        pixels += found
        area += found * float(row_area)


def _strips(ds: rasterio.io.DatasetReader, row0: int, row1: int, col0: int, col1: int
            ) -> Iterator[tuple[Window, np.ndarray]]:
    """Windows of at most :data:`STRIP_PIXELS` pixels covering rows ``row0..row1`` and columns ``col0..col1``
    (up to :data:`STRIP_ROWS` rows; a mask a million pixels wide is also cut across), with their values."""
    cols = min(col1 - col0, STRIP_PIXELS)
    rows = max(1, min(STRIP_ROWS, STRIP_PIXELS // max(1, cols)))
    for r in range(row0, row1, rows):
        for c in range(col0, col1, cols):
            window = Window(c, r, min(cols, col1 - c), min(rows, row1 - r))
            yield window, ds.read(1, window=window)


def _open(mask: Path) -> rasterio.io.DatasetReader:
    if not mask.is_file():
        raise SceneError(f"{mask}: no such mask; give a mask geoseg wrote (or any single-band class raster)")
    try:
        ds = rasterio.open(mask)
    except rasterio.errors.RasterioIOError as exc:
        raise SceneError(f"{mask}: not a raster GDAL can read ({reason(exc)})") from None
    if ds.count != 1 or ds.dtypes[0] not in ("uint8", "uint16"):
        ds.close()
        raise SceneError(f"{mask}: has {ds.count} band(s) of {ds.dtypes[0]}; a class mask has one uint8 or uint16 band")
    return ds


def write_table(rows: list[dict[str, Any]], path: Path) -> None:
    """CSV of statistics rows (one line per class, and per region where there are regions)."""
    write_csv(path, ["region", "value", "name", "pixels", "area_ha", "share"],
              [[row.get("region", ""), s["value"], s["name"], s["pixels"], s["area_ha"], s["share"]]
               for row in rows for s in row["classes"]])


def write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    """A CSV file of ``header`` and ``rows``, whole or not at all (:func:`geoseg.io.integrity.publish_text`: a full
    disk leaves no half table); a file that cannot be written is an :class:`OutputError`."""
    import csv
    import io

    from geoseg.io.integrity import publish_text

    table = io.StringIO(newline="")
    writer = csv.writer(table)
    writer.writerow(header)
    writer.writerows(rows)
    publish_text(path, table.getvalue(), fix="choose a writable path with -o")
