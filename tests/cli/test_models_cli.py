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
