"""Polygons of a mask: windowed polygonising equals a whole-mask polygonise, areas are exact, and the
options (sieve, coverage simplification, formats, geographic masks) do what they say."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.features import shapes
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.errors import ConfigError, OutputError
from geoseg.export.vector import polygonize, sieve_regions
from tests.helpers import NODATA, blobby, write_mask


def read_layer(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    _, _, geometry, fields = pyogrio.raw.read(path)
    return fields[0], shapely.from_wkb(geometry), fields[2]


@pytest.mark.parametrize("window", [16, 50, 128])
def test_windowed_polygons_equal_a_whole_mask_polygonise(tmp_path, window) -> None:
    labels = blobby((230, 310), seed=window)
    mask = write_mask(tmp_path / "m.tif", labels)
    summary = polygonize(mask, tmp_path / "p.gpkg", window=window)
    values, geoms, areas = read_layer(tmp_path / "p.gpkg")
    with rasterio.open(mask) as ds:
        whole = [(int(v), shapely.geometry.shape(s))
                 for s, v in shapes(labels, mask=labels != NODATA, connectivity=4, transform=ds.transform)]
    assert summary.polygons == len(whole) == len(geoms)  # no polygon split, none merged too far
    unmatched = list(whole)
    for value, geom in zip(values, geoms, strict=True):
        hit = next(i for i, (v, g) in enumerate(unmatched) if v == value and g.equals(geom))
        unmatched.pop(hit)
    assert not unmatched
    for value in (0, 1, 2):  # areas: pixel count x pixel area, exactly
        assert areas[values == value].sum() == pytest.approx(100.0 * (labels == value).sum(), abs=1e-6)


def test_no_polygon_edge_runs_along_a_window_edge_without_a_class_edge(tmp_path) -> None:
    """A mask of one class in a frame of another: its polygons have no vertices on inner window lines."""
    labels = np.ones((200, 260), np.uint8)
    labels[:5] = labels[-5:] = labels[:, :5] = labels[:, -5:] = 2
    mask = write_mask(tmp_path / "m.tif", labels, origin=(0.0, 2000.0))
    polygonize(mask, tmp_path / "p.gpkg", window=64)
    values, geoms, _ = read_layer(tmp_path / "p.gpkg")
    assert sorted(values.tolist()) == [1, 2]
    inner = geoms[values == 1][0]
    assert inner.equals(shapely.box(50, 50, 2550, 1950))  # one rectangle (map units: 10 m pixels)
    xs = {x for x, _ in shapely.get_coordinates(inner.boundary)}
    assert all(x in (50.0, 2550.0) for x in xs)  # no vertex left on the window lines x = 640, 1280, ...


def test_min_area_sieves_the_same_whatever_the_windows(tmp_path) -> None:
    labels = blobby((230, 310), seed=4)
    mask = write_mask(tmp_path / "m.tif", labels)
    polygonize(mask, tmp_path / "a.gpkg", window=40, min_area_m2=600)  # 6 pixels of 100 m²
    polygonize(mask, tmp_path / "b.gpkg", window=1000, min_area_m2=600)  # one window: the whole mask
    va, ga, aa = read_layer(tmp_path / "a.gpkg")
    vb, gb, ab = read_layer(tmp_path / "b.gpkg")
    assert len(ga) == len(gb) < len(read_whole(labels)) // 2
    assert (aa < 600).sum() == (ab < 600).sum() < 0.02 * len(ga)  # the few left touch nodata or merge in pairs
    for value in (0, 1, 2):
        assert shapely.union_all(ga[va == value]).equals(shapely.union_all(gb[vb == value]))


def test_a_small_region_takes_the_class_around_it() -> None:
    values = np.ones((9, 9), np.uint8)
    values[4, 4:6] = 2  # a 2-pixel speck of class 2 in class 1
    values[0, 0] = 0  # a 1-pixel region in a corner, two neighbours of class 1
    valid = np.ones(values.shape, bool)
    out = sieve_regions(values, valid, 3)
    assert (out == 1).all()
    valid[:, 7:] = False
    values[:, 7:] = 255
    values[4, 6] = 2  # the speck now touches nodata: 3 pixels, not small any more
    assert (sieve_regions(values, valid, 3)[4, 4:7] == 2).all()


def read_whole(labels: np.ndarray) -> list:
    return list(shapes(labels, mask=labels != NODATA, connectivity=4))


def test_simplify_keeps_the_coverage_without_gaps_or_overlaps(tmp_path) -> None:
    labels = blobby((180, 200), seed=8)
    mask = write_mask(tmp_path / "m.tif", labels)
    polygonize(mask, tmp_path / "raw.fgb", window=64)
    polygonize(mask, tmp_path / "simple.fgb", window=64, simplify=15.0)
    _, raw, raw_area = read_layer(tmp_path / "raw.fgb")
    _, simple, simple_area = read_layer(tmp_path / "simple.fgb")
    assert len(simple) == len(raw)
    assert shapely.get_num_coordinates(simple).sum() < shapely.get_num_coordinates(raw).sum()
    # The outer boundary is simplified too, so the outline moves a little; inside, nothing opens or overlaps.
    assert shapely.union_all(simple).area == pytest.approx(shapely.union_all(raw).area, rel=1e-3)
    assert len(shapely.get_parts(shapely.union_all(simple))) == len(shapely.get_parts(shapely.union_all(raw)))
    assert shapely.area(simple).sum() == pytest.approx(shapely.union_all(simple).area, rel=1e-9)  # no overlaps
    # area_m2 is each simplified polygon's own area (a UTM grid: map units are metres), not its pixels'
    np.testing.assert_allclose(simple_area, shapely.area(simple), rtol=1e-9)
    assert not np.allclose(np.sort(simple_area), np.sort(raw_area))  # simplifying moved some edges


def test_a_class_the_sieve_removes_entirely_is_named(tmp_path) -> None:
    labels = np.ones((60, 60), np.uint8)
    labels[10:12, 10:12] = 0  # one 4-pixel region of class 0 (400 m²)
    mask = write_mask(tmp_path / "m.tif", labels)
    summary = polygonize(mask, tmp_path / "v.gpkg", min_area_m2=1000)
    assert summary.removed == ["water"] and summary.per_class == {"forest": 1}
    result = CliRunner().invoke(app, ["export", "vector", str(mask), "-o", str(tmp_path / "w.gpkg"), "--min-area",
                                      "1000"])
    assert result.exit_code == 0 and "class 'water' is in the mask but has no region" in result.stderr


def test_min_area_needs_a_crs(tmp_path) -> None:
    labels = np.ones((30, 30), np.uint8)
    mask = tmp_path / "m.tif"
    with rasterio.open(mask, "w", driver="GTiff", width=30, height=30, count=1, dtype="uint8", nodata=NODATA) as ds:
        ds.write(labels, 1)
    with pytest.raises(ConfigError, match="has no CRS"):
        polygonize(mask, tmp_path / "v.gpkg", min_area_m2=100)


def test_geographic_masks_get_areas_in_square_metres(tmp_path) -> None:
    labels = np.zeros((100, 100), np.uint8)
    labels[:, 50:] = 1
    mask = write_mask(tmp_path / "m.tif", labels, crs="EPSG:4326", res=0.001, origin=(12.0, 52.5))
    polygonize(mask, tmp_path / "p.geojson")
    values, _, areas = read_layer(tmp_path / "p.geojson")
    # 0.05 x 0.1 degrees at 52.45 N: about 3.39 km x 11.1 km.
    expected = (0.05 * 111_320 * np.cos(np.radians(52.45))) * (0.1 * 110_900)
    assert areas[values == 0][0] == pytest.approx(expected, rel=0.01)


def test_geoparquet_and_mistakes(tmp_path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    mask = write_mask(tmp_path / "m.tif", blobby((60, 70), seed=1))
    summary = polygonize(mask, tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet")
    assert table.num_rows == summary.polygons and b"geo" in table.schema.metadata
    assert set(table.column_names) == {"class", "name", "area_m2", "geometry"}
    with pytest.raises(OutputError, match="already exists"):
        polygonize(mask, tmp_path / "p.parquet")
    with pytest.raises(ConfigError, match=r"unknown vector format '\.xyz'"):
        polygonize(mask, tmp_path / "p.xyz")
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


def test_export_cli_writes_vectors_and_statistics(tmp_path) -> None:
    labels = blobby((90, 120), seed=2)
    mask = write_mask(tmp_path / "m.tif", labels)
    runner = CliRunner()
    result = runner.invoke(app, ["export", "vector", str(mask), "-o", str(tmp_path / "p.gpkg"), "--json"])
    assert result.exit_code == 0, result.output
    bad = runner.invoke(app, ["export", "vector", str(tmp_path / "none.tif"), "-o", str(tmp_path / "q.gpkg")])
    assert bad.exit_code == 3 and "no such mask" in bad.output
