"""Statistics of a mask: whole, per region, projected and geographic, as JSON and CSV."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyogrio
import pytest
import shapely
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.errors import ConfigError
from geoseg.export.stats import mask_stats, pixel_area_m2, zonal_stats
from tests.helpers import NODATA, blobby, write_mask


def test_mask_statistics_count_every_class(tmp_path) -> None:
    labels = blobby((130, 170), seed=5)
    table, about = mask_stats(write_mask(tmp_path / "m.tif", labels, res=20.0))
    valid = (labels != NODATA).sum()
    for s in table:
        count = int((labels == s.value).sum())
        assert s.pixels == count and s.area_ha == pytest.approx(count * 400 / 1e4)
        assert s.share == pytest.approx(count / valid, abs=1e-6)
    assert [s.name for s in table] == ["water", "forest", "field"]
    assert about["nodata_pixels"] == int((labels == NODATA).sum())


def test_zonal_statistics_against_counts_by_hand(tmp_path) -> None:
    labels = blobby((100, 120), seed=6)
    mask = write_mask(tmp_path / "m.tif", labels, origin=(0.0, 1000.0))  # 10 m pixels, rows from y = 1000 down
    regions = tmp_path / "zones.gpkg"
    boxes = [shapely.box(0, 500, 400, 1000), shapely.box(300, 0, 1200, 600)]  # (x0, y0, x1, y1) in metres
    pyogrio.raw.write(str(regions), geometry=shapely.to_wkb(boxes), field_data=[np.array(["north", "east"],
                      dtype=object)], fields=["zone"], crs="EPSG:32633", driver="GPKG", geometry_type="Polygon")
    rows = zonal_stats(mask, regions, "zone")
    assert [r["region"] for r in rows] == ["north", "east"]
    by_hand = [labels[0:50, 0:40], labels[40:100, 30:120]]  # rows = (1000 - y) / 10, cols = x / 10
    for row, window in zip(rows, by_hand, strict=True):
        for s in row["classes"]:
            assert s["pixels"] == int((window == s["value"]).sum()), (row["region"], s)
    with pytest.raises(ConfigError, match="has no field 'nope'"):
        zonal_stats(mask, regions, "nope")


def test_geographic_pixels_shrink_towards_the_poles() -> None:
    from affine import Affine
    from rasterio.crs import CRS

    areas = pixel_area_m2(CRS.from_epsg(4326), Affine(0.01, 0, 0, 0, -0.01, 60.0), np.array([0, 3000]))
    assert areas[0] == pytest.approx(1113.2 * 1111.9 * np.cos(np.radians(60)), rel=0.01)
    assert areas[1] == pytest.approx(1113.2 * 1105.7 * np.cos(np.radians(30)), rel=0.01)


def test_stats_cli_prints_json_and_writes_csv(tmp_path) -> None:
    labels = blobby((60, 80), seed=7)
    mask = write_mask(tmp_path / "m.tif", labels)
    result = CliRunner().invoke(app, ["export", "stats", str(mask), "--json", "-o", str(tmp_path / "s.csv")])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [c["pixels"] for c in data["classes"]] == [int((labels == v).sum()) for v in (0, 1, 2)]
    with (tmp_path / "s.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["pixels"]) for r in rows] == [c["pixels"] for c in data["classes"]]


def test_a_mask_without_a_crs_has_no_areas_only_pixels_and_shares(tmp_path, make_tif, tiny_model) -> None:
    """Its pixels have no ground size: "117.7 ha" from pixels counted as square map units was wrong."""
    import rasterio as rio

    from geoseg import RunConfig, segment_scene
    from geoseg.export.stats import mask_stats

    labels = np.zeros((40, 50), np.uint8)
    labels[:, 30:] = 1
    mask = tmp_path / "nocrs.tif"
    with rio.open(mask, "w", driver="GTiff", width=50, height=40, count=1, dtype="uint8", nodata=NODATA) as ds:
        ds.write(labels, 1)
        ds.update_tags(CLASSES='["water", "forest"]')
    stats, _ = mask_stats(mask)
    assert [(s.name, s.pixels, s.area_ha, s.share) for s in stats] == [("water", 1200, None, 0.6),
                                                                        ("forest", 800, None, 0.4)]
    scene = make_tif(np.random.default_rng(0).normal(size=(3, 40, 50)).astype("float32"), crs=None)
    summary = segment_scene(scene, tmp_path / "m.tif", RunConfig(device="cpu"), model=tiny_model())
    assert all(c["area_ha"] is None for c in summary.class_stats)
    assert sum(c["share"] for c in summary.class_stats) == pytest.approx(1.0)
