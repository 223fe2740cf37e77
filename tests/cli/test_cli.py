"""The real CLI through typer's runner, with a small smp U-Net in a model folder."""

from __future__ import annotations

import json

import pytest
import rasterio
from typer.testing import CliRunner

from geoseg.cli.app import app
from tests.conftest import smooth_image

runner = CliRunner()


def test_run_writes_the_mask_and_prints_json(make_tif, model_folder) -> None:
    scene = make_tif(smooth_image((3, 100, 130)), name="s.tif", descriptions=("b1", "b2", "b3"))
    result = runner.invoke(app, ["run", str(scene), "--model", str(model_folder), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["output"] == str(scene.with_name("s.mask.tif")) and summary["band_match"] == "name"
    with rasterio.open(summary["output"]) as ds:
        assert set(ds.read(1).ravel()) <= {0, 1, 2}


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--tile-size", "100"], 2, "not a positive multiple of 32"),
        (["--overlap", "64"], 2, "smaller than the tile size"),
        (["--bands", "1,9,2"], 4, "band 9 does not exist"),
        (["--model", "nonesuch"], 5, "unknown model 'nonesuch'"),
        (["--device", "cuda:7"], 7, "cuda:7"),
        (["--cuda-graphs", "--device", "cpu"], 2, "CUDA graphs need a CUDA device"),
        (["-o", "{scene}"], 6, "is the input scene"),
    ],
)
def test_user_mistakes_give_one_line_and_an_exit_code(make_tif, model_folder, args, code, message) -> None:
    scene = make_tif(smooth_image((3, 40, 40)), descriptions=("b1", "b2", "b3"))
    args = [a.replace("{scene}", str(scene)) for a in args]
    result = runner.invoke(app, ["run", str(scene), "--model", str(model_folder), *args])
    assert result.exit_code == code, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_missing_and_non_raster_inputs(tmp_path) -> None:
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    for path, message in ((tmp_path / "absent.tif", "no such file"), (text, "not a raster GDAL can read")):
        result = runner.invoke(app, ["run", str(path)])
        assert result.exit_code == 3 and message in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.tif"]


def test_bad_flag_value_is_a_usage_error(make_tif) -> None:
    result = runner.invoke(app, ["run", str(make_tif(smooth_image((3, 8, 8)))), "--blend", "hann"])
    flat = " ".join(result.output.replace("│", " ").split())  # typer draws usage errors in a box
    assert result.exit_code == 2 and "'hann' is not one of cosine, gaussian, none" in flat


def test_models_lists_builtin_models_as_json() -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0
    names = [c["name"] for c in json.loads(result.stdout)]
    assert names == ["csmask-6b-l1c", "csmask-6b-l2a", "csmask-4b-l1c", "csmask-4b-l2a"]


def test_info_reports_the_fitting_model(make_tif) -> None:
    six = ("blue", "green", "red", "nir", "swir16", "swir22")
    scene = make_tif(smooth_image((6, 30, 30), dtype="uint16"), descriptions=six, nodata=0)
    result = runner.invoke(app, ["info", str(scene), "--json"])
    facts = json.loads(result.stdout)
    assert facts["model"].startswith("csmask-6b-l1c (bands 1,2,3,4,5,6 matched by name)")
    assert facts["dtype"] == "uint16" and facts["nodata"] == 0 and facts["crs"] == "EPSG:32633"


@pytest.mark.parametrize("command", ["run", "batch"])
def test_help_shows_the_defaults_that_depend_on_the_machine(command) -> None:
    """Defaults written into help texts survive rich's markup (unescaped, "[default: ...]" vanished)."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    for shown in ("[default: CPU cores minus one]", "[default: on a GPU]", "[default: from free GPU memory"):
        assert shown in result.output


def test_run_and_batch_take_every_run_setting() -> None:
    """Both commands build their RunConfig from their own parameters (geoseg.cli.options.run_config)."""
    import inspect

    from geoseg.cli.batch import batch
    from geoseg.cli.run import run
    from geoseg.run import SETTINGS

    for command in (run, batch):
        assert set(SETTINGS) <= set(inspect.signature(command).parameters), command.__name__
