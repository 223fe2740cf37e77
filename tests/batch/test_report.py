"""report.html: a batch's page, self-contained, its quicklooks from overviews only, checked in a real browser."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.io import MemoryFile
from typer.testing import CliRunner

from geoseg.batch.report import DIRECT_EDGE, REPORT_NAME, quicklook
from geoseg.cli.app import app
from tests.helpers import smooth_image, write_tif

runner = CliRunner()


def _batch(tmp_path: Path, model_folder: Path) -> Path:
    """A batch of two scenes (RGB named, one with overviews) and a broken one; its output folder."""
    scenes = tmp_path / "in"
    scenes.mkdir()
    for i, shape in enumerate(((3, 300, 420), (3, 260, 200))):
        path = write_tif(scenes / f"s{i}.tif", smooth_image(shape, seed=i, dtype="uint16"),
                         descriptions=("red", "green", "blue"))
        if i == 0:
            with rasterio.open(path, "r+") as ds:
                ds.build_overviews([2, 4], Resampling.average)
    (scenes / "broken.tif").write_bytes(b"not a tiff")
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(scenes), "-o", str(out), "--model", str(model_folder), "--bands",
                                 "1,2,3", "--device", "cpu", "--quiet"])
    assert result.exit_code == 1, result.output  # the broken scene failed, the others are done
    return out


def _images(page: str) -> list[np.ndarray]:
    pictures = []
    for data in re.findall(r"src='data:image/png;base64,([^']+)'", page):
        with MemoryFile(base64.b64decode(data)) as memory, memory.open() as png:
            pictures.append(png.read())
    return pictures


def test_a_batch_writes_its_report_with_quicklooks_failures_and_totals(tmp_path, model_folder) -> None:
    out = _batch(tmp_path, model_folder)
    page = (out / REPORT_NAME).read_text()
    assert "s0.tif" in page and "s1.tif" in page and "broken.tif" in page
    assert "2 done" in page and "1 failed" in page
    assert re.search(r"class='error'>[^<]*broken\.tif", page)  # the failure's own message
    assert "http://" not in page and "https://" not in page  # nothing from the network
    pictures = _images(page)
    assert len(pictures) == 2 and page.count("<img ") == 2
    assert all(p.shape[0] == 3 and p.max() > p.min() for p in pictures)  # true colour with the mask over it
    assert "geoseg report" not in page  # no stray template text
    for klass in ("a", "b", "c"):
        assert f"</span> {klass}: " in page  # the legend with each class's share


def test_geoseg_report_rewrites_the_page_from_the_log_and_names_mistakes(tmp_path, model_folder) -> None:
    out = _batch(tmp_path, model_folder)
    (out / REPORT_NAME).unlink()
    result = runner.invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert "3 scene(s)" in result.output
    page = (out / REPORT_NAME).read_text()
    assert "1 failed" in page and len(_images(page)) == 2
    missing = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and missing.output.count("\n") == 1 and "is not a folder" in missing.output


def test_quicklooks_come_from_overviews_never_a_full_read(tmp_path) -> None:
    big = DIRECT_EDGE + 100
    labels = (np.arange(big)[None, :] // 300 % 3).astype(np.uint8).repeat(40, axis=0)
    path = write_tif(tmp_path / "m.tif", labels[None], block=256)
    with rasterio.open(path, "r+") as ds:
        ds.write_colormap(1, {0: (255, 0, 0, 255), 1: (0, 255, 0, 255), 2: (0, 0, 255, 255)})
    look = quicklook(path, None)
    assert look.png is None and "no overviews" in look.note
    with rasterio.open(path, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.mode)
    look = quicklook(path, None)
    assert look.png is not None and look.note is None


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_report_loads_in_a_real_browser_with_every_image(tmp_path, model_folder) -> None:
    out = _batch(tmp_path, model_folder)
    proc = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                           "--v=0", "--virtual-time-budget=5000", "--dump-dom", (out / REPORT_NAME).as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    shown = re.search(r'data-images="(\d+)" data-images-shown="(\d+)"', proc.stdout)
    assert shown is not None, proc.stdout[:500]
    assert shown.group(1) == shown.group(2) == "2"
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
