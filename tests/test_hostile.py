"""The hostile corpus: what a hostile tester did to geoseg (issue 28), each case run through the real CLI.

Every case must end in one ``geoseg: error:`` line (or a clean success where the input is legitimate),
with its documented exit code, no traceback, no partial file at a final path, and every input untouched.
The cases that once exhausted memory run in a child process whose peak resident memory is measured
(below 2 GiB). Cases kept beside the code they test: clusters in tests/cluster/test_security.py, the
ONNX export cache in tests/engine/test_backends.py; the older bad-input corpus is tests/test_bad_inputs.py.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.io.outputs import OutputLock
from geoseg.io.publish import process_tag
from geoseg.io.writing import ProductPaths
from tests.helpers import geoseg_process as child
from tests.helpers import smooth_image, write_tif

runner = CliRunner()
NAMES = ("b1", "b2", "b3")
#: The most a hostile case may take (resident memory of the process that ran it).
PEAK_LIMIT = 2 * 2**30


def scene(folder: Path, name: str = "s.tif", shape=(3, 96, 80)) -> Path:
    return write_tif(folder / name, smooth_image(shape, seed=1, dtype="uint16"), descriptions=NAMES)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line(result, code: int, *pieces: str) -> str:
    """The CLI ended with ``code`` and one error line holding every piece; that line."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg: error: "), result.stderr
    for piece in pieces:
        assert piece in lines[0], lines[0]
    return lines[0]


def no_partials(folder: Path) -> None:
    assert not [p for p in folder.rglob("*") if ".partial-" in p.name or p.name.endswith(".lock")]


# --- security -------------------------------------------------------------------------------------------------

def test_a_raw_vrt_band_over_a_system_file_is_refused(tmp_path, model_folder) -> None:
    vrt = tmp_path / "raw.vrt"
    vrt.write_text('<VRTDataset rasterXSize="64" rasterYSize="16"><VRTRasterBand dataType="Byte" band="1" '
                   'subClass="VRTRawRasterBand"><SourceFilename relativetoVRT="0">/etc/passwd</SourceFilename>'
                   '<ImageOffset>0</ImageOffset><PixelOffset>1</PixelOffset><LineOffset>64</LineOffset>'
                   '</VRTRasterBand></VRTDataset>')
    for command in (["info", str(vrt)], ["run", str(vrt), "--model", str(model_folder), "--bands", "1,1,1"]):
        one_line(runner.invoke(app, command), 3, "raw.vrt", "VRTRawRasterBand", "GDAL_VRT_ENABLE_RAWRASTERBAND")
    assert not (tmp_path / "raw.mask.tif").exists()
    no_partials(tmp_path)


def test_gdal_gets_timeouts_and_no_raw_bands_unless_the_user_set_them(monkeypatch) -> None:
    from geoseg.io.gdal_env import GDAL_DEFAULTS, apply_defaults

    for key in GDAL_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "5")  # the user's own value wins
    apply_defaults()
    assert os.environ["GDAL_HTTP_TIMEOUT"] == "5"
    assert os.environ["GDAL_VRT_ENABLE_RAWRASTERBAND"] == "NO" and int(os.environ["GDAL_HTTP_MAX_RETRY"]) >= 1


@pytest.fixture
def stalled_server():
    """An HTTP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for s in [*held, server]:
        s.close()


def test_a_stalled_remote_source_ends_the_run_in_one_line_and_is_listed(tmp_path, model_folder, stalled_server,
                                                                         monkeypatch) -> None:
    local = scene(tmp_path, "local.tif")
    url = f"/vsicurl/http://127.0.0.1:{stalled_server}/remote.tif"
    vrt = tmp_path / "mosaic.vrt"
    with rasterio.open(local) as ds:
        bands = "".join(
            f'<VRTRasterBand dataType="UInt16" band="{b}"><Description>{NAMES[b - 1]}</Description><SimpleSource>'
            f'<SourceFilename relativeToVRT="0">{url}</SourceFilename><SourceBand>{b}</SourceBand></SimpleSource>'
            f'</VRTRasterBand>' for b in (1, 2, 3))
        vrt.write_text(f'<VRTDataset rasterXSize="{ds.width}" rasterYSize="{ds.height}"><SRS>{ds.crs.to_wkt()}</SRS>'
                       f'<GeoTransform>{", ".join(map(str, ds.transform.to_gdal()))}</GeoTransform>{bands}'
                       f'</VRTDataset>')
    info = runner.invoke(app, ["info", str(vrt), "--json"])
    assert info.exit_code == 0 and json.loads(info.stdout)["remote_sources"] == [url]
    monkeypatch.setenv("GDAL_HTTP_TIMEOUT", "2")  # the default (60 s) is the same path, slower
    monkeypatch.setenv("GDAL_HTTP_MAX_RETRY", "0")
    result = runner.invoke(app, ["run", str(vrt), "--model", str(model_folder), "--device", "cpu", "--quiet"])
    one_line(result, 3, "mosaic.vrt", "remote source")
    no_partials(tmp_path)


def test_a_list_file_s_lines_are_never_echoed(tmp_path, model_folder) -> None:
    secrets = tmp_path / "shadow"
    secrets.write_text("root:$y$SECRET-HASH-1:19000:0:99999:7:::\ndaemon:*SECRET-2:19000\n")
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", f"@{secrets}", "-o", str(out), "--model", str(model_folder)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    written = result.output + "".join(p.read_text() for p in out.iterdir() if p.is_file())
    assert "SECRET" not in written
    summary = json.loads((out / "geoseg-batch-summary.json").read_text())
    assert [s["error"] for s in summary["scenes"]] == [f"{secrets} line {n}: not a path to an existing file (the line "
                                                       f"is not shown); fix the list" for n in (1, 2)]


# --- data loss and silently wrong results ---------------------------------------------------------------------

def test_a_full_disk_never_leaves_a_broken_product_and_exits_6(tmp_path, model_folder) -> None:
    """Writes past a file-size limit fail as on a full disk. Every attempt ends in exit 6 with nothing at the
    final paths, or in exit 0 with every product readable to its last tile; never exit 0 with a broken file."""
    source = write_tif(tmp_path / "s.tif", smooth_image((3, 600, 700), seed=3, dtype="uint16"), descriptions=NAMES)
    outcomes = []
    # 1 kB: smaller than the mask header alone (its colour table is 1.5 kB), so that attempt must fail whatever
    # the random network predicts; the larger limits cut the files at other points.
    for limit in (1_000, 20_000, 120_000, 400_000, 10**9):
        out = tmp_path / f"out-{limit}"
        out.mkdir()
        code, stderr, _ = child(["run", str(source), "-o", str(out / "m.tif"), "--model", str(model_folder),
                                 "--device", "cpu", "--backend", "torch", "--probabilities", "all", "--quiet"],
                                file_limit=limit)
        outcomes.append(code)
        assert "Traceback" not in stderr, stderr
        # libtiff's own "_tiffWriteProc: ..." lines are counted by geoseg now, not printed
        assert all(line.startswith("geoseg: ") for line in stderr.strip().splitlines()), stderr
        if code == 6:
            assert stderr.strip().startswith("geoseg: error: ") and len(stderr.strip().splitlines()) == 1, stderr
            assert not list(out.iterdir()), list(out.iterdir())  # nothing at a final path, no partial left
        else:
            assert code == 0, stderr
            for path in (out / "m.tif", out / "m.probs.tif"):
                with rasterio.open(path) as ds:
                    ds.read()
    assert outcomes[0] == 6 and outcomes[-1] == 0, outcomes


def test_a_truncated_product_is_caught_before_it_is_published(tmp_path, model_folder, monkeypatch) -> None:
    """Where GDAL reports success for a file it did not finish, the tile table check catches it."""
    import geoseg.io.writing as writing

    real = writing.RASTER_FORMATS["cog"]

    def finish_then_lose_the_tail(working: Path, product: Path, resampling: str) -> None:
        real.finish(working, product, resampling)  # type: ignore[misc]
        with product.open("r+b") as f:
            f.truncate(product.stat().st_size - 300)

    monkeypatch.setitem(writing.RASTER_FORMATS, "cog", writing.RasterFormat("cog", real.description, real.working,
                                                                            finish_then_lose_the_tail))
    source = scene(tmp_path)
    before = snapshot(tmp_path)
    result = runner.invoke(app, ["run", str(source), "--model", str(model_folder), "--device", "cpu", "--quiet"])
    one_line(result, 6, "s.mask.tif", "cut short")
    assert snapshot(tmp_path) == before


def test_an_output_that_is_an_input_is_refused_whatever_its_name(tmp_path, model_folder) -> None:
    source = scene(tmp_path)
    shutil.copy(source, tmp_path / "m.probs.tif")
    shutil.copy(source, tmp_path / "m.uncertainty.tif")
    os.link(source, tmp_path / "linked.json")
    before = snapshot(tmp_path)
    cases = [  # the probabilities' and uncertainty's names, with --overwrite; a hard link at the STAC Item's name;
        # the mask itself
        (["run", str(tmp_path / "m.probs.tif"), "-o", str(tmp_path / "m.tif"), "--probabilities", "top",
          "--overwrite"], "probabilities"),
        (["run", str(tmp_path / "m.uncertainty.tif"), "-o", str(tmp_path / "m.tif"), "--uncertainty", "margin",
          "--overwrite"], "uncertainty"),
        (["run", str(source), "-o", str(tmp_path / "linked.tif"), "--overwrite"], "STAC Item"),
        (["run", str(source), "-o", str(source), "--overwrite"], "is the input scene"),
    ]
    for args, piece in cases:
        one_line(runner.invoke(app, [*args, "--model", str(model_folder)]), 6, piece)
    assert snapshot(tmp_path) == before


def test_outputs_of_one_run_that_collide_are_refused_before_work(tmp_path, model_folder) -> None:
    source = scene(tmp_path)
    result = runner.invoke(app, ["run", str(source), "-o", str(tmp_path / "vj.tif"), "--vector",
                                 str(tmp_path / "vj.json"), "--model", str(model_folder)])
    one_line(result, 6, "vj.json", "STAC Item", "vector layer")
    assert not (tmp_path / "vj.tif").exists() and not (tmp_path / "vj.json").exists()
    no_partials(tmp_path)


def test_a_second_run_to_the_same_output_gets_exit_6(tmp_path, model_folder) -> None:
    source = scene(tmp_path)
    out = tmp_path / "m.tif"
    with OutputLock(out):  # a run writing m.tif now
        result = runner.invoke(app, ["run", str(source), "-o", str(out), "--model", str(model_folder)])
    one_line(result, 6, "m.tif", "another geoseg run is writing it")
    assert not out.exists()
    done = runner.invoke(app, ["run", str(source), "-o", str(out), "--model", str(model_folder), "--quiet"])
    assert done.exit_code == 0 and out.is_file()
    no_partials(tmp_path)


def test_a_file_that_appears_during_a_run_is_never_replaced_without_overwrite(tmp_path) -> None:
    from geoseg.errors import OutputError
    from geoseg.io.publish import Staging

    final = tmp_path / "m.tif"
    with Staging() as staging:
        staging.stage(final).write_bytes(b"ours")
        final.write_bytes(b"theirs")  # another program, after the run checked its outputs
        with pytest.raises(OutputError, match="appeared while this run wrote it"):
            staging.publish(last=final, overwrite=False)
    assert final.read_bytes() == b"theirs"
    no_partials(tmp_path)


def test_labels_on_another_crs_are_refused(tmp_path) -> None:
    from rasterio.crs import CRS

    mask = write_tif(tmp_path / "mask.tif", np.ones((1, 64, 64), np.uint8))
    labels = write_tif(tmp_path / "labels.tif", np.ones((1, 64, 64), np.uint8), crs=CRS.from_epsg(32632))
    one_line(runner.invoke(app, ["evaluate", str(mask), str(labels)]), 3, "labels.tif", "EPSG:32632", "EPSG:32633")


def test_nan_statistics_or_weights_are_refused_at_load_and_by_models_check(tmp_path, model_folder) -> None:
    from safetensors.torch import load_file, save_file

    source = scene(tmp_path)
    nan_std = tmp_path / "nan-std"
    shutil.copytree(model_folder, nan_std)
    card = json.loads((nan_std / "config.json").read_text())
    card["std"][1] = float("nan")
    (nan_std / "config.json").write_text(json.dumps(card))
    nan_weights = tmp_path / "nan-weights"
    shutil.copytree(model_folder, nan_weights)
    tensors = load_file(nan_weights / "model.safetensors")
    tensors["segmentation_head.0.weight"][0, 0] = float("nan")
    save_file(tensors, str(nan_weights / "model.safetensors"))
    one_line(runner.invoke(app, ["run", str(source), "--model", str(nan_std)]), 5, "every std must be a finite")
    one_line(runner.invoke(app, ["models", "check", str(nan_std)]), 5, "every std must be a finite")
    one_line(runner.invoke(app, ["run", str(source), "--model", str(nan_weights), "--device", "cpu"]), 5,
             "NaN or infinite", "segmentation_head.0.weight")
    one_line(runner.invoke(app, ["models", "check", str(nan_weights)]), 5, "NaN or infinite")
    no_partials(tmp_path)
    assert not (tmp_path / "s.mask.tif").exists()


@pytest.mark.parametrize("template", ["../x_{stem}.tif", "/tmp/{stem}.tif", "sub/../../{stem}.tif"])
def test_name_templates_stay_inside_the_output_folder(tmp_path, model_folder, template) -> None:
    (tmp_path / "in").mkdir()
    source = scene(tmp_path / "in", "s.tif")
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(source), "-o", str(out), "--name", template, "--model",
                                 str(model_folder)])
    one_line(result, 2, "inside the output folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", model_folder.name]


@pytest.mark.parametrize("out", ["s3://bucket/m.tif", "/vsis3/bucket/m.tif", "https://example.com/m.tif"])
def test_a_mask_to_a_url_is_refused_with_what_to_do_instead(tmp_path, model_folder, out) -> None:
    source = scene(tmp_path)
    result = runner.invoke(app, ["run", str(source), "-o", out, "--model", str(model_folder)])
    one_line(result, 6, "writes the mask to a local folder", "aws s3 cp")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, model_folder.name])


def test_a_batch_to_a_url_is_refused_before_any_scene(tmp_path, model_folder, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = scene(tmp_path)
    result = runner.invoke(app, ["batch", str(source), "-o", "s3://bucket/masks", "--model", str(model_folder)])
    one_line(result, 2, "s3:/bucket/masks is a URL or GDAL virtual path", "aws s3 cp")
    assert not (tmp_path / "s3:").exists()


def test_a_name_template_of_another_format_is_refused_before_any_scene(tmp_path, model_folder) -> None:
    (tmp_path / "in").mkdir()
    source = scene(tmp_path / "in", "s.tif")
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(source), "-o", str(out), "--name", "{stem}.PNG", "--model",
                                 str(model_folder)])
    one_line(result, 2, "names masks '.PNG', but a mask is a GeoTIFF")
    assert not out.exists()


def test_a_parent_named_dot_dot_cannot_lead_a_mask_out(tmp_path, model_folder) -> None:
    from geoseg.batch.jobs import Job
    from geoseg.errors import ConfigError

    job = Job(name="j", inputs=(), output_dir=tmp_path / "out", name_template="{parent}/{stem}.tif")
    assert job.output_for(tmp_path / "a" / "s.tif") == tmp_path / "out" / "a" / "s.tif"
    with pytest.raises(ConfigError, match="outside the output folder"):
        job.output_for(Path("../s.tif"))


# --- hangs, memory bombs --------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", ["run", "info"])
def test_a_fifo_as_the_scene_is_refused_before_it_is_opened(tmp_path, model_folder, command) -> None:
    fifo = tmp_path / "pipe.tif"
    os.mkfifo(fifo)
    args = [command, str(fifo)] + (["--model", str(model_folder)] if command == "run" else [])
    code, stderr, _ = child(args, timeout=120)
    assert code == 3 and "is a FIFO" in stderr and len(stderr.strip().splitlines()) == 1, stderr


def test_a_batch_with_a_fifo_among_its_scenes_fails_that_scene_and_finishes(tmp_path, model_folder) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    scene(folder, "a.tif")
    os.mkfifo(folder / "b.tif")
    code, stderr, _ = child(["batch", str(folder / "*.tif"), "-o", str(tmp_path / "out"), "--model",
                             str(model_folder), "--device", "cpu", "--quiet"], timeout=240)
    assert code == 1 and "Traceback" not in stderr, stderr
    summary = json.loads((tmp_path / "out" / "geoseg-batch-summary.json").read_text())
    assert {Path(s["input"]).name: s["status"] for s in summary["scenes"]} == {"a.tif": "done", "b.tif": "failed"}


def _alias_bomb(path: Path) -> Path:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_memory_bombs_are_refused_before_allocation(tmp_path, model_folder) -> None:
    source = scene(tmp_path, shape=(3, 256, 256))
    big_tile = tmp_path / "big-tile"
    shutil.copytree(model_folder, big_tile)
    card = json.loads((big_tile / "config.json").read_text())
    card["tile_size"] = 10**9
    (big_tile / "config.json").write_text(json.dumps(card))
    cases = [
        (["batch", "--job", str(_alias_bomb(tmp_path / "bomb.yaml"))], 2, "YAML aliases"),
        (["batch", str(source), "-o", str(tmp_path / "o1"), "--name", "{stem:>400000000}.tif", "--model",
          str(model_folder)], 2, "format width"),
        (["run", str(source), "--model", str(big_tile), "--device", "cpu"], 5, "tile_size"),
        (["run", str(source), "--model", str(model_folder), "--tile-size", "65536", "--device", "cpu"], 2,
         "larger than 4096"),
        (["run", str(source), "--model", str(model_folder), "--batch-size", "1000000000", "--device", "cpu"], 2,
         "batch size"),
    ]
    for args, code, piece in cases:
        got, stderr, peak = child(args)
        assert (got, len(stderr.strip().splitlines())) == (code, 1) and piece in stderr, (args, stderr)
        assert peak < PEAK_LIMIT, (args, peak)
    no_partials(tmp_path)


def test_stats_of_a_mask_a_million_pixels_wide_stay_small(tmp_path) -> None:
    path = tmp_path / "wide.tif"
    profile = dict(driver="GTiff", width=1_000_000, height=1100, count=1, dtype="uint8", nodata=255, tiled=True,
                   blockxsize=512, blockysize=512, compress="deflate", sparse_ok=True, crs="EPSG:32633",
                   transform=rasterio.Affine(10, 0, 300000, 0, -10, 5800000))
    with rasterio.open(path, "w", **profile) as ds:  # sparse: unwritten tiles read as 0 (class 0)
        ds.write(np.ones((1, 512, 512), np.uint8), window=rasterio.windows.Window(0, 0, 512, 512))
        ds.update_tags(CLASSES=json.dumps(["a", "b"]))
    code, stderr, peak = child(["export", "stats", str(path), "--json"], timeout=600)
    assert code == 0, stderr
    assert peak < PEAK_LIMIT, peak


# --- one line, not a traceback --------------------------------------------------------------------------------

def test_an_unwritable_batch_log_is_one_line(tmp_path, model_folder) -> None:
    source = scene(tmp_path)
    (tmp_path / "a-file").write_text("")
    result = runner.invoke(app, ["batch", str(source), "-o", str(tmp_path / "out"), "--model", str(model_folder),
                                 "--log", str(tmp_path / "a-file" / "log.jsonl")])
    one_line(result, 6, "log.jsonl", "the batch's log cannot be written")


def _unwritable(monkeypatch, folder: Path) -> None:
    """``folder`` not writable (root ignores permissions, so os.access says what a user would get)."""
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == folder and mode == os.W_OK
                        else real(path, mode))


def test_unwritable_outputs_are_one_line_before_work(tmp_path, model_folder, monkeypatch) -> None:
    source = scene(tmp_path)
    ro = tmp_path / "ro"
    ro.mkdir()
    _unwritable(monkeypatch, ro)
    labels = write_tif(tmp_path / "labels.tif", np.ones((1, 96, 80), np.uint8))
    mask = write_tif(tmp_path / "mask.tif", np.ones((1, 96, 80), np.uint8))
    one_line(runner.invoke(app, ["run", str(source), "--model", str(model_folder), "--vector", str(ro / "v.gpkg")]),
             6, "v.gpkg", "not writable")
    assert not (tmp_path / "s.mask.tif").exists()  # refused before the mask was written
    one_line(runner.invoke(app, ["train", str(source), "--labels", str(labels), "-o", str(ro / "model")]), 6,
             "not writable")
    one_line(runner.invoke(app, ["export", "vector", str(mask), "-o", str(ro / "v.gpkg")]), 6, "not writable")
    (tmp_path / "a-file").write_text("")
    one_line(runner.invoke(app, ["evaluate", str(mask), str(labels), "-o", str(tmp_path / "a-file" / "e.csv")]), 6,
             "e.csv")


@pytest.mark.parametrize(("classes", "piece"), [
    ("- {name: water, color: red}\n", "colour 'red'"),
    ("- {name: water, color: {a: x}}\n", "colour"),
    ("- {name: water, color: [1]}\n", "colour [1]"),
    ("- {name: water, color: [300, -1, 0]}\n", "colour [300, -1, 0]"),
    ('- "wat\\x07er"\n', "control characters"),
    ("{a: water}\n", "class values must be 0..N-1"),
])
def test_bad_class_tables_are_one_line(tmp_path, classes, piece) -> None:
    (tmp_path / "classes.yaml").write_text(classes)
    result = runner.invoke(app, ["models", "import", str(tmp_path / "src"), "-o", str(tmp_path / "pkg"), "--classes",
                                 str(tmp_path / "classes.yaml"), "--bands", "b1,b2,b3"])
    one_line(result, 2, "classes.yaml", piece)
    assert not (tmp_path / "pkg").exists()


@pytest.mark.parametrize(("change", "piece"), [
    ({"scaling": {"integer_scale": "x"}}, "integer_scale must be a finite number"),
    ({"classes": [{"value": 0, "name": "a\nb", "color": [1, 2, 3]}]}, "control characters"),
    ({"classes": [{"value": 0, "name": "a", "color": [300, -1, 0]}]}, "0..255"),
])
def test_bad_cards_are_one_line(tmp_path, model_folder, change, piece) -> None:
    folder = tmp_path / "model"
    shutil.copytree(model_folder, folder)
    card = {**json.loads((folder / "config.json").read_text()), **change}
    (folder / "config.json").write_text(json.dumps(card))
    one_line(runner.invoke(app, ["run", str(scene(tmp_path)), "--model", str(folder)]), 5, piece)


def test_control_characters_in_names_never_reach_the_terminal(tmp_path, model_folder) -> None:
    weird = tmp_path / "scene\x1b[2J\x1b[31m.tif"
    line = one_line(runner.invoke(app, ["run", str(weird), "--model", str(model_folder)]), 3, "no such file")
    assert "\x1b" not in line and "\\x1b" in line


def test_run_removes_partial_files_of_killed_runs(tmp_path, model_folder) -> None:
    source = scene(tmp_path)
    host = process_tag().split("~")[1]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    leftover = tmp_path / f".s.mask.tif.partial-{dead.pid}~{host}"
    leftover.write_bytes(b"half a mask")
    alive = tmp_path / f".other.tif.partial-{os.getpid()}~{host}"  # a live process's: left alone
    alive.write_bytes(b"in progress")
    result = runner.invoke(app, ["run", str(source), "--model", str(model_folder), "--quiet"])
    assert result.exit_code == 0, result.output
    assert not leftover.exists() and alive.exists()
    assert {p.name for p in tmp_path.iterdir()} == {"s.tif", alive.name, model_folder.name,
                                                    *(p.name for p in ProductPaths.of(tmp_path / "s.mask.tif")
                                                      .roles(False).values())}


def test_device_on_the_command_line_wins_over_a_job_file(tmp_path, model_folder) -> None:
    source = scene(tmp_path)
    job = tmp_path / "job.yaml"
    job.write_text(json.dumps({"jobs": [{"name": "j", "inputs": [str(source)], "output_dir": str(tmp_path / "out"),
                                         "model": str(model_folder), "device": "cuda:7"}]}))
    result = runner.invoke(app, ["batch", "--job", str(job), "--device", "cpu", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "s.mask.tif").is_file()


def test_a_mistyped_model_folder_and_a_folder_as_scene_say_what_to_do(tmp_path, model_folder) -> None:
    source = scene(tmp_path)
    one_line(runner.invoke(app, ["run", str(source), "--model", "../runs/landcovr"]), 5,
             "model folder '../runs/landcovr' does not exist")
    (tmp_path / "folder").mkdir()
    one_line(runner.invoke(app, ["run", str(tmp_path / "folder"), "--model", str(model_folder)]), 3,
             "is a directory", "geoseg batch FOLDER -o OUT")


def test_every_train_option_has_help() -> None:
    from typer.main import get_command

    train = get_command(app).commands["train"]  # type: ignore[attr-defined]
    options = [p for p in train.params if p.param_type_name == "option"]
    assert len(options) > 20 and not [p.name for p in options if not p.help]


# --- STAC Items and per-band files (geoseg.io.stack), the warm service ----------------------------------------

def _band_item(folder: Path, hrefs: list[str]) -> Path:
    """A STAC Item of single-band assets at ``hrefs`` (blue, green, red: the test model's three inputs)."""
    assets = {name: {"href": href, "type": "image/tiff; application=geotiff", "roles": ["data"],
                     "eo:bands": [{"name": name, "common_name": name}]}
              for name, href in zip(("b1", "b2", "b3"), hrefs, strict=True)}
    item = folder / "item.json"
    item.write_text(json.dumps({"type": "Feature", "stac_version": "1.0.0", "id": "item", "geometry": None,
                                "properties": {"datetime": "2020-01-01T00:00:00Z"}, "assets": assets}))
    return item


def _bands(folder: Path) -> list[Path]:
    data = smooth_image((3, 64, 64), seed=4, dtype="uint16")
    return [write_tif(folder / f"s_{name}.tif", data[i : i + 1]) for i, name in enumerate(NAMES)]


def test_an_item_whose_asset_is_a_fifo_is_refused_before_it_is_opened(tmp_path, model_folder) -> None:
    bands = _bands(tmp_path)
    os.mkfifo(tmp_path / "pipe.tif")
    item = _band_item(tmp_path, [str(bands[0]), str(tmp_path / "pipe.tif"), str(bands[2])])
    code, stderr, _ = child(["run", str(item), "--model", str(model_folder), "--device", "cpu"], timeout=120)
    assert code == 3 and "is a FIFO" in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not list(tmp_path.glob("item.*.*"))  # no stack, no mask


def test_a_full_disk_at_the_stack_is_one_line_and_leaves_nothing(tmp_path, model_folder) -> None:
    bands = _bands(tmp_path)
    item = _band_item(tmp_path, [str(b) for b in bands])
    out = tmp_path / "out"
    out.mkdir()
    code, stderr, _ = child(["run", str(item), "-o", str(out / "m.tif"), "--model", str(model_folder), "--device",
                             "cpu"], file_limit=200)  # the stack VRT is larger than 200 bytes
    assert code == 6 and "m.bands.vrt: cannot be written" in stderr, stderr
    assert len(stderr.strip().splitlines()) == 1 and not list(out.iterdir())


def test_a_service_whose_folders_cannot_be_made_is_one_line(tmp_path, monkeypatch) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "a-file" / "state"))  # under a file: no folder there
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    one_line(runner.invoke(app, ["serve", "start", "--cpu-workers", "1"]), 6, "the service's files cannot be written")


def test_a_folder_of_too_many_files_is_not_walked_as_a_product(tmp_path, monkeypatch) -> None:
    from geoseg.io import products

    monkeypatch.setattr(products, "MAX_PRODUCT_FILES", 10)
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(12):
        (folder / f"f{i}.txt").write_text("x")
    one_line(runner.invoke(app, ["run", str(folder)]), 2, "more than a product", "geoseg batch FOLDER")


def test_the_report_passes_over_a_garbled_log_and_an_oversized_item(tmp_path, monkeypatch) -> None:
    from geoseg.batch import report

    monkeypatch.setattr(report, "MAX_ITEM_BYTES", 1000)
    folder = tmp_path / "out"
    folder.mkdir()
    for name, pad in (("a", 10), ("big", 2000)):  # an Item over the limit is not read, its mask not listed
        (folder / f"{name}.tif").write_bytes(b"")
        (folder / f"{name}.json").write_text(json.dumps({"type": "Feature", "assets": {"mask": {}}, "pad": "x" * pad}))
    lines = ["not json", json.dumps({"event": "scene_failed", "input": "b.tif", "output": str(folder / "b.tif"),
                                     "error": "<script>alert(1)</script>", "seconds": "NaN"}),
             "{" + "x" * (report.MAX_EVENT_BYTES + 10) + "}", json.dumps(["a list"])]
    (folder / "geoseg-batch.jsonl").write_text("\n".join(lines) + "\n")
    result = runner.invoke(app, ["report", str(folder)])
    assert result.exit_code == 0, result.output
    page = (folder / "report.html").read_text()
    assert "&lt;script&gt;" in page and "<script>alert" not in page  # messages are escaped
    assert "1 failed" in page and "1 done" in page and "big.tif" not in page


@pytest.mark.parametrize(("command", "limit"), [
    (["models", "export", "{model}", "-o", "{out}/m.onnx"], 64),
    (["models", "import", "{model}", "-o", "{out}/pkg", "--bands", "b1,b2,b3", "--classes", "a,b,c"], 64),
    # the package's small files fit, its weights (about 56 MB) do not
    (["models", "import", "{model}", "-o", "{out}/pkg", "--bands", "b1,b2,b3", "--classes", "a,b,c"], 1_000_000),
    (["export", "vector", "{mask}", "-o", "{out}/v.gpkg"], 64),
    (["export", "stats", "{mask}", "-o", "{out}/s.csv"], 64),
    (["assess", "design", "{mask}", "-o", "{out}/s.gpkg", "--n", "60"], 64),
    (["evaluate", "{mask}", "{mask}", "-o", "{out}/e.csv"], 64),
])
def test_a_full_disk_under_any_writing_command_is_one_line(tmp_path, model_folder, command, limit) -> None:
    """Every command that writes a file, on a full disk (a file-size limit stands in for it):
    exit 6 on one line naming what failed, and nothing left in its output folder."""
    source = scene(tmp_path)
    mask = tmp_path / "m.tif"
    made = runner.invoke(app, ["run", str(source), "-o", str(mask), "--model", str(model_folder), "--device", "cpu",
                               "--quiet"])
    assert made.exit_code == 0, made.output
    out = tmp_path / "out"
    out.mkdir()
    args = [a.format(model=model_folder, mask=mask, out=out) for a in command]
    code, stderr, _ = child(args, file_limit=limit)
    assert code == 6 and "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("geoseg: error: ") and len(lines[0]) < 400, stderr
    assert str(out) in lines[0]  # names the file it could not write
    assert not list(out.iterdir()), list(out.iterdir())


def test_a_library_s_long_error_is_cut_to_one_readable_line() -> None:
    from geoseg.errors import reason

    sql = RuntimeError("sqlite3_exec(CREATE TABLE gpkg_contents (x TEXT);INSERT INTO t VALUES ('a)b')) failed: "
                       "disk I/O error\nsecond line")
    assert reason(sql) == "SQLite: disk I/O error"
    assert reason(OSError()) == "OSError"
    long = reason(ValueError("x" * 500))
    assert len(long) == 200 and long.endswith("…")


def test_a_full_cache_is_named_for_an_exported_backend_and_auto_runs_on(tmp_path, model_folder) -> None:
    """The CPU backends export the network into geoseg's cache (about 56 MB here); on a full disk (a 5 MB file-size
    limit) an asked-for backend ends in exit 6 naming the cache, not 'cannot run this network' (exit 5);
    ``--backend auto`` says so once and runs with PyTorch."""
    source = scene(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    args = ["run", str(source), "-o", str(out / "m.tif"), "--model", str(model_folder), "--device", "cpu"]
    code, stderr, _ = child([*args, "--backend", "onnxruntime"], file_limit=5_000_000)
    assert code == 6 and len(stderr.strip().splitlines()) == 1, stderr
    assert "export for --backend onnxruntime cannot be written" in stderr and "GEOSEG_CACHE_DIR" in stderr
    assert not list(out.iterdir())
    code, stderr, _ = child([*args, "--backend", "auto", "--quiet"], file_limit=5_000_000)
    assert code == 0 and "it ran with PyTorch" in stderr, stderr
    with rasterio.open(out / "m.tif") as ds:
        ds.read()
