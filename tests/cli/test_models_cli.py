"""``geoseg models import | show | check | sensors`` through typer's runner."""

from __future__ import annotations

import json

import segmentation_models_pytorch as smp
import torch
from typer.testing import CliRunner

from geoseg.cli.app import app

runner = CliRunner()


def test_import_show_check_and_run_with_an_imported_smp_model(tmp_path, make_tif) -> None:
    net = smp.FPN("resnet18", encoder_weights=None, in_channels=4, classes=2)
    net.save_pretrained(tmp_path / "smp")
    pkg = tmp_path / "pkg"
    result = runner.invoke(app, ["models", "import", str(tmp_path / "smp"), "-o", str(pkg), "--sensor", "naip",
                                 "--classes", "other,water", "--tile-size", "64", "--overlap", "16"])
    assert result.exit_code == 0, result.output
    card = json.loads((pkg / "geoseg.json").read_text())
    assert card["bands"] == ["red", "green", "blue", "nir"] and card["scaling"]["integer_scale"] == 1 / 255
    shown = runner.invoke(app, ["models", "show", str(pkg), "--json"])
    assert json.loads(shown.stdout)["network"]["_model_class"] == "FPN"
    checked = runner.invoke(app, ["models", "check", str(pkg)])
    assert checked.exit_code == 0 and "ok" in checked.stdout and "2 classes" in checked.stdout
    scene = make_tif(torch.randint(0, 255, (4, 80, 90), dtype=torch.uint8).numpy(), name="aerial.tif", res=1.0)
    ran = runner.invoke(app, ["run", str(scene), "--model", str(pkg), "--sensor", "naip", "--no-match-resolution",
                              "--json", "--format", "gtiff"])
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout)["band_match"] == "name"


def test_import_errors_are_one_line_with_exit_codes(tmp_path) -> None:
    torch.save({"w": torch.zeros(1)}, tmp_path / "w.pth")
    refused = runner.invoke(app, ["models", "import", str(tmp_path / "w.pth"), "-o", str(tmp_path / "p"),
                                  "--bands", "red", "--classes", "a,b"])
    assert refused.exit_code == 5 and "--trust-checkpoint" in refused.stderr
    assert "Traceback" not in refused.output and not (tmp_path / "p").exists()
    bad = runner.invoke(app, ["models", "show", str(tmp_path / "nothing")])
    assert bad.exit_code == 5 and bad.stderr.startswith("geoseg: error: model folder")
    assert "does not exist" in bad.stderr


def test_models_sensors_lists_the_presets() -> None:
    result = runner.invoke(app, ["models", "sensors", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["landsat8"]["offset"] == -0.2


def test_cache_shows_what_runs_kept_and_clear_keeps_what_was_pulled(tmp_path, make_tif, model_folder,
                                                                    monkeypatch) -> None:
    """A CPU run exports its network into the cache; ``models cache`` counts it, ``--clear`` removes it and keeps
    a pulled package, and the next run exports it again, same mask."""
    from geoseg.models.cache import CACHE_ENV, cache_dir

    # a cache wholly this test's: the one tests/conftest.py gives shares its models/ with the whole run
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))

    scene = make_tif(torch.randint(0, 6000, (3, 64, 64), dtype=torch.int32).numpy().astype("uint16"),
                     descriptions=("b1", "b2", "b3"))
    args = ["run", str(scene), "--model", str(model_folder), "--device", "cpu", "--backend", "onnxruntime", "--quiet",
            "--format", "gtiff", "--overwrite", "-o"]
    assert runner.invoke(app, [*args, str(tmp_path / "a.tif")]).exit_code == 0
    pulled = cache_dir() / "packages" / "mine" / "config.json"
    pulled.parent.mkdir(parents=True)
    pulled.write_text("{}")
    shown = json.loads(runner.invoke(app, ["models", "cache", "--json"]).stdout)
    folders = {f["name"]: f for f in shown["folders"]}
    exported = sum(p.stat().st_size for p in (cache_dir() / "onnx").rglob("*") if p.is_file())
    assert folders["onnx"]["files"] >= 1 and folders["onnx"]["bytes"] == exported > 1_000_000
    assert folders["packages"] == {"name": "packages", "holds": folders["packages"]["holds"], "files": 1,
                                   "bytes": 2, "derived": False}
    assert shown["bytes"] == sum(f["bytes"] for f in folders.values())
    cleared = runner.invoke(app, ["models", "cache", "--clear"], terminal_width=200)
    assert cleared.exit_code == 0 and f"{exported / 2**20:,.1f} MiB" in cleared.stdout, cleared.output
    assert not [p for p in (cache_dir() / "onnx").rglob("*") if p.is_file()] and pulled.is_file()
    assert runner.invoke(app, [*args, str(tmp_path / "b.tif")]).exit_code == 0
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    assert list((cache_dir() / "onnx").glob("*.onnx"))
