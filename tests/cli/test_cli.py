"""The real CLI through typer's runner, with a small smp U-Net in a model folder."""

from __future__ import annotations

import json

import pytest
import rasterio
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.errors import ConfigError
from tests.helpers import smooth_image

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
        (["--decode", "gpu", "--device", "cpu"], 2, "--decode gpu cannot be used: the device is cpu, not a CUDA GPU"),
        (["--decode", "fast"], 2, "'fast'"),
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
    unnamed = make_tif(smooth_image((4, 30, 30), dtype="uint16"))  # an aerial RGBN file, bands unnamed
    facts = json.loads(runner.invoke(app, ["info", str(unnamed), "--json"]).stdout)
    assert "matched by position" in facts["model"] and "pass --sensor" in facts["model"]


@pytest.mark.parametrize("command", ["run", "batch"])
def test_help_shows_the_defaults_that_depend_on_the_machine(command) -> None:
    """Defaults written into help texts survive rich's markup (unescaped, "[default: ...]" vanished)."""
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())  # help is wrapped to the width
    for shown in ("[default: CPU cores minus one]", "[default: on a GPU]", "[default: from free GPU memory"):
        assert shown in text


def test_run_and_batch_take_every_run_setting() -> None:
    """Both commands have one option per RunConfig setting (geoseg.cli.options.with_run_settings)."""
    from typer.main import get_command

    from geoseg.config import SETTINGS

    group = get_command(app)
    for name in ("run", "batch"):
        options = {p.name for p in group.commands[name].params}  # type: ignore[attr-defined]
        assert set(SETTINGS) <= options, name


@pytest.mark.parametrize("command", ["run", "batch"])
def test_options_reach_the_run_config(command, make_tif, tmp_path, monkeypatch, model_folder) -> None:
    """What the command line says is what the library gets, parsed (bands) and checked."""
    from geoseg import run as run_module
    from geoseg.batch import runner as batch_runner
    from geoseg.config import RunConfig

    seen: list[RunConfig] = []

    def stop(scene, output, config, **kw):
        seen.append(config)
        raise ConfigError("stopped here")

    monkeypatch.setattr(run_module if command == "run" else batch_runner, "segment_scene", stop)
    scene = make_tif(smooth_image((3, 40, 40)))
    where = [str(scene)] if command == "run" else [str(scene), "-o", str(tmp_path / "out")]
    args = ["--model", str(model_folder), "--bands", "3,2,1", "--tile-size", "128", "--precision", "fp32",
            "--no-match-resolution",
            "--compile", "--no-cuda-graphs", "--block-size", "512", "--scale", "0.5"]
    result = runner.invoke(app, [command, *where, *args, "--quiet"])
    assert result.exit_code == (2 if command == "run" else 1), result.output
    got = seen[0]
    assert got.bands == (3, 2, 1) and got.tile_size == 128 and got.precision == "fp32"
    assert not got.match_resolution and got.compile and got.cuda_graphs is False
    assert got.block_size == 512 and got.scale == 0.5 and got.device == RunConfig().device
    bad = runner.invoke(app, [command, *where, "--blend", "triangle"])
    assert bad.exit_code == 2 and "not one of cosine, gaussian, none" in bad.output


def test_the_run_summary_names_the_backend_and_precision(make_tif, model_folder, tmp_path) -> None:
    scene = make_tif(smooth_image((3, 40, 50)), descriptions=("b1", "b2", "b3"))
    result = runner.invoke(app, ["run", str(scene), "-o", str(tmp_path / "m.tif"), "--model", str(model_folder),
                                 "--device", "cpu", "--backend", "onnxruntime"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "on cpu (onnxruntime, fp32, batches of 1)" in result.output


def test_the_summary_says_the_inference_resolution_in_metres(make_tif, tiny_model, tmp_path) -> None:
    from rich.console import Console

    from geoseg import RunConfig, segment_scene
    from geoseg.cli.run import summary_table

    scene = make_tif(smooth_image((3, 96, 96)), res=10.0)
    summary = segment_scene(scene, tmp_path / "m.tif", RunConfig(device="cpu"), model=tiny_model(resolution_m=30.0))
    assert summary.factor == 3 and summary.pixel_size_m == 10.0
    console = Console(width=200, record=True)
    console.print(summary_table(summary))
    assert "inferred at 30 m (scene: 10 m)" in console.export_text()


@pytest.mark.parametrize(("args", "line"), [
    (["rnu"], "geoseg: error: No such command 'rnu' (did you mean 'run'); see `geoseg --help`"),
    (["run", "x.tif", "--tile", "512"],
     "geoseg: error: no such option: --tile (did you mean --tile-size); see `geoseg run --help`"),
])
def test_mistyped_commands_and_options_get_the_likeliest_suggestion(args, line) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and result.stderr.strip() == line


@pytest.mark.parametrize(("command", "shown"), [("train", "IMAGE... <path>"), ("batch", "SCENE... <text>")])
def test_list_arguments_are_named_in_help_without_python_types(command, shown) -> None:
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert shown in result.output and "<list[" not in result.output
