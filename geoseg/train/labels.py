"""Training labels on an image's grid: a class raster, or a vector layer rasterised window by window.

Each label value becomes a class index 0..N-1 or :data:`~geoseg.train.metrics.IGNORE` (unlabelled,
nodata, values not listed). Classes come from ``--classes`` (names, or ``{label value: name}``), else
from a label raster's ``CLASSES`` tag (names indexed by value, the nodata value left out, as
geoseg's masks and many label products write them), else from the values found.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.errors import ConfigError, SceneError, reason
from geoseg.io.scene import SceneInfo, check_regular_file, open_quiet
from geoseg.train.metrics import IGNORE

#: The largest label value a class may have (its lookup table is that many bytes).
MAX_LABEL_VALUE = 65_535


@dataclass
class RasterLabels:
    path: Path
    lut: np.ndarray  # label value -> class index or IGNORE (256 entries for uint8 labels, else up to the max)

    _dataset: rasterio.DatasetReader | None = None  # opened once per process (reading loops call read often)

    def read(self, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
        return self.classes(self.read_values(row0, col0, rows, cols))

    def classes(self, values: np.ndarray) -> np.ndarray:
        """Class indexes (or IGNORE) of label ``values`` from :meth:`read_values`."""
        return self.lut[np.clip(values.astype(np.int64), 0, len(self.lut) - 1)]

    def read_values(self, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
        """The label values as stored."""
        if self._dataset is None:
            self._dataset = rasterio.open(self.path)
        return self._dataset.read(1, window=Window(col0, row0, cols, rows))

    def labelled(self, values: np.ndarray) -> np.ndarray:
        """Which of ``values`` (from :meth:`read_values`) are labels at all: not the raster's nodata."""
        if self._dataset is None:
            self._dataset = rasterio.open(self.path)
        nodata = self._dataset.nodata
        return np.ones(values.shape, bool) if nodata is None else values != nodata

    def __getstate__(self) -> dict:  # loader processes open their own handle
        return {**self.__dict__, "_dataset": None}


@dataclass
class VectorLabels:
    path: Path
    shapes: list  # (geometry, class index) in the image's CRS
    transform: object

    def read(self, row0: int, col0: int, rows: int, cols: int) -> np.ndarray:
        from rasterio.features import rasterize
        from rasterio.windows import transform as window_transform

        window = Window(col0, row0, cols, rows)
        return rasterize(self.shapes, out_shape=(rows, cols), transform=window_transform(window, self.transform),
                         fill=IGNORE, dtype="uint8") if self.shapes else np.full((rows, cols), IGNORE, np.uint8)


def class_table(spec: list | dict | None, path: Path, tags: dict, nodata: float | None,
                values: np.ndarray | None) -> dict[int, str]:
    """``{label value: class name}`` in class-index order."""
    if isinstance(spec, dict):
        return {int(k): str(v) for k, v in spec.items()}
    if isinstance(spec, list):  # names: label values 0..N-1, or 1..N when 0 is the labels' nodata
        start = 1 if nodata == 0 else 0
        return {start + i: str(n) for i, n in enumerate(spec)}
    if "CLASSES" in tags:
        try:
            names = json.loads(tags["CLASSES"])
        except json.JSONDecodeError:
            names = None
        if isinstance(names, list):
            return {v: str(n) for v, n in enumerate(names) if nodata is None or v != nodata}
    if values is None:
        raise ConfigError(f"{path}: cannot tell the classes; pass --classes (a YAML list of names or value: name)")
    return {int(v): f"class {int(v)}" for v in values if nodata is None or v != nodata}


def open_labels(path: Path, image: SceneInfo, spec: list | dict | None, field: str = "class"
                ) -> tuple[RasterLabels | VectorLabels, dict[int, str]]:
    """Labels for ``image`` and their class table; raster labels must be on the image's grid."""
    check_regular_file(path, "label", "give a label raster or vector layer")
    if path.suffix.lower() in (".gpkg", ".fgb", ".geojson", ".json", ".shp", ".parquet"):
        return _vector_labels(path, image, spec, field)
    try:
        ds = open_quiet(str(path))
    except rasterio.errors.RasterioIOError as exc:
        raise SceneError(f"{path}: labels are not a raster GDAL can read ({reason(exc)})") from None
    with ds:
        if ds.count != 1:
            raise SceneError(f"{path}: has {ds.count} bands; labels must be one band of class values (is it the "
                             f"image rather than its labels?)")
        if ds.crs is not None and image.crs is not None and ds.crs != image.crs:
            raise SceneError(f"{path}: labels are on {ds.crs.to_string()} but {image.path} is on "
                             f"{image.crs.to_string()}; their pixels would be compared at other places on the ground: "
                             f"reproject the labels onto the image's grid first (gdalwarp -t_srs ... -tr ... -te ...)")
        if (ds.width, ds.height) != (image.width, image.height) or ds.transform != image.transform:
            raise SceneError(f"{path}: labels are not on the grid of {image.path} ({ds.width}x{ds.height} at "
                             f"{tuple(ds.transform)[:6]} against {image.width}x{image.height} at "
                             f"{tuple(image.transform)[:6]}); resample them onto the image first (gdalwarp)")
        if ds.dtypes[0] not in ("uint8", "uint16", "int16", "int32", "uint32", "int8"):
            raise SceneError(f"{path}: labels must be integer class values, not {ds.dtypes[0]}")
        values = None
        if spec is None and "CLASSES" not in ds.tags():
            values = np.unique(ds.read(1, out_shape=(min(ds.height, 1024), min(ds.width, 1024))))
        table = class_table(spec, path, ds.tags(), ds.nodata, values)
    if table and (max(table) > MAX_LABEL_VALUE or min(table) < 0):
        raise SceneError(f"{path}: label values run from {min(table)} to {max(table)}; class values must lie in "
                         f"0..{MAX_LABEL_VALUE}: renumber the classes (gdal_calc, a lookup table)")
    size = max(256, max(table, default=0) + 1)
    lut = np.full(size, IGNORE, np.uint8)
    for index, value in enumerate(table):
        if 0 <= value < size:
            lut[value] = index
    return RasterLabels(path, lut), table


def _vector_labels(path: Path, image: SceneInfo, spec: list | dict | None, field: str
                   ) -> tuple[VectorLabels, dict[int, str]]:
    import pyogrio
    import shapely

    try:
        meta, _, geometry, fields = pyogrio.raw.read(path, columns=[field])
    except Exception as exc:
        raise SceneError(f"{path}: cannot read the label layer ({reason(exc)})") from None
    if field not in list(meta["fields"]):
        raise ConfigError(f"{path}: has no field {field!r} (fields: {', '.join(meta['fields'])}); pass --label-field")
    values = fields[0]
    geoms = shapely.from_wkb(geometry)
    crs = meta.get("crs")
    if crs and image.crs is not None and rasterio.crs.CRS.from_user_input(crs) != image.crs:
        from rasterio.warp import transform_geom

        geoms = [shapely.geometry.shape(transform_geom(crs, image.crs, shapely.geometry.mapping(g))) for g in geoms]
    found = sorted({str(v) for v in values})
    if isinstance(spec, dict):
        table = {int(k): str(v) for k, v in spec.items()}
    elif isinstance(spec, list):
        table = dict(enumerate(spec))
    else:
        table = dict(enumerate(found))
    by_name = {n: i for i, n in enumerate(table.values())}
    by_value = {v: i for i, v in enumerate(table)}
    shapes = []
    for g, v in zip(geoms, values, strict=True):
        index = by_name.get(str(v))
        if index is None and str(v).lstrip("-").isdigit():
            index = by_value.get(int(v))
        if index is not None and g is not None:
            shapes.append((g, index))
    if not shapes:
        raise ConfigError(f"{path}: no feature's {field!r} names one of the classes ({', '.join(table.values())})")
    return VectorLabels(path, shapes, image.transform), table
