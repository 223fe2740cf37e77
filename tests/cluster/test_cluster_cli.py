"""The cluster options of `geoseg run` and `geoseg batch`, through the real CLI."""

from __future__ import annotations

import json

import pytest
import rasterio
from typer.testing import CliRunner

from geoseg.cli.app import app
from tests.helpers import smooth_image, write_tif

runner = CliRunner()


@pytest.mark.parametrize(("args", "code", "message"), [
    (["--cluster", "slurm"], 2, "the only kind geoseg starts itself is 'local'"),
    (["--scheduler", "tcp://127.0.0.1:1", "--gpus", "1"], 2, "give one or the other"),
    (["--gpus", "1", "--cpu-workers", "2"], 2, "not both"),
    (["--cluster", "local"], 2, "needs --gpus N"),
])
def test_cluster_option_mistakes_are_usage_errors(tmp_path, args, code, message) -> None:
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 64, 64)))
    result = runner.invoke(app, ["run", str(scene), "--device", "cpu", *args])
    assert result.exit_code == code
    assert message in " ".join(result.output.split())


def test_more_gpus_than_the_machine_has_is_a_device_error(tmp_path, package) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.device_count() >= 8:
        pytest.skip("this machine has 8 GPUs")
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 64, 64)))
    result = runner.invoke(app, ["run", str(scene), "--model", str(package), "--gpus", "8"])
    assert result.exit_code == 7 and "--gpus 8 asked for" in result.output


def test_an_absent_scheduler_is_named(tmp_path, monkeypatch, package) -> None:
    monkeypatch.setattr("geoseg.cluster.workers.CONNECT_TIMEOUT_S", 2)
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 64, 64)))
    result = runner.invoke(app, ["run", str(scene), "--scheduler", "tcp://127.0.0.1:9", "--device", "cpu",
                                 "--model", str(package)])
    assert result.exit_code == 2 and "no dask scheduler answers at tcp://127.0.0.1:9" in result.output
    assert "Traceback" not in result.output


def test_run_on_a_local_cluster_writes_the_same_mask(tmp_path, package) -> None:
    image = smooth_image((3, 1100, 300), seed=4, dtype="uint16")
    scene = write_tif(tmp_path / "s.tif", image)
    common = ["--model", str(package), "--device", "cpu", "--backend", "torch", "--precision", "fp32", "--json"]
    plain = runner.invoke(app, ["run", str(scene), "-o", str(tmp_path / "plain.tif"), *common])
    assert plain.exit_code == 0, plain.output
    spread = runner.invoke(app, ["run", str(scene), "-o", str(tmp_path / "spread.tif"), "--cpu-workers", "2",
                                 "--vector", str(tmp_path / "spread.gpkg"), *common])
    assert spread.exit_code == 0, spread.output
    summary = json.loads(spread.stdout)
    assert summary["device"].startswith("2 dask worker(s)")
    assert summary["vector"]["polygons"] > 0 and (tmp_path / "spread.gpkg").is_file()  # --vector on a cluster too
    with rasterio.open(tmp_path / "plain.tif") as a, rasterio.open(tmp_path / "spread.tif") as b:
        assert (a.read() == b.read()).all()
