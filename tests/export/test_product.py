"""The product of `geoseg run`, read by real GIS clients: GDAL's gdalinfo and COG validator, rio-cogeo,
QGIS itself (headless), and the STAC JSON schemas (offline)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from geoseg import RunConfig, segment_scene
from geoseg.cli.app import app
from geoseg.io.writing import NODATA, ProductPaths
from geoseg.run import VectorRequest
from tests.helpers import smooth_image
from tests.helpers import validate_stac as _validate

runner = CliRunner()
SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "stac"
SYSTEM_PYTHON = Path("/usr/bin/python3")
needs_gdalinfo = pytest.mark.skipif(shutil.which("gdalinfo") is None,
                                    reason="needs gdal-bin (apt-get install gdal-bin)")
#: rasterio's command line, where rio-cogeo adds `rio cogeo validate` (beside this interpreter).
RIO = Path(sys.executable).with_name("rio")


def _has_qgis() -> bool:
    if not SYSTEM_PYTHON.exists():
        return False
    return subprocess.run([str(SYSTEM_PYTHON), "-c", "import qgis.core"], capture_output=True).returncode == 0


@pytest.fixture
def product(make_tif, tmp_path, tiny_model) -> ProductPaths:
    """A COG mask of a 700 x 900 scene with a nodata corner, its probabilities and polygons (the
    stand-in model gives every class somewhere: the checks below look at each)."""
    data = smooth_image((3, 700, 900), seed=3)
    data[:, :100, :150] = -9999
    scene = make_tif(data, nodata=-9999, descriptions=("b1", "b2", "b3"))
    out = tmp_path / "scene.mask.tif"
    segment_scene(scene, out, RunConfig(device="cpu", probabilities="all"), model=tiny_model(),
                  vector=VectorRequest(tmp_path / "scene.gpkg"))
    with rasterio.open(out) as ds:
        assert set(np.unique(ds.read(1)).tolist()) == {0, 1, 2, NODATA}
    return ProductPaths.of(out)


def test_run_writes_the_whole_product_from_the_command_line(make_tif, tmp_path, model_folder) -> None:
    scene = make_tif(smooth_image((3, 120, 150), seed=1), descriptions=("b1", "b2", "b3"))
    out = tmp_path / "s.mask.tif"
    result = runner.invoke(app, ["run", str(scene), "-o", str(out), "--model", str(model_folder), "--device", "cpu",
                                 "--probabilities", "top", "--vector", str(tmp_path / "s.fgb"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    paths = ProductPaths.of(out)
    assert summary["files"] == {"mask": str(out), "style": str(paths.style), "stac": str(paths.stac),
                                "legend": str(paths.legend), "probabilities": str(paths.probabilities)}
    assert all(Path(p).is_file() for p in summary["files"].values()) and (tmp_path / "s.fgb").is_file()
    assert summary["vector"]["polygons"] >= 1 and summary["output_format"] == "cog"
    assert not [p for p in tmp_path.iterdir() if "partial" in p.name]


@needs_gdalinfo
def test_gdalinfo_reads_a_cog_with_palette_categories_overviews_and_the_scene_grid(product, make_tif) -> None:
    info = json.loads(subprocess.run(["gdalinfo", "-json", str(product.mask)], capture_output=True, text=True,
                                     check=True).stdout)
    with rasterio.open(product.mask) as ds:
        transform = ds.transform
    assert info["coordinateSystem"]["wkt"].endswith('ID["EPSG",32633]]')
    assert info["geoTransform"] == [330000.0, 10.0, 0.0, 5822040.0, 0.0, -10.0] == list(transform.to_gdal())
    assert info["size"] == [900, 700]
    assert info["metadata"]["IMAGE_STRUCTURE"]["LAYOUT"] == "COG"
    band = info["bands"][0]
    assert band["block"] == [512, 512] and band["type"] == "Byte" and band["noDataValue"] == NODATA
    assert band["colorInterpretation"] == "Palette" and len(band["overviews"]) >= 1
    assert band["categories"][:3] == ["a", "b", "c"]  # the tiny card's class names
    entries = band["colorTable"]["entries"]
    assert entries[0] == [255, 0, 0, 255] and entries[1] == [0, 255, 0, 255] and entries[NODATA][3] == 0
    assert "GEOSEG_RECORD" in info["metadata"][""] and json.loads(info["metadata"][""]["CLASSES"]) == ["a", "b", "c"]


@needs_gdalinfo
def test_the_cog_passes_gdals_and_rio_cogeos_validators(product) -> None:
    for path in (product.mask, product.probabilities):
        rio = subprocess.run([str(RIO), "cogeo", "validate", str(path)], capture_output=True, text=True)
        assert rio.returncode == 0 and "is a valid cloud optimized GeoTIFF" in rio.stdout, rio.stdout + rio.stderr
        if SYSTEM_PYTHON.exists():
            gdal = subprocess.run([str(SYSTEM_PYTHON), "-m", "osgeo_utils.samples.validate_cloud_optimized_geotiff",
                                   str(path)], capture_output=True, text=True)
            if "No module named" not in gdal.stderr:
                assert gdal.returncode == 0 and "is a valid cloud optimized GeoTIFF" in gdal.stdout, gdal.stderr


@pytest.mark.skipif(not _has_qgis(), reason="needs QGIS (apt-get install qgis python3-qgis) for the system python")
def test_qgis_loads_the_styled_mask_and_the_polygons_and_renders_the_class_colours(product, tmp_path) -> None:
    png = tmp_path / "render.png"
    script = Path(__file__).with_name("qgis_check.py")
    proc = subprocess.run([str(SYSTEM_PYTHON), str(script), str(product.mask), str(tmp_path / "scene.gpkg"), str(png)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "QT_QPA_PLATFORM": "offscreen"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stdout + proc.stderr
    found = json.loads(lines[-1])
    assert found["mask_valid"] and found["style_loaded"] and found["renderer"] == "paletted"
    assert [(c["value"], c["label"], c["color"]) for c in found["classes"]] == [
        (0, "a", "#ff0000"), (1, "b", "#00ff00"), (2, "c", "#0000ff")]
    assert found["crs"] == "EPSG:32633" and found["extent"] == [330000.0, 5815040.0, 339000.0, 5822040.0]
    assert found["vector_valid"] and found["vector_crs"] == "EPSG:32633"
    assert {"class", "name", "area_m2"} <= set(found["vector_fields"]) and found["vector_count"] > 3
    # The rendered PNG, pixel for pixel against the mask's classes: QGIS drew the class colours where they are.
    with rasterio.open(png) as img, rasterio.open(product.mask) as ds:
        rgba, labels = img.read(), ds.read(1)
    assert rgba.shape[1:] == labels.shape
    colours = {0: (255, 0, 0), 1: (0, 255, 0), 2: (0, 0, 255)}
    rng = np.random.default_rng(0)
    for row, col in zip(rng.integers(0, 700, 200), rng.integers(0, 900, 200), strict=True):
        value = int(labels[row, col])
        if value == NODATA:
            assert rgba[3, row, col] == 0  # nodata stays transparent
        else:
            assert tuple(rgba[:3, row, col]) == colours[value], (row, col, value)


def test_the_cog_overview_is_the_mode_of_the_mask(product) -> None:
    """The overview QGIS shows zoomed out: each pixel the most frequent class of its 2 x 2 cell."""
    from geoseg.io.overviews import mode2x2

    with rasterio.open(product.mask) as ds:
        labels = ds.read(1)
        assert ds.overviews(1) == [2]
        with rasterio.open(product.mask, overview_level=0) as level:
            overview = level.read(1)
    np.testing.assert_array_equal(overview, mode2x2(labels, NODATA))



def test_the_stac_item_validates_and_describes_the_mask(product) -> None:
    item = json.loads(product.stac.read_text())
    _validate(item)
    with rasterio.open(product.mask) as ds:
        labels = ds.read(1)
        transform = ds.transform
    assert item["properties"]["proj:epsg"] == 32633 and item["properties"]["proj:shape"] == [700, 900]
    assert item["properties"]["proj:transform"] == list(transform)[:6]
    band = item["assets"]["mask"]["raster:bands"][0]
    assert band["nodata"] == NODATA and band["data_type"] == "uint8" and band["spatial_resolution"] == 10.0
    classes = {c["value"]: c for c in band["classification:classes"]}
    for value in (0, 1, 2):
        assert classes[value]["count"] == int((labels == value).sum())
    assert classes[0]["color_hint"] == "FF0000" and classes[NODATA]["nodata"] is True
    assert abs(sum(classes[v]["percentage"] for v in (0, 1, 2)) - 100) < 1e-3
    assert item["assets"]["mask"]["href"] == "./scene.mask.tif"
    assert item["assets"]["style"]["href"] == "./scene.mask.qml"
    assert any(link["rel"] == "derived_from" for link in item["links"])
    # The schemas can fail: a colour that is not RRGGBB is caught.
    with pytest.raises(jsonschema.ValidationError, match=r"is not valid|does not match"):
        bad = json.loads(product.stac.read_text())
        bad["assets"]["mask"]["raster:bands"][0]["classification:classes"][0]["color_hint"] = "red"
        _validate(bad)


def test_probabilities_are_on_the_grid_quantised_and_agree_with_the_mask(product) -> None:
    with rasterio.open(product.mask) as ds, rasterio.open(product.probabilities) as probs:
        labels, values = ds.read(1), probs.read()
        assert probs.transform == ds.transform and probs.crs == ds.crs and probs.count == 3
        assert probs.scales == (1 / 250,) * 3 and probs.tags()["PROBABILITY_SCALE"] == "250"
    valid = labels != NODATA
    assert (values[:, ~valid] == NODATA).all() and (values[:, valid] <= 250).all()
    total = values[:, valid].astype(int).sum(axis=0)
    assert np.abs(total - 250).max() <= 2  # probabilities sum to one, up to rounding each band
    chosen = np.take_along_axis(values, labels[None].astype(np.int64) % 3, axis=0)[0]
    assert (chosen[valid] >= values.max(axis=0)[valid] - 1).all()  # the mask's class has the top probability


def test_a_replaced_products_layers_go_with_it_and_others_are_only_named(make_tif, tmp_path, model_folder) -> None:
    """A mask written over with --overwrite takes the old product's probabilities and uncertainty with it when this
    run writes none (they belonged to the mask it replaced); without --overwrite, such a layer beside a new mask is
    left and named in a warning; a file geoseg did not write is never touched."""
    scene = make_tif(smooth_image((3, 120, 150), seed=1), descriptions=("b1", "b2", "b3"))
    out = tmp_path / "s.mask.tif"
    paths = ProductPaths.of(out)
    base = ["run", str(scene), "-o", str(out), "--model", str(model_folder), "--device", "cpu", "--format", "gtiff"]
    first = runner.invoke(app, [*base, "--probabilities", "top", "--uncertainty", "margin"])
    assert first.exit_code == 0, first.output
    paths.probabilities.with_name(paths.probabilities.name + ".aux.xml").write_text("<PAMDataset/>")  # a client's

    again = runner.invoke(app, [*base, "--overwrite", "--uncertainty", "margin"])
    assert again.exit_code == 0, again.output
    assert not paths.probabilities.exists() and not Path(f"{paths.probabilities}.aux.xml").exists()
    assert paths.uncertainty.is_file()  # written again by this run
    assert f"{paths.probabilities}: removed: the probabilities layer of the mask this run replaced" in again.stderr

    for path in (out, paths.style, paths.stac, paths.legend):  # a new mask where an earlier one's layer is left:
        path.unlink()  # named, not removed
    third = runner.invoke(app, base)
    assert third.exit_code == 0, third.output
    assert paths.uncertainty.is_file()
    assert f"{paths.uncertainty}: an earlier run's uncertainty layer is beside this mask" in third.stderr

    paths.uncertainty.unlink()
    paths.probabilities.write_bytes(b"not geoseg's")
    fourth = runner.invoke(app, [*base, "--overwrite"])
    assert fourth.exit_code == 0, fourth.output
    assert paths.probabilities.read_bytes() == b"not geoseg's" and "removed" not in fourth.stderr


def test_plain_geotiff_format_and_top_probability(make_tif, tmp_path, tiny_model) -> None:
    scene = make_tif(smooth_image((3, 300, 400), seed=9))
    out = tmp_path / "m.tif"
    summary = segment_scene(scene, out, RunConfig(device="cpu", output_format="gtiff", probabilities="top"),
                            model=tiny_model())
    with rasterio.open(out) as ds, rasterio.open(ProductPaths.of(out).probabilities) as probs:
        assert ds.block_shapes == [(256, 256)] and ds.overviews(1) == [] and probs.count == 1
        assert probs.read(1).min() >= 250 // 3  # the top of three probabilities is at least a third
    assert summary.finish_seconds == 0 and summary.output_format == "gtiff"
    assert sorted(summary.files) == ["legend", "mask", "probabilities", "stac", "style"]


def test_the_summary_has_class_statistics(make_tif, tmp_path, tiny_model) -> None:
    scene = make_tif(smooth_image((3, 200, 300), seed=2), res=20.0)
    summary = segment_scene(scene, tmp_path / "m.tif", RunConfig(device="cpu"), model=tiny_model())
    with rasterio.open(tmp_path / "m.tif") as ds:
        labels = ds.read(1)
    for c in summary.class_stats:
        pixels = int((labels == c["value"]).sum())
        assert c["pixels"] == pixels and c["area_ha"] == pytest.approx(pixels * 400 / 1e4)
    assert sum(c["share"] for c in summary.class_stats) == pytest.approx(1, abs=1e-5)


def test_every_cog_overview_level_is_the_mode_of_the_one_above(make_tif, tmp_path, tiny_model) -> None:
    """A scene wide enough for three levels: the first ones are halved on the device as the strips are made
    (geoseg.engine.blender.DEVICE_OVERVIEW_LEVELS), so each level must still be the mask halved level by level."""
    from geoseg.io.overviews import mode2x2

    data = smooth_image((3, 300, 2600), seed=5)
    data[:, :40, :300] = -9999
    scene = make_tif(data, nodata=-9999)
    out = tmp_path / "wide.mask.tif"
    segment_scene(scene, out, RunConfig(device="cpu"), model=tiny_model())
    with rasterio.open(out) as ds:
        expected = ds.read(1)
        assert ds.overviews(1) == [2, 4, 8]
    for k in range(3):
        padded = np.full((expected.shape[0] + expected.shape[0] % 2, expected.shape[1] + expected.shape[1] % 2),
                         NODATA, np.uint8)
        padded[: expected.shape[0], : expected.shape[1]] = expected
        expected = mode2x2(padded, NODATA)
        with rasterio.open(out, overview_level=k) as level:
            np.testing.assert_array_equal(level.read(1), expected, err_msg=f"overview level {k + 1}")


def test_the_stac_item_dates_the_acquisition_and_outlines_the_projected_footprint(tmp_path, tiny_model) -> None:
    """The Item's datetime is when the scene was acquired (its product name here), not when the mask was made;
    the footprint is the UTM scene's outline in lon/lat, whose edges are not parallels and meridians."""
    from tests.helpers import write_tif

    named = write_tif(tmp_path / "S2A_MSIL2A_20230704T101609_N0509_R065_T32UNU_20230704T165213.tif",
                      smooth_image((3, 64, 80)))
    segment_scene(named, tmp_path / "named.tif", RunConfig(device="cpu"), model=tiny_model())
    item = json.loads((tmp_path / "named.json").read_text())
    assert item["properties"]["datetime"] == "2023-07-04T10:16:09Z"
    assert item["properties"]["geoseg:datetime_source"] == "file name"
    assert item["properties"]["created"] != item["properties"]["datetime"]
    ring = item["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1] and len(ring) > 5
    lons = sorted({round(x, 9) for x, _ in ring})
    assert len(lons) > 4  # a box of the bounds would have two longitudes only
    plain = write_tif(tmp_path / "plain.tif", smooth_image((3, 64, 80)))
    os.utime(plain, (1_600_000_000, 1_600_000_000))
    segment_scene(plain, tmp_path / "plain.mask.tif", RunConfig(device="cpu"), model=tiny_model())
    item = json.loads((tmp_path / "plain.mask.json").read_text())
    assert item["properties"]["datetime"] == "2020-09-13T12:26:40Z"  # the file's time, and it says so
    assert "modification time" in item["properties"]["geoseg:datetime_source"]
    _validate(item)
