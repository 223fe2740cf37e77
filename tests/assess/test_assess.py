"""geoseg assess: the stratified estimators against the paper's own example, a sample designed from a real
mask and labelled from a known reference, and interval coverage over repeated samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from geoseg.assess.design import allocate
from geoseg.assess.estimate import Z95, estimate
from geoseg.cli.app import app
from tests.helpers import blobby, write_mask

runner = CliRunner()

# Olofsson et al. 2014, section 5 (Table 8): map rows, reference columns; mapped 30 m pixels (0.09 ha each).
COUNTS = np.array([[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]])
PIXELS = np.array([200_000, 150_000, 3_200_000, 6_450_000])
NAMES = ("deforestation", "forest gain", "stable forest", "stable non-forest")


def test_the_papers_example_to_the_digits_it_prints() -> None:
    r = estimate(COUNTS, PIXELS, NAMES, pixel_area_m2=900.0)
    table9 = [[0.0176, 0, 0.0013, 0.0011], [0, 0.0110, 0.0016, 0.0024], [0.0019, 0, 0.2967, 0.0213],
              [0.0040, 0.0020, 0.0179, 0.6212]]
    assert np.round(r.proportions, 4).tolist() == table9
    assert np.round(r.users, 2).tolist() == [0.88, 0.73, 0.93, 0.96]
    assert np.round(Z95 * r.users_se, 2).tolist() == [0.07, 0.10, 0.04, 0.02]
    assert np.round(r.producers, 2).tolist() == [0.75, 0.85, 0.93, 0.96]
    # Printed 0.21, 0.23, 0.03, 0.01: the paper's equation 7 gives 0.254 and 0.018 for the second and fourth
    # (two printing slips, recomputed independently by others too); the equation is what is tested.
    assert np.round(Z95 * r.producers_se, 2).tolist() == [0.21, 0.25, 0.03, 0.02]
    assert round(r.overall, 2) == 0.95 and round(Z95 * r.overall_se, 2) == 0.02
    ha = r.area_pixels * 0.09
    assert np.round(ha).tolist() == [21158, 11686, 285770, 581386]
    assert np.round(Z95 * r.area_pixels_se * 0.09).tolist() == [6158, 3756, 15510, 16282]


def test_allocation_is_proportional_with_a_minimum() -> None:
    alloc = allocate(PIXELS, 640, 50)
    assert alloc.tolist() == [50, 50, 179, 361] and alloc.sum() == 640
    assert allocate(np.array([0, 10, 1000]), 100, 20).tolist() == [0, 10, 90]  # a stratum gives what it has


def _maps(tmp_path, size=300):
    """A map and a 'true' reference that differs from it in blobs: the reference's class areas are known."""
    reference = blobby((size, size), seed=1)
    error = blobby((size, size), seed=2) == 0  # about a third of the pixels
    shifted = np.where(error & (np.random.default_rng(3).random((size, size)) < 0.3), (reference + 1) % 3, reference)
    mask = write_mask(tmp_path / "map.tif", shifted.astype(np.uint8))
    return mask, reference


def test_design_then_estimate_through_the_cli(tmp_path) -> None:
    mask, reference = _maps(tmp_path)
    designed = runner.invoke(app, ["assess", "design", str(mask), "-o", str(tmp_path / "s.gpkg"), "--n", "150",
                                   "--min-per-class", "30", "--seed", "4", "--json"])
    assert designed.exit_code == 0, designed.output
    plan = json.loads(designed.stdout)
    assert plan["points"] == 150 and all(s["points"] >= 30 for s in plan["strata"])
    # a person labels the points: here, from the known reference, through the GeoPackage's own field
    import pyogrio

    meta, _, geometry, fields = pyogrio.raw.read(tmp_path / "s.gpkg", layer="sample")
    import shapely

    points = shapely.from_wkb(geometry)
    with rasterio.open(mask) as ds:
        rows, cols = rasterio.transform.rowcol(ds.transform, shapely.get_x(points), shapely.get_y(points))
    labels = np.array([str(reference[r, c]) for r, c in zip(rows, cols, strict=True)], object)
    labels[:3] = None  # three points not labelled: counted, left out
    names = list(meta["fields"])
    pyogrio.raw.write(tmp_path / "labelled.gpkg", geometry=geometry, field_data=[*fields[:4], labels],
                      fields=names, crs=meta["crs"], driver="GPKG", geometry_type="Point", layer="sample",
                      layer_metadata=pyogrio.read_info(tmp_path / "s.gpkg", layer="sample")["layer_metadata"])
    result = runner.invoke(app, ["assess", "estimate", str(tmp_path / "labelled.gpkg"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sample_points"] == 147 and report["points_left_out"] == {"not labelled": 3}
    true_share = np.bincount(reference.ravel(), minlength=3) / reference.size
    for c in report["classes"]:
        # one sample: its 95 % interval should hold the truth (a 5 % miss is possible; the seed is fixed)
        assert abs(c["area_share"] - true_share[c["value"]]) <= c["area_share_ci95"], (c, true_share)
        assert c["area_ha"] == pytest.approx(c["area_pixels"] * 100 / 1e4)  # 10 m pixels
    text = runner.invoke(app, ["assess", "estimate", str(tmp_path / "labelled.gpkg")], terminal_width=200)
    assert "overall accuracy" in text.stdout and "3 point(s) left out: not labelled" in text.stdout


def test_95_percent_intervals_cover_the_true_areas_about_95_percent_of_the_time() -> None:
    """Repeated stratified samples of a known map and reference (the estimators, no files): the 95 % interval
    of each class's area covers the true area in about 95 % of repetitions."""
    rng = np.random.default_rng(0)
    size = 200_000
    mapped = rng.choice(3, size, p=[0.1, 0.3, 0.6])
    truth = np.where(rng.random(size) < 0.15, rng.choice(3, size), mapped)  # 15 % of pixels relabelled at random
    true_share = np.bincount(truth, minlength=3) / size
    pixels = np.bincount(mapped, minlength=3)
    per_class = allocate(pixels, 300, 50)
    strata = [np.flatnonzero(mapped == h) for h in range(3)]
    covered = np.zeros(3)
    runs = 400
    for _ in range(runs):
        counts = np.zeros((3, 3), np.int64)
        for h in range(3):
            chosen = rng.choice(strata[h], per_class[h], replace=False)
            counts[h] += np.bincount(truth[chosen], minlength=3)
        r = estimate(counts, pixels, ("a", "b", "c"))
        covered += np.abs(r.area_share - true_share) <= Z95 * r.area_share_se
    coverage = covered / runs
    assert ((coverage > 0.91) & (coverage < 0.99)).all(), coverage


def test_estimate_reads_a_reference_raster_at_the_points(tmp_path) -> None:
    mask, reference = _maps(tmp_path)
    truth = write_mask(tmp_path / "truth.tif", reference.astype(np.uint8))
    assert runner.invoke(app, ["assess", "design", str(mask), "-o", str(tmp_path / "s.gpkg"), "--n", "120",
                               "--min-per-class", "30"]).exit_code == 0
    result = runner.invoke(app, ["assess", "estimate", str(tmp_path / "s.gpkg"), "--reference", str(truth), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sample_points"] == 120 and report["points_left_out"] == {"not labelled": 0}
    with rasterio.open(mask) as a:
        agree = float((a.read(1) == reference).mean())
    assert abs(report["overall_accuracy"] - agree) <= 2 * report["overall_accuracy_ci95"]


QGIS_CHECK = """
import json, os, sys
from qgis.core import QgsApplication, QgsVectorLayer
app = QgsApplication([], False)
app.initQgis()
layer = QgsVectorLayer(sys.argv[1], "sample", "ogr")
message, ok = layer.loadNamedStyle(sys.argv[2])
renderer = layer.renderer()
print(json.dumps({"valid": layer.isValid(), "ok": ok, "type": renderer.type(), "attr": renderer.classAttribute(),
                  "labels": [c.label() for c in renderer.categories()],
                  "colors": [c.symbol().color().name() for c in renderer.categories()]}), flush=True)
os._exit(0)
"""


def test_the_samples_style_shows_the_points_by_class_in_qgis(tmp_path) -> None:
    import shutil
    import subprocess
    import xml.etree.ElementTree as ET

    mask, _ = _maps(tmp_path)
    with rasterio.open(mask, "r+") as ds:
        ds.write_colormap(1, {0: (0, 0, 255), 1: (0, 128, 0), 2: (255, 255, 0)})
    assert runner.invoke(app, ["assess", "design", str(mask), "-o", str(tmp_path / "s.gpkg"), "--n", "60",
                               "--min-per-class", "10"]).exit_code == 0
    style = ET.parse(tmp_path / "s.qml").getroot().find("renderer-v2")
    assert style.get("type") == "categorizedSymbol" and style.get("attr") == "map_class"
    assert [c.get("label") for c in style.iter("category")] == ["water", "forest", "field"]
    python = shutil.which("python3", path="/usr/bin")
    ready = python and subprocess.run([python, "-c", "import qgis.core"], capture_output=True).returncode == 0
    if not ready:
        pytest.skip("QGIS (apt-get install qgis python3-qgis) is not installed for the system python")
    done = subprocess.run([python, "-c", QGIS_CHECK, str(tmp_path / "s.gpkg"), str(tmp_path / "s.qml")],
                          capture_output=True, text=True, timeout=120, env={"QT_QPA_PLATFORM": "offscreen",
                                                                             "PATH": "/usr/bin:/bin"})
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["valid"] and found["ok"] and found["type"] == "categorizedSymbol" and found["attr"] == "map_class"
    assert found["labels"] == ["water", "forest", "field"]
    assert found["colors"] == ["#0000ff", "#008000", "#ffff00"]
