"""Polygons of a mask: one layer, one polygon per connected region of a class, for masks of any size.

The mask is read in square windows, row by row. Each window is polygonised by GDAL
(``rasterio.features.shapes``, 4-connectivity, as ``gdal_polygonize`` by default) in pixel
coordinates, so "touches a window edge" is an exact integer test. Polygons that touch no inner
window edge are final at once. The others are *open*: after each row of windows, open polygons of
the same class that share an edge of positive length (a corner is not a connection under
4-connectivity) are unioned (shapely), and a merged polygon is final once it cannot reach the next
row. So no polygon is split and no straight seam appears at window edges, memory holds only the open
front, and the set of polygons equals a whole-mask polygonise (tests/export/test_vector.py).

Attributes: class value, class name, and the area in m² of the region before any simplification
(on a projected CRS: the region's pixel count times the pixel area, exactly; on a geographic CRS:
measured in a Lambert azimuthal equal-area projection centred on the mask).

``min_area_m2`` sieves regions smaller than that before polygonising (:func:`sieve_regions`): in
each of :data:`SIEVE_PASSES` passes, each such region takes the class that most of its neighbouring
pixels in regions that stay have (or, where all its neighbours are small too, most of its neighbouring
pixels). A pass looks at most ``2 * (size + 1)`` pixels away, and each window is sieved with a halo
of that times the passes, so the result never depends on the windows (up to a halo of
:data:`MAX_HALO`: regions up to about 340 pixels). (GDAL's sieve merges a region into its *largest* neighbouring
polygon, which cannot be decided window by window: a neighbour may reach far beyond any halo.)

``simplify`` simplifies the polygons as one coverage (``shapely.coverage_simplify``: shared edges
stay shared, no gaps or overlaps appear); it needs all polygons at once, so it holds the layer in
memory.

Output by extension: ``.gpkg`` (GeoPackage, written in batches), ``.fgb`` (FlatGeobuf),
``.parquet`` (GeoParquet 1.1, through pyarrow), ``.geojson``. Written under a temporary name and
renamed when complete.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes
from rasterio.warp import transform_geom
from rasterio.windows import Window

from geoseg.errors import ConfigError, OutputError, reason
from geoseg.export.legend import read_legend
from geoseg.export.stats import _open, pixel_area_m2
from geoseg.io.outputs import check_outputs
from geoseg.io.publish import PARTIAL_MARK, process_tag

#: Vector formats by file extension: GDAL driver name, and whether it can be appended to in batches.
VECTOR_FORMATS: dict[str, tuple[str, bool]] = {
    ".gpkg": ("GPKG", True), ".fgb": ("FlatGeobuf", False), ".parquet": ("GeoParquet", False),
    ".geojson": ("GeoJSON", False), ".json": ("GeoJSON", False),
}
#: Window edge in pixels.
WINDOW = 4096
#: The GeoPackage version written: 1.2, which QGIS 3.22 (GDAL 3.6) reads without the "may only be partially
#: supported" warning that GDAL 3.10's default (1.4) gives it.
GPKG_VERSION = "1.2"
#: Widest halo a sieve reads around a window (a region removed by the sieve is at most this long).
MAX_HALO = 2048
#: Passes of the sieve: speckle whose neighbours are all small too needs more than one.
SIEVE_PASSES = 3
#: Final polygons written at a time.
BATCH = 50_000


@dataclass
class VectorSummary:
    """What a polygonise wrote."""

    path: str
    polygons: int
    seconds: float
    per_class: dict[str, int] = field(default_factory=dict)
    #: Classes of the mask that no polygon of the layer has (all their regions were under ``--min-area``).
    removed: list[str] = field(default_factory=list)


@dataclass
class _Open:
    """A polygon that touches an inner window edge (pixel coordinates)."""

    value: int
    geom: shapely.Polygon


def polygonize(mask: Path, output: Path, *, min_area_m2: float = 0.0, simplify: float = 0.0,
               window: int = WINDOW, overwrite: bool = False) -> VectorSummary:
    """Polygonise ``mask`` into ``output`` (see module docstring); returns what was written."""
    started = time.perf_counter()
    driver, appendable = _driver(output)
    check_outputs({"vector layer": output}, [mask], overwrite)
    with _open(mask) as ds:
        classes = {c.value: c.name for c in read_legend(ds)}
        layer = _Layer(output, driver, appendable and simplify == 0, ds.crs, layer_name(output))
        to_map = _MapGeometry(ds)
        sieve_px = _sieve_pixels(ds, min_area_m2)
        seen: set[int] = set()  # the classes of the mask before sieving
        try:
            finals: list[tuple[int, shapely.Polygon]] = []
            for value, geom in _regions(ds, window, sieve_px, seen):
                finals.append((value, geom))
                if len(finals) >= BATCH and layer.streaming:
                    layer.add(finals, classes, to_map)
                    finals = []
            layer.add(finals, classes, to_map)
            layer.close(simplify, to_map)
            try:
                os.replace(layer.partial, output)
            except OSError as exc:
                raise OutputError(f"{output}: cannot be put in place ({exc.strerror}); check the folder") from None
        finally:
            with suppress(OSError):  # a folder that became unwritable: the error above is the one to report
                layer.partial.unlink(missing_ok=True)
    removed = [classes.get(v, str(v)) for v in sorted(seen - set(layer.per_value)) if v != ds.nodata]
    return VectorSummary(str(output), layer.count, round(time.perf_counter() - started, 3),
                         {classes.get(v, str(v)): n for v, n in sorted(layer.per_value.items())}, removed)


def layer_name(output: Path) -> str:
    """The layer's name: the file's stem, with characters other than letters, digits and ``_`` as ``_`` (a
    name like ``s2.landcover`` would need quoting in every SQL query of a GeoPackage)."""
    name = re.sub(r"[^0-9A-Za-z_]", "_", output.stem)
    return name if name and not name[0].isdigit() else f"layer_{name}"


def _regions(ds: rasterio.io.DatasetReader, window: int, sieve_px: int, seen: set[int] | None = None
             ) -> Iterator[tuple[int, shapely.Polygon]]:
    """Every region of the mask as ``(value, polygon in pixel coordinates)``, each exactly once; ``seen``
    collects the values the mask holds before sieving."""
    height, width, nodata = ds.height, ds.width, ds.nodata
    halo = min(SIEVE_PASSES * 2 * (sieve_px + 1), MAX_HALO) if sieve_px > 1 else 0
    front: list[_Open] = []
    for row0 in range(0, height, window):
        row1 = min(row0 + window, height)
        fresh: list[_Open] = []
        for col0 in range(0, width, window):
            col1 = min(col0 + window, width)
            values = _read(ds, row0, row1, col0, col1, halo, sieve_px, nodata, seen)
            valid = values != nodata if nodata is not None else None
            inner = (col0 > 0, col1 < width, row0 > 0, row1 < height)  # left, right, top, bottom are inner edges
            for shape, value in shapes(values, mask=valid, connectivity=4, transform=Affine.translation(col0, row0)):
                geom = shapely.geometry.shape(shape)
                x0, y0, x1, y1 = geom.bounds
                if (inner[0] and x0 == col0) or (inner[1] and x1 == col1) or (inner[2] and y0 == row0) or \
                        (inner[3] and y1 == row1):
                    fresh.append(_Open(int(value), geom))
                else:
                    yield int(value), geom
        front = _merge(front + fresh)
        keep = []
        for piece in front:
            if row1 == height or piece.geom.bounds[3] < row1:
                yield piece.value, piece.geom
            else:
                keep.append(piece)
        front = keep


def _merge(pieces: list[_Open]) -> list[_Open]:
    """Union the pieces of each class that share an edge (not only a corner)."""
    if len(pieces) < 2:
        return pieces
    geoms = [p.geom for p in pieces]
    tree = shapely.STRtree(geoms)
    parent = list(range(len(pieces)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    left, right = tree.query(geoms, predicate="touches")
    for i, j in zip(left.tolist(), right.tolist(), strict=True):
        if i < j and pieces[i].value == pieces[j].value and root(i) != root(j) \
                and shapely.intersection(geoms[i], geoms[j]).length > 0:
            parent[root(i)] = root(j)
    groups: dict[int, list[int]] = {}
    for i in range(len(pieces)):
        groups.setdefault(root(i), []).append(i)
    # A union keeps a vertex wherever a window line crossed an edge; on pixel coordinates those are exactly
    # collinear, and a zero-tolerance simplification drops exactly them.
    return [pieces[g[0]] if len(g) == 1 else
            _Open(pieces[g[0]].value, shapely.simplify(shapely.union_all([geoms[i] for i in g]), 0))
            for g in groups.values()]


def _read(ds: rasterio.io.DatasetReader, row0: int, row1: int, col0: int, col1: int, halo: int, sieve_px: int,
          nodata: float | None, seen: set[int] | None = None) -> np.ndarray:
    """The window's values, sieved (with a halo) when regions below ``sieve_px`` pixels are dropped; the
    window's own values before sieving are added to ``seen``."""
    if not halo:
        values = ds.read(1, window=Window(col0, row0, col1 - col0, row1 - row0))
        if seen is not None:
            seen.update(np.unique(values).tolist())
        return values
    r0, r1 = max(0, row0 - halo), min(ds.height, row1 + halo)
    c0, c1 = max(0, col0 - halo), min(ds.width, col1 + halo)
    values = ds.read(1, window=Window(c0, r0, c1 - c0, r1 - r0))
    if seen is not None:
        seen.update(np.unique(values[row0 - r0 : row1 - r0, col0 - c0 : col1 - c0]).tolist())
    valid = values != nodata if nodata is not None else np.ones(values.shape, bool)
    sieved = values
    for _ in range(SIEVE_PASSES):
        before, sieved = sieved, sieve_regions(sieved, valid, sieve_px)
        if np.array_equal(before, sieved):
            break
    return np.ascontiguousarray(sieved[row0 - r0 : row1 - r0, col0 - c0 : col1 - c0])


#: 4-connectivity.
_CROSS = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], bool)


def sieve_regions(values: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """``values`` with every 4-connected region of fewer than ``size`` valid pixels given the class
    most of its neighbouring pixels in regions of at least ``size`` have (where it has none, most of
    its valid neighbouring pixels; ties: the smaller class value). One pass, so the result for a
    region depends only on the pixels within ``2 * (size + 1)`` of it. Regions with no valid
    neighbour stay as they are."""
    from scipy import ndimage

    out = values.copy()
    region_size = np.zeros(values.shape, np.int64)
    components = []
    for value in np.unique(values[valid]):
        labels, count = ndimage.label((values == value) & valid, structure=_CROSS)
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        sizes[0] = 0
        region_size += sizes[labels]
        components.append((labels, np.flatnonzero(sizes[1:] < size) + 1))
    for labels, small in components:
        boxes = ndimage.find_objects(labels)
        for k in small.tolist():
            rows, cols = boxes[k - 1]
            r0, r1 = max(rows.start - 1, 0), min(rows.stop + 1, values.shape[0])
            c0, c1 = max(cols.start - 1, 0), min(cols.stop + 1, values.shape[1])
            region = labels[r0:r1, c0:c1] == k
            ring = ndimage.binary_dilation(region, structure=_CROSS) & ~region & valid[r0:r1, c0:c1]
            stays = ring & (region_size[r0:r1, c0:c1] >= size)
            around = values[r0:r1, c0:c1][stays if stays.any() else ring]
            if around.size:
                out[r0:r1, c0:c1][region] = np.bincount(around).argmax()
    return out


def _sieve_pixels(ds: rasterio.io.DatasetReader, min_area_m2: float) -> int:
    """Regions of fewer pixels than this are sieved (geographic masks: the pixel area at the centre)."""
    if min_area_m2 <= 0:
        return 0
    if ds.crs is None:
        raise ConfigError(f"{ds.name}: has no CRS, so its pixels have no ground area; --min-area needs a "
                          f"georeferenced mask (or sieve by pixels in another tool)")
    area = pixel_area_m2(ds.crs, ds.transform, np.array([ds.height // 2]))
    return max(1, math.ceil(min_area_m2 / float(np.ravel(area)[0])))


class _MapGeometry:
    """From pixel coordinates to the mask's CRS, and areas in m²."""

    def __init__(self, ds: rasterio.io.DatasetReader):
        self.transform = ds.transform
        self.crs = ds.crs
        self.geographic = ds.crs is not None and ds.crs.is_geographic
        self.unit = ds.crs.linear_units_factor[1] if ds.crs is not None and ds.crs.is_projected else 1.0
        if self.geographic:
            lon, lat = ds.transform @ (ds.width / 2, ds.height / 2)
            self.equal_area = f"+proj=laea +lat_0={lat} +lon_0={lon} +datum=WGS84 +units=m"

    def __call__(self, geoms: list[shapely.Polygon]) -> tuple[np.ndarray, np.ndarray]:
        t = self.transform
        pixel_area = abs(t.a * t.e - t.b * t.d) * self.unit**2
        linear, shift = np.array([[t.a, t.d], [t.b, t.e]]), np.array([t.c, t.f])
        pixels = np.empty(len(geoms), dtype=object)
        pixels[:] = geoms
        mapped = shapely.transform(pixels, lambda xy: xy @ linear + shift)  # (col, row) -> (x, y)
        if not self.geographic:
            return mapped, shapely.area(pixels) * pixel_area
        return mapped, self.areas(mapped)

    def areas(self, mapped: np.ndarray) -> np.ndarray:
        """Areas in m² of polygons in the mask's CRS (map units² scaled to m²; on a geographic grid, measured in
        an equal-area projection centred on the mask)."""
        if not self.geographic:
            return shapely.area(mapped) * self.unit**2 if self.crs is not None else np.full(len(mapped), np.nan)
        t = self.transform
        # Edges densified to a few pixels first: a long edge along a parallel is a curve on the ground.
        dense = shapely.segmentize(mapped, max(abs(t.a), abs(t.e)) * 8)
        return np.asarray([shapely.geometry.shape(transform_geom(self.crs, self.equal_area,
                                                                 shapely.geometry.mapping(g))).area for g in dense])


class _Layer:
    """The output layer, written in batches where the format allows (under a temporary name)."""

    def __init__(self, output: Path, driver: str, streaming: bool, crs: rasterio.crs.CRS | None, name: str):
        self.output, self.driver, self.streaming, self.crs, self.name = output, driver, streaming, crs, name
        # The format's own extension last (drivers check it); the process id right after the mark.
        self.partial = output.with_name(f".{output.stem}{PARTIAL_MARK}{process_tag()}{output.suffix}")
        self.count = 0
        self.per_value: dict[int, int] = {}
        self._held: list[tuple[np.ndarray, np.ndarray, list[str], np.ndarray]] = []

    def add(self, finals: list[tuple[int, shapely.Polygon]], classes: dict[int, str], to_map: _MapGeometry) -> None:
        if not finals:
            return
        values = np.array([v for v, _ in finals], dtype=np.int32)
        geoms, areas = to_map([g for _, g in finals])
        names = [classes.get(int(v), str(v)) for v in values]
        for v in values.tolist():
            self.per_value[v] = self.per_value.get(v, 0) + 1
        self.count += len(values)
        if self.streaming:
            self._write(values, geoms, names, areas, append=self.partial.exists())
        else:
            self._held.append((values, geoms, names, areas))

    def close(self, simplify: float, to_map: _MapGeometry) -> None:
        if not self.streaming or not self.partial.exists():
            parts = self._held or [(np.zeros(0, np.int32), np.zeros(0, dtype=object), [], np.zeros(0))]
            values = np.concatenate([p[0] for p in parts])
            geoms = np.concatenate([p[1] for p in parts])
            names = [n for p in parts for n in p[2]]
            areas = np.concatenate([p[3] for p in parts])
            if simplify > 0 and len(geoms):
                geoms = shapely.coverage_simplify(geoms, simplify)
                areas = to_map.areas(geoms)  # the simplified polygons' own areas
            self._write(values, geoms, names, areas, append=False)

    def _write(self, values: np.ndarray, geoms: np.ndarray, names: list[str], areas: np.ndarray,
               append: bool) -> None:
        if self.driver == "GeoParquet":
            return _write_parquet(self.partial, values, geoms, names, areas, self.crs)
        import pyogrio

        try:
            with warnings.catch_warnings():  # a mask without a CRS gives a layer without one; the mask says so
                warnings.filterwarnings("ignore", message="'crs' was not provided", category=UserWarning)
                pyogrio.raw.write(str(self.partial), geometry=shapely.to_wkb(geoms), field_data=[values, np.array(
                    names, dtype=object), np.round(areas, 3)], fields=["class", "name", "area_m2"],
                    crs=self.crs.to_wkt() if self.crs else None, driver=self.driver, geometry_type="Polygon",
                    layer=self.name, append=append, promote_to_multi=False,
                    **({"dataset_options": {"VERSION": GPKG_VERSION}} if self.driver == "GPKG" and not append else {}))
        except Exception as exc:
            raise OutputError(f"{self.output}: writing the {self.driver} layer failed ({reason(exc)})"
                              ) from None


def _write_parquet(path: Path, values: np.ndarray, geoms: np.ndarray, names: list[str], areas: np.ndarray,
                   crs: rasterio.crs.CRS | None) -> None:
    """GeoParquet 1.1 with WKB geometries (pyarrow writes it; the "geo" metadata says how to read it)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError(f"{path.name}: GeoParquet needs pyarrow (pip install pyarrow); or write .gpkg or .fgb"
                          ) from None
    table = pa.table({"class": pa.array(values, pa.int32()), "name": pa.array(names, pa.string()),
                      "area_m2": pa.array(np.round(areas, 3), pa.float64()),
                      "geometry": pa.array(shapely.to_wkb(geoms).tolist(), pa.binary())})
    column = {"encoding": "WKB", "geometry_types": ["Polygon"]}
    if crs is not None:
        column["crs"] = crs.to_dict(projjson=True)  # PROJJSON, as GeoParquet asks
    if len(geoms):
        column["bbox"] = list(shapely.total_bounds(geoms))
    meta = {"version": "1.1.0", "primary_column": "geometry", "columns": {"geometry": column}}
    table = table.replace_schema_metadata({b"geo": json.dumps(meta).encode()})
    pq.write_table(table, path)


def _driver(output: Path) -> tuple[str, bool]:
    try:
        return VECTOR_FORMATS[output.suffix.lower()]
    except KeyError:
        raise ConfigError(f"{output}: unknown vector format {output.suffix or '(no extension)'!r}; use one of "
                          f"{', '.join(VECTOR_FORMATS)}") from None
