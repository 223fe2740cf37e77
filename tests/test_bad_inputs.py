"""A corpus of bad and awkward inputs, built here (never committed as binaries), each run through
the real CLI: `geoseg run` gives one line naming the file and the fix with a documented exit code
(or succeeds, for awkward-but-valid inputs), never a traceback, never touches the input, and never
leaves anything at the final output path; `geoseg batch` records each failure and goes on."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.io.writing import ProductPaths
from tests.helpers import smooth_image, write_tif

runner = CliRunner()
NAMES = ("b1", "b2", "b3")


@dataclass
class Case:
    build: Callable[[Path, Path], tuple[Path, list[str]]]  # (folder, model folder) -> (scene, extra args)
    code: int
    message: str  # a piece of the error line (or of a warning, when code is 0)
    in_batch: bool = True  # a per-scene failure that `geoseg batch` must record
    setup: Callable[[pytest.MonkeyPatch], None] | None = None
    out: str | None = None  # -o relative to the folder; default beside the scene
    check: Callable[[Path, Path], None] | None = field(default=None)
    about: str = "scene"  # what the error line must name: scene, out, model (or flag: the setting)


def good(folder: Path, name: str = "good.tif", shape=(3, 70, 90), **kw) -> Path:
    return write_tif(folder / name, smooth_image(shape), descriptions=NAMES, **kw)


def _empty(f, m):
    (f / "empty.tif").write_bytes(b"")
    return f / "empty.tif", []


def _text(f, m):
    (f / "readme.tif").write_text("this is not a GeoTIFF\n")
    return f / "readme.tif", []


def _truncated(f, m):
    path = good(f, "truncated.tif", shape=(3, 300, 300), block=64)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, []


def _corrupt_block(f, m):
    path = good(f, "corrupt.tif", shape=(3, 512, 512), block=64)
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item("BLOCK_OFFSET_4_4", "TIFF", bidx=1))
    with path.open("r+b") as fh:  # garbage in the middle of one compressed tile
        fh.seek(offset)
        fh.write(b"\xff\x00\xaa\x55" * 16)
    return path, []


def _zero_size(f, m):
    vrt = f / "zero.vrt"
    vrt.write_text('<VRTDataset rasterXSize="0" rasterYSize="0"><VRTRasterBand dataType="Byte" band="1"/></VRTDataset>')
    return vrt, []


def _one_by_one(f, m):
    return good(f, "1x1.tif", shape=(3, 1, 1)), []


def _one_by_100000(f, m):
    return good(f, "1x100000.tif", shape=(3, 1, 100_000), block=16), ["--batch-size", "64"]


def _too_few_bands(f, m):
    return write_tif(f / "two.tif", smooth_image((2, 40, 40)), descriptions=NAMES[:2]), []


def _band_name_missing(f, m):
    return good(f, "named.tif"), ["--bands", "b1,b2,swir"]


def _band_index_missing(f, m):
    return good(f, "indexed.tif"), ["--bands", "1,2,9"]


def _complex(f, m):
    data = (smooth_image((3, 30, 30)) + 1j).astype("complex64")
    return write_tif(f / "complex.tif", data, descriptions=NAMES), []


def _all_nodata(f, m):
    return write_tif(f / "nodata.tif", np.zeros((3, 50, 60), "uint16"), nodata=0, descriptions=NAMES), []


def _nan(f, m):
    return write_tif(f / "nan.tif", np.full((3, 50, 60), np.nan, "float32"), descriptions=NAMES), []


def _no_crs(f, m):
    return write_tif(f / "nocrs.tif", smooth_image((3, 50, 60)), crs=None, descriptions=NAMES), []


def _no_georeference(f, m):
    path = f / "nogeo.tif"
    with rasterio.open(path, "w", driver="GTiff", width=60, height=50, count=3, dtype="float32") as ds:  # identity
        ds.write(smooth_image((3, 50, 60)))
        ds.descriptions = NAMES
    return path, []


def _rotated(f, m):
    path = good(f, "rotated.tif")
    with rasterio.open(path, "r+") as ds:
        ds.transform = Affine(8.66, 5.0, 330000, 5.0, -8.66, 5822040)
    return path, []


def _check_same_grid(scene: Path, out: Path) -> None:
    with rasterio.open(scene) as src, rasterio.open(out) as dst:
        assert (dst.transform, dst.width, dst.height) == (src.transform, src.width, src.height)


def _check_all_nodata(scene: Path, out: Path) -> None:
    with rasterio.open(out) as dst:
        assert (dst.read(1) == 255).all()


def _unwritable(mp: pytest.MonkeyPatch) -> None:  # root ignores permissions: say what a user would get
    import geoseg.io.outputs

    real = geoseg.io.outputs.os.access
    mp.setattr(geoseg.io.outputs.os, "access", lambda path, mode: False if mode == geoseg.io.outputs.os.W_OK
               else real(path, mode))


def _no_space(mp: pytest.MonkeyPatch) -> None:
    import geoseg.io.writing

    mp.setattr(geoseg.io.writing.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 10, 10))


def _unknown_model(f, m):
    return good(f), ["--model", "sentinel-magic"]


def _model_missing_weights(f, m):
    folder = f / "no-weights"
    folder.mkdir()
    shutil.copy(m / "config.json", folder / "config.json")
    return good(f), ["--model", str(folder)]


def _model_corrupt_weights(f, m):
    folder = f / "bad-weights"
    shutil.copytree(m, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[:1000])
    return good(f), ["--model", str(folder)]


def _pickled(f, m):
    folder = f / "pickled"
    folder.mkdir()
    shutil.copy(m / "config.json", folder / "config.json")
    from safetensors.torch import load_file

    torch.save(load_file(m / "model.safetensors"), folder / "model.pt")
    return good(f), ["--model", str(folder)]


def _dir_as_scene(f, m):
    (f / "scenes.tif").mkdir()
    return f / "scenes.tif", []


def _missing(f, m):
    return f / "nowhere.tif", []


def _with(args: list[str], name: str = "good.tif") -> Callable[[Path, Path], tuple[Path, list[str]]]:
    return lambda f, m: (good(f, name), list(args))


CASES: dict[str, Case] = {
    "empty-file": Case(_empty, 3, "not a raster GDAL can read"),
    "text-named-tif": Case(_text, 3, "not a raster GDAL can read"),
    "truncated-geotiff": Case(_truncated, 3, "truncated.tif"),
    "corrupt-block-mid-file": Case(_corrupt_block, 3, "cannot be read"),
    "zero-size-raster": Case(_zero_size, 3, "zero.vrt"),
    "1x1": Case(_one_by_one, 0, ""),
    "1x100000": Case(_one_by_100000, 0, ""),
    "too-few-bands": Case(_too_few_bands, 4, "has 2 band(s) but the model needs 3"),
    "band-name-not-found": Case(_band_name_missing, 4, "'swir'", in_batch=False),
    "band-index-not-found": Case(_band_index_missing, 4, "band 9 does not exist", in_batch=False),
    "complex-dtype": Case(_complex, 3, "complex64 is not supported"),
    "all-nodata": Case(_all_nodata, 0, "no valid pixels", check=_check_all_nodata),
    "nan-filled-float": Case(_nan, 0, "no valid pixels", check=_check_all_nodata),
    "no-crs-warns": Case(_no_crs, 0, "has no CRS", check=_check_same_grid),
    "no-georeference-at-all": Case(_no_georeference, 0, "has no CRS", check=_check_same_grid),
    "rotated-transform": Case(_rotated, 0, "", check=_check_same_grid),
    "output-folder-not-writable": Case(_with([]), 6, "is not writable", in_batch=False, setup=_unwritable,
                                       out="out/m.tif", about="out"),
    "output-folder-missing": Case(_with([]), 6, "does not exist", in_batch=False, out="missing/m.tif", about="out"),
    "mask-named-as-png": Case(_with([]), 2, "the mask is a GeoTIFF, but the name ends in '.png'", in_batch=False,
                              out="m.png", about="out"),
    "output-is-input": Case(_with([]), 6, "is the input scene", in_batch=False, out="good.tif", about="scene"),
    "output-larger-than-free-disk": Case(_with([]), 6, "MiB free", setup=_no_space, about="out"),
    "unknown-model": Case(_unknown_model, 5, "unknown model 'sentinel-magic'", in_batch=False, about="model"),
    "model-missing-weights": Case(_model_missing_weights, 5, "missing", in_batch=False, about="model"),
    "model-corrupt-weights": Case(_model_corrupt_weights, 5, "weights cannot be read", in_batch=False, about="model"),
    "pickled-checkpoint": Case(_pickled, 5, "pass --trust-checkpoint", in_batch=False, about="model"),
    "tile-not-multiple-of-32": Case(_with(["--tile-size", "100"]), 2, "multiple of 32", in_batch=False, about="flag"),
    "overlap-not-below-tile": Case(_with(["--overlap", "64"]), 2, "smaller than the tile size", in_batch=False,
                                   about="flag"),
    "unknown-blend": Case(_with(["--blend", "box"]), 2, "blend window 'box'", in_batch=False, about="flag"),
    "directory-as-scene": Case(_dir_as_scene, 3, "is a directory", in_batch=False),  # batch reads folders
    "missing-file": Case(_missing, 3, "no such file"),
}


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("name", list(CASES))
def test_run_on_a_bad_or_awkward_input(name, tmp_path, model_folder, monkeypatch) -> None:
    case = CASES[name]
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "out").mkdir()
    scene, args = case.build(folder, model_folder)
    out = folder / case.out if case.out else scene.with_name(scene.stem + ".mask.tif")
    if case.setup:
        case.setup(monkeypatch)
    before = _snapshot(folder)
    result = runner.invoke(app, ["run", str(scene), "--model", str(model_folder), "-o", str(out), *args])

    assert result.exit_code == case.code, result.output
    assert "Traceback" not in result.output
    after = _snapshot(folder)
    for path, data in before.items():  # every input (and everything else) untouched
        assert after.get(path) == data, path
    new = set(after) - set(before)
    if case.code == 0:  # the mask and its sidecars, nothing else
        paths = ProductPaths.of(out)
        assert new == {str(p.relative_to(folder)) for p in (paths.mask, paths.style, paths.stac, paths.legend)}
        assert case.message in result.stderr
        if case.check:
            case.check(scene, out)
    else:
        assert new == set()  # nothing at the final path, no temporary file left behind
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and case.message in lines[0], result.stderr
        named = {"scene": scene.name, "out": out.name, "model": "model", "flag": ""}[case.about]
        assert named in lines[0], lines[0]


def test_trusting_a_pickled_checkpoint_loads_it(tmp_path, model_folder) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    scene, args = _pickled(folder, model_folder)
    result = runner.invoke(app, ["run", str(scene), *args, "--trust-checkpoint", "--quiet"])
    assert result.exit_code == 0, result.output


def test_batch_records_every_bad_scene_and_finishes_the_good_ones(tmp_path, model_folder, monkeypatch) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    expected = {}
    for name, case in CASES.items():
        if not case.in_batch or case.setup:
            continue
        sub = folder / name
        sub.mkdir()
        scene, _ = case.build(sub, model_folder)
        expected[str(scene)] = case
    good(folder, "fine.tif")
    out = tmp_path / "masks"
    inputs = [*expected, str(folder / "fine.tif")]
    result = runner.invoke(app, ["batch", *inputs, "-o", str(out), "--model", str(model_folder), "--quiet",
                                 "--name", "{parent}-{stem}.tif"])
    assert result.exit_code == 1, result.output
    summary = json.loads((out / "geoseg-batch-summary.json").read_text())
    by_input = {s["input"]: s for s in summary["scenes"]}
    for scene, case in expected.items():
        record = by_input[scene]
        if case.code == 0:
            assert record["status"] == "done", record
        else:
            assert record["status"] == "failed" and case.message in record["error"], record
            assert Path(scene).name in record["error"]
            assert not Path(record["output"]).exists()
    assert by_input[str(folder / "fine.tif")]["status"] == "done"
    assert summary["counts"]["failed"] == sum(c.code != 0 for c in expected.values()) >= 8
    assert not list(out.glob(".*partial*"))


def test_a_scene_without_any_georeference_prints_geoseg_s_lines_only(tmp_path, model_folder) -> None:
    """In a process of its own (in pytest, Python's warnings are captured): rasterio's NotGeoreferencedWarning
    and pyogrio's 'crs was not provided' used to reach the terminal with their source lines."""
    from tests.helpers import geoseg_process

    scene, _ = _no_georeference(tmp_path, model_folder)
    code, stderr, _ = geoseg_process(["run", str(scene), "--model", str(model_folder), "--device", "cpu", "--quiet",
                                      "--vector", str(tmp_path / "v.gpkg")])
    assert code == 0, stderr
    assert all(line.startswith("geoseg: ") for line in stderr.strip().splitlines()), stderr
    assert "has no CRS" in stderr
