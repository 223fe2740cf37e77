"""``geoseg assess design``: a stratified random sample of a mask's pixels, as points to label in QGIS, and
``geoseg assess estimate``'s reading of the labelled sample.

The strata are the mapped classes. Allocation (:func:`allocate`) is proportional to each class's mapped
area with a per-class minimum (Olofsson et al. 2014, section 5.1.1: rare classes need enough points for a
usable user's accuracy); the classes above the minimum give up points, largest remainder first, so that
the total is the sample size asked for. Points are drawn without replacement, uniformly within each
stratum, from a seeded generator, in two windowed passes over the mask (count, then pick): the mask is
never read whole. The GeoPackage holds one point per sample pixel (its centre) with ``point``,
``map_class``, ``map_name``, ``stratum_pixels`` and an empty ``reference`` field for the person labelling
it; its layer metadata keeps the class table, every stratum's size and the pixel area, which the
estimate needs even for classes the sample never hit.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.assess.estimate import AreaAccuracy, estimate
from geoseg.errors import ConfigError, OutputError, SceneError, reason
from geoseg.export.legend import write_points_qml
from geoseg.export.stats import pixel_area_m2
from geoseg.models.card import ClassInfo
from geoseg.train.evaluate import mask_classes, normalise

#: Mask rows per window.
WINDOW_ROWS = 1024
#: The sample layer's name, and the field the person labels.
LAYER, REFERENCE_FIELD = "sample", "reference"
#: Layer metadata keys.
CLASSES_KEY, STRATA_KEY, PIXEL_AREA_KEY = "GEOSEG_CLASSES", "GEOSEG_STRATA", "GEOSEG_PIXEL_AREA_M2"


def allocate(pixels: np.ndarray, n: int, min_per_class: int) -> np.ndarray:
    """Points per stratum: proportional to ``pixels`` with at least ``min_per_class`` (never more than a
    stratum holds), summing to ``n`` where the minimums allow (see module docstring)."""
    pixels = np.asarray(pixels, dtype=np.int64)
    present = pixels > 0
    floor = np.where(present, np.minimum(min_per_class, pixels), 0)
    if floor.sum() >= n:
        return floor
    want = n * pixels / pixels.sum()
    alloc = np.maximum(floor, np.floor(want)).astype(np.int64)
    free = present & (alloc < pixels) & (want > floor)  # classes the proportional rule governs
    while alloc.sum() > n and (alloc[free] > floor[free]).any():  # the minimums took points from the others
        over = np.where(free & (alloc > floor), alloc - want * (n - floor[~free].sum()) / max(want[free].sum(), 1), -1)
        alloc[int(np.argmax(over))] -= 1
    remainder = want - np.floor(want)
    for i in np.argsort(-remainder):  # largest remainders take what is left
        if alloc.sum() >= n:
            break
        if free[i] and alloc[i] < pixels[i]:
            alloc[i] += 1
    return np.minimum(alloc, pixels)


def _windows(ds: rasterio.DatasetReader):
    for row0 in range(0, ds.height, WINDOW_ROWS):
        rows = min(WINDOW_ROWS, ds.height - row0)
        yield row0, ds.read(1, window=Window(0, row0, ds.width, rows))


def class_pixels(mask: Path, classes: int) -> np.ndarray:
    with rasterio.open(mask) as ds:
        counts = np.zeros(256, np.int64)
        for _, data in _windows(ds):
            counts += np.bincount(data.ravel(), minlength=256)
    return counts[:classes]


def sample(mask: Path, per_class: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, classes)`` of the sample: ``per_class[h]`` pixels of class ``h``, uniformly without
    replacement, in two windowed passes."""
    pixels = class_pixels(mask, len(per_class))
    rng = np.random.default_rng(seed)
    ranks = [np.sort(rng.choice(int(pixels[h]), int(per_class[h]), replace=False)) if per_class[h] else
             np.zeros(0, np.int64) for h in range(len(per_class))]
    seen = np.zeros(len(per_class), np.int64)
    rows, cols, values = [], [], []
    with rasterio.open(mask) as ds:
        for row0, data in _windows(ds):
            flat = data.ravel()
            for h in range(len(per_class)):
                where = np.flatnonzero(flat == h)
                lo, hi = np.searchsorted(ranks[h], [seen[h], seen[h] + len(where)])
                chosen = where[ranks[h][lo:hi] - seen[h]]
                rows.append(row0 + chosen // ds.width)
                cols.append(chosen % ds.width)
                values.append(np.full(len(chosen), h))
                seen[h] += len(where)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(values)


def design(mask: Path, output: Path, n: int, min_per_class: int = 50, seed: int = 0,
           overwrite: bool = False) -> dict:
    """Write the sample of ``mask`` to ``output`` (a GeoPackage; see module docstring) and describe it."""
    import pyogrio
    import shapely

    if n < 1 or min_per_class < 0:
        raise ConfigError(f"--n {n} and --min-per-class {min_per_class}: give a positive sample size and a "
                          f"minimum of 0 or more")
    if output.suffix.lower() != ".gpkg":
        raise ConfigError(f"{output}: the sample is written as a GeoPackage; name it .gpkg")
    for path in (output, output.with_suffix(".qml")):  # the sample and its QGIS style
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: already exists; pass --overwrite to replace it or choose another -o")
    try:
        names = mask_classes(mask)
        with rasterio.open(mask) as ds:
            crs, transform = ds.crs, ds.transform
    except rasterio.errors.RasterioIOError as exc:
        raise SceneError(f"{mask}: not a mask GDAL can read ({reason(exc)})") from None
    pixels = class_pixels(mask, len(names))
    per_class = allocate(pixels, n, min_per_class)
    rows, cols, values = sample(mask, per_class, seed)
    xs, ys = rasterio.transform.xy(transform, rows, cols)
    area = pixel_area_m2(crs, transform) if crs is not None and not crs.is_geographic else math.nan
    fields = [np.arange(1, len(values) + 1), values.astype(np.int32), np.array([names[v] for v in values], object),
              pixels[values].astype(np.int64), np.full(len(values), None, object)]
    metadata = {CLASSES_KEY: json.dumps(dict(enumerate(names))), STRATA_KEY: json.dumps(pixels.tolist()),
                PIXEL_AREA_KEY: repr(float(area))}
    partial = output.with_name(f".{output.stem}.partial{output.suffix}")  # GDAL wants the .gpkg suffix
    partial.unlink(missing_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
            pyogrio.raw.write(str(partial), geometry=shapely.to_wkb(shapely.points(np.asarray(xs), np.asarray(ys))),
                              field_data=fields, fields=["point", "map_class", "map_name", "stratum_pixels",
                                                         REFERENCE_FIELD],
                              crs=crs.to_wkt() if crs is not None else None, driver="GPKG", geometry_type="Point",
                              layer=LAYER, layer_metadata=metadata)
        write_points_qml(output.with_suffix(".qml"), _classes(mask, names), "map_class")
        partial.replace(output)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        raise OutputError(f"{output}: writing the sample failed ({reason(exc)})") from None
    return {"sample": str(output), "points": len(values),
            "strata": [{"value": h, "name": names[h], "mapped_pixels": int(pixels[h]), "points": int(per_class[h])}
                       for h in range(len(names))]}


def _values_at(raster: Path, geometry: np.ndarray, crs: str | None) -> np.ndarray:
    """The reference raster's class values at the sample's points (None where it has none: outside, nodata)."""
    import shapely

    points = shapely.from_wkb(geometry)
    try:
        with rasterio.open(raster) as ds:
            if crs and ds.crs is not None and rasterio.crs.CRS.from_user_input(crs) != ds.crs:
                raise SceneError(f"{raster}: is on {ds.crs.to_string()}, the sample on another CRS; reproject the "
                                 f"reference raster onto the map's grid first (gdalwarp)")
            # point by point (windowed reads): the reference is never read whole; outside it, masked
            found = ds.sample(zip(shapely.get_x(points), shapely.get_y(points), strict=True), indexes=1, masked=True)
            values = np.array([None if v.mask.any() else int(v[0]) for v in found], object)
    except rasterio.errors.RasterioIOError as exc:
        raise SceneError(f"{raster}: not a raster GDAL can read ({reason(exc)})") from None
    return values


def _classes(mask: Path, names: tuple[str, ...]) -> tuple[ClassInfo, ...]:
    """The mask's classes with their colours (its colour table; grey where it has none)."""
    with rasterio.open(mask) as ds:
        try:
            table = ds.colormap(1)
        except ValueError:  # no colour table
            table = {}
    return tuple(ClassInfo(v, n, tuple(table.get(v, (128, 128, 128, 255))[:3])) for v, n in enumerate(names))


def estimate_sample(path: Path, reference: str = REFERENCE_FIELD) -> tuple[AreaAccuracy, dict[str, int]]:
    """The estimates of a labelled sample (``geoseg assess estimate``), and the points left out, by why.
    ``reference`` names the sample's field that holds the labels, or a reference raster (class values on the
    sample's CRS) read at the points."""
    import pyogrio

    raster = Path(reference) if Path(reference).suffix.lower() in (".tif", ".tiff", ".vrt", ".img") else None
    try:
        info = pyogrio.read_info(path, layer=LAYER)
        meta = info.get("layer_metadata") or {}
        _, _, geometry, data = pyogrio.raw.read(path, layer=LAYER,
                                                columns=["map_class"] + ([] if raster else [reference]))
    except Exception as exc:
        raise SceneError(f"{path}: not a sample geoseg assess design wrote ({reason(exc)})") from None
    if raster is not None:
        data = [data[0], _values_at(raster, geometry, info.get("crs"))]
    elif reference not in list(info["fields"]):
        raise ConfigError(f"{path}: has no field {reference!r} (fields: {', '.join(info['fields'])}); pass "
                          f"--reference FIELD")
    try:
        names = tuple(json.loads(meta[CLASSES_KEY]).values())
        strata = np.array(json.loads(meta[STRATA_KEY]), np.int64)
        area = float(meta[PIXEL_AREA_KEY])
    except (KeyError, ValueError):
        raise SceneError(f"{path}: its layer has no class table and strata (was it written by geoseg assess "
                         f"design?)") from None
    by_name = {normalise(n): i for i, n in enumerate(names)}
    mapped, labelled = data[0].astype(np.int64), data[1]
    counts = np.zeros((len(names), len(names)), np.int64)
    left = {"not labelled": 0}
    unknown: list[str] = []
    for m, r in zip(mapped, labelled, strict=True):
        if r is None or (isinstance(r, float) and math.isnan(r)) or str(r).strip() == "":
            left["not labelled"] += 1
            continue
        text = str(r).strip()
        j = int(text) if text.lstrip("-").isdigit() else by_name.get(normalise(text))
        if j is None or not 0 <= j < len(names):
            unknown.append(text)
            continue
        counts[m, j] += 1
    if unknown:
        raise ConfigError(f"{path}: reference labels {', '.join(sorted(set(unknown))[:5])} are not classes of the map "
                          f"({', '.join(names)}); label each point with a class value or name")
    return estimate(counts, strata, names, None if math.isnan(area) else area), left
