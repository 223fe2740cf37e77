"""geoseg models pull: an smp repository from the Hugging Face Hub's cache layout, offline (HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
import torch
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.models.cache import HUB_FOLDER, cache_dir
from tests.helpers import smooth_image, write_tif

runner = CliRunner()
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_repo(monkeypatch, tmp_path):
    """``owner/unet-hub`` in huggingface_hub's cache layout under a geoseg cache of its own, as a pull leaves it."""
    import segmentation_models_pytorch as smp

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))
    repo = cache_dir() / HUB_FOLDER / "models--owner--unet-hub"
    snapshot = repo / "snapshots" / REVISION
    torch.manual_seed(0)
    smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3).save_pretrained(snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def test_a_pull_names_what_the_repository_lacks_then_makes_a_package_run_by_name(hub_repo, tmp_path) -> None:
    lacking = runner.invoke(app, ["models", "pull", "owner/unet-hub"])
    assert lacking.exit_code == 2 and lacking.output.count("\n") == 1
    assert "input bands" in lacking.output and "class names" in lacking.output
    result = runner.invoke(app, ["models", "pull", "https://huggingface.co/owner/unet-hub", "--bands", "b1,b2,b3",
                                 "--classes", "water,forest,field", "--json"])
    assert result.exit_code == 0, result.output
    pulled = json.loads(result.output)
    assert pulled["name"] == "unet-hub" and pulled["revision"] == REVISION
    assert pulled["classes"] == ["water", "forest", "field"]
    again = runner.invoke(app, ["models", "pull", "owner/unet-hub", "--bands", "b1,b2,b3", "--classes", "a,b,c"])
    assert again.exit_code == 6 and "--overwrite" in again.output  # a package is never replaced silently
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert "unet-hub" in [m["name"] for m in json.loads(listed.output)]
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 80, 90), seed=2, dtype="uint16"))
    run = runner.invoke(app, ["run", str(scene), "--model", "unet-hub", "--device", "cpu", "--quiet"])
    assert run.exit_code == 0, run.output
    with rasterio.open(tmp_path / "s.mask.tif") as ds:
        assert json.loads(ds.tags()["CLASSES"]) == ["water", "forest", "field"]
        assert set(np.unique(ds.read(1))) <= {0, 1, 2}


def test_a_repository_not_in_the_cache_offline_is_one_line(hub_repo) -> None:
    result = runner.invoke(app, ["models", "pull", "owner/not-there", "--bands", "b1", "--classes", "a"])
    assert result.exit_code == 5 and result.output.count("\n") == 1 and "HF_HUB_OFFLINE" in result.output
    bad = runner.invoke(app, ["models", "pull", "not a repo"])
    assert bad.exit_code == 2 and "OWNER/NAME" in bad.output
