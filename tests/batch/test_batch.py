"""`geoseg batch`: resume, isolation, reports, job files, signals and leftovers, through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoseg.batch.jobs import load_job_file
from geoseg.cli.app import app
from geoseg.errors import ConfigError
from geoseg.io.publish import clean_leftovers
from geoseg.io.record import read_record
from tests.helpers import run_batch_cli as batch
from tests.helpers import small_scenes as scenes
from tests.helpers import smooth_image, write_tif

runner = CliRunner()
WORKFLOWS = Path(__file__).resolve().parents[2] / "workflows"



def test_resume_skips_done_scenes_and_redoes_changed_ones(tmp_path, model_folder) -> None:
    inputs = scenes(tmp_path / "in", 4)
    out = tmp_path / "out"
    code, first = batch(str(tmp_path / "in"), "-o", str(out), "--model", str(model_folder))
    assert code == 0 and first["counts"] == {"done": 4, "skipped": 0, "failed": 0, "cancelled": 0}
    masks = {p.name: p.read_bytes() for p in out.glob("*.mask.tif")}

    code, again = batch(str(tmp_path / "in"), "-o", str(out), "--model", str(model_folder), "--batch-size", "3")
    assert code == 0 and again["counts"]["skipped"] == 4  # speed settings do not invalidate the record

    write_tif(inputs[1], smooth_image((3, 60, 67), seed=99), descriptions=("b1", "b2", "b3"))  # input changed
    code, changed = batch(str(tmp_path / "in"), "-o", str(out), "--model", str(model_folder))
    status = {Path(s["input"]).name: s["status"] for s in changed["scenes"]}
    assert status == {"s00.tif": "skipped", "s01.tif": "done", "s02.tif": "skipped", "s03.tif": "skipped"}

    code, settings = batch(str(tmp_path / "in"), "-o", str(out), "--model", str(model_folder), "--blend", "none")
    assert settings["counts"]["done"] == 4  # a setting that changes the mask redoes everything
    code, forced = batch(str(tmp_path / "in"), "-o", str(out), "--model", str(model_folder), "--blend", "none",
                         "--force")
    assert forced["counts"]["done"] == 4
    assert read_record(out / "s00.mask.tif")["settings"]["blend"] == "none"  # rewritten, with its new record
    assert masks["s00.mask.tif"] != (out / "s00.mask.tif").read_bytes()

    events = [json.loads(line) for line in (out / "geoseg-batch.jsonl").read_text().splitlines()]
    assert {"batch_start", "scene_start", "scene_done", "scene_skipped", "batch_end"} <= {e["event"] for e in events}


def test_a_foreign_file_at_the_output_path_is_not_overwritten(tmp_path, model_folder) -> None:
    scenes(tmp_path / "in", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "s00.mask.tif").write_text("someone else's file")
    code, summary = batch(str(tmp_path / "in"), "-o", str(out), "--model", str(model_folder))
    assert code == 1 and "was not written by geoseg" in summary["scenes"][0]["error"]
    assert (out / "s00.mask.tif").read_text() == "someone else's file"


def test_job_files_and_their_mistakes(tmp_path, model_folder) -> None:
    scenes(tmp_path / "in", 2)
    (tmp_path / "list.txt").write_text("# tonight\nin/s01.tif\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"defaults:\n  model: {model_folder}\n  output_dir: out\njobs:\n"
                   f"  - name: a\n    inputs: ['in/s00.tif']\n    batch_size: 2\n"
                   f"  - name: b\n    inputs: ['@list.txt']\n    name_template: '{{job}}-{{stem}}.tif'\n")
    result = runner.invoke(app, ["batch", "--job", str(job), "--quiet"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("*.tif")) == ["b-s01.tif", "s00.mask.tif"]

    job.write_text("jobs:\n  - inputs: [in]\n    output_dir: out\n    tile_sise: 256\n")
    result = runner.invoke(app, ["batch", "--job", str(job)])
    assert result.exit_code == 2
    assert "unknown key 'tile_sise'; did you mean 'tile_size'?" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    job.write_text("jobs:\n  - inputs: [in]\n    output_dir: out\n    batch_size: many\n")
    with pytest.raises(ConfigError, match="batch size 'many' must be a whole number"):
        load_job_file(job)


@pytest.mark.parametrize("path", sorted(p for p in WORKFLOWS.rglob("*.yaml") if "kubernetes" not in p.parts),
                         ids=lambda p: p.name)  # Kubernetes manifests: tests/test_workflows.py
def test_every_example_job_file_loads(path: Path) -> None:
    jobs = load_job_file(path)
    assert jobs and all(j.inputs and j.output_dir for j in jobs)


def test_leftovers_of_dead_processes_are_removed(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".a.mask.tif.partial-{dead.pid}"
    live = tmp_path / f".b.mask.tif.partial-{os.getpid()}"
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    assert clean_leftovers(tmp_path) == [stale]
    assert live.exists() and not stale.exists()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_stops_cleanly_and_writes_the_summary(tmp_path, model_folder, sig, code) -> None:
    scenes(tmp_path / "in", 6, size=700)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "geoseg.cli", "batch", str(tmp_path / "in"), "-o", str(out),
                             "--model", str(model_folder), "--device", "cpu", "--parallel", "1",
                             "--block-size", "256"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list(out.glob(".*partial*")) and time.time() < deadline:  # wait until a scene is being written
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    summary = json.loads((out / "geoseg-batch-summary.json").read_text())
    assert summary["exit_code"] == code and summary["counts"]["cancelled"] >= 1
    assert not list(out.glob(".*partial*"))  # no temporary file left
    done = {Path(s["output"]).name for s in summary["scenes"] if s["status"] == "done"}
    assert {p.name for p in out.glob("*.mask.tif")} == done  # every mask present is a finished one
    assert "Traceback" not in err


def test_a_folder_holding_its_own_masks_and_sidecars_reruns_cleanly(tmp_path, model_folder) -> None:
    """Masks written beside their scenes (and their probabilities) are never taken as scenes."""
    folder = tmp_path / "in"
    scenes(folder, 3)
    code, first = batch(str(folder), "-o", str(folder), "--model", str(model_folder), "--probabilities", "top")
    assert code == 0 and first["counts"]["done"] == 3
    assert len(list(folder.glob("*.probs.tif"))) == 3 and len(list(folder.glob("*.mask.tif"))) == 3
    code, again = batch(str(folder), "-o", str(folder), "--model", str(model_folder), "--probabilities", "top")
    assert code == 0 and again["counts"] == {"done": 0, "skipped": 3, "failed": 0, "cancelled": 0}


def test_each_output_folder_gets_a_stac_collection_and_a_mosaic(tmp_path, model_folder) -> None:
    import numpy as np
    import rasterio
    from affine import Affine

    from tests.helpers import validate_stac as _validate

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):  # three tiles side by side on one grid
        with rasterio.open(folder / f"t{i}.tif", "w", driver="GTiff", width=80, height=64, count=3, dtype="float32",
                           crs="EPSG:32633", transform=Affine(10, 0, 330000 + 800 * i, 0, -10, 5822040)) as ds:
            ds.write(smooth_image((3, 64, 80), seed=i))
            for b, name in enumerate(("b1", "b2", "b3"), 1):
                ds.set_band_description(b, name)
    out = tmp_path / "out"
    code, summary = batch(str(folder), "-o", str(out), "--model", str(model_folder))
    assert code == 0 and sorted(summary["catalogs"]) == [str(out / "collection.json"), str(out / "geoseg-mosaic.vrt")]
    collection = json.loads((out / "collection.json").read_text())
    _validate(collection)
    assert sorted(link["href"] for link in collection["links"] if link["rel"] == "item") == [
        "./t0.mask.json", "./t1.mask.json", "./t2.mask.json"]
    with rasterio.open(out / "geoseg-mosaic.vrt") as vrt:
        assert (vrt.width, vrt.height) == (240, 64) and vrt.crs.to_epsg() == 32633 and vrt.nodata == 255
        mosaic = vrt.read(1)
        assert sorted(vrt.colormap(1)) == [0, 1, 2]  # one colour per class, not a TIFF's 256 (QGIS's legend)
    for i in range(3):
        with rasterio.open(out / f"t{i}.mask.tif") as ds:
            np.testing.assert_array_equal(mosaic[:, 80 * i : 80 * (i + 1)], ds.read(1))


def test_run_jobs_is_the_whole_batch_as_one_call(tmp_path, model_folder) -> None:
    """What `geoseg batch` does, for a scheduler's script (workflows/slurm/geoseg_slurm.py): folders, log,
    summary and the exit code, a stop's code winning over the scenes'."""
    from geoseg.batch.jobs import Job
    from geoseg.batch.session import Stop, run_jobs
    from geoseg.config import RunConfig

    inputs = scenes(tmp_path / "in", 2)
    job = Job(name="j", inputs=tuple(map(str, inputs)), output_dir=tmp_path / "new" / "out",
              config=RunConfig(model=str(model_folder), device="cpu"))
    done = run_jobs([job])
    assert done.exit_code == 0 and done.counts["done"] == 2
    assert done.files == {"log": str(tmp_path / "new" / "out" / "geoseg-batch.jsonl"),
                          "summary": str(tmp_path / "new" / "out" / "geoseg-batch-summary.json")}
    assert json.loads(Path(done.files["summary"]).read_text())["counts"]["done"] == 2
    stop = Stop()
    stop.request(143)  # SIGTERM before anything ran: nothing starts, the code says why
    stopped = run_jobs([job], force=True, stop=stop)
    assert stopped.exit_code == 143 and stopped.counts["cancelled"] == 2
    with pytest.raises(ConfigError, match="nothing to do"):
        run_jobs([])


def test_without_o_masks_go_beside_their_scenes_and_the_last_line_is_for_people(tmp_path, model_folder) -> None:
    """As `geoseg run` writes: each mask beside its scene; the log and summary beside the first; the last line
    a sentence on stderr; --json puts the summary on stdout."""
    inputs = scenes(tmp_path / "a", 1) + scenes(tmp_path / "b", 1)
    result = runner.invoke(app, ["batch", *map(str, inputs), "--model", str(model_folder), "--quiet", "--json"])
    assert result.exit_code == 0, result.output
    for scene in inputs:
        assert scene.with_name(scene.stem + ".mask.tif").is_file()
    assert all((tmp_path / "a" / name).is_file() for name in ("geoseg-batch.jsonl", "geoseg-batch-summary.json"))
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("geoseg: batch finished: 2 done, 0 skipped, 0 failed, 0 cancelled (exit 0); summary ")
    assert json.loads(result.stdout)["counts"]["done"] == 2
