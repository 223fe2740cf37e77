"""ONNX model files: exported with geoseg's card and QGIS Deepness's metadata, and run back through --model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import rasterio
import torch
from typer.testing import CliRunner

from geoseg import RunConfig, segment_scene
from geoseg.cli.app import app
from geoseg.models import load_model
from geoseg.models.onnxfile import export_network, onnx_card
from tests.helpers import module_package, smooth_image, write_tif

runner = CliRunner()


@pytest.fixture(scope="module")
def package(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with module_package(tmp_path_factory, "onnx", "pkg") as package:
        yield package


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("fmt", ["onnx", "deepness"])
def test_the_exported_file_computes_the_package_s_network(package, tmp_path, fmt) -> None:
    out = tmp_path / f"m-{fmt}.onnx"
    result = runner.invoke(app, ["models", "export", str(package), "-o", str(out), "--format", fmt, "--json"])
    assert result.exit_code == 0, result.output
    loaded = load_model(str(package))
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32))
    with torch.no_grad():
        logits = loaded.network(x)
    expected = logits if fmt == "onnx" else torch.softmax(logits, dim=1)
    (got,) = _session(out).run(None, {"x": x.numpy()})
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)
    card = onnx_card(out)  # geoseg's card travels inside the file
    assert card.bands == loaded.card.bands and card.classes == loaded.card.classes
    assert card.mean == loaded.card.mean and card.tile_size == 64


def test_deepness_metadata_is_what_deepness_decodes(package, tmp_path) -> None:
    out = tmp_path / "d.onnx"
    assert runner.invoke(app, ["models", "export", str(package), "-o", str(out), "--format", "deepness"]).exit_code == 0
    meta = _session(out).get_modelmeta().custom_metadata_map
    decoded = {k: json.loads(v) for k, v in meta.items() if not k.startswith("geoseg:")}
    assert decoded["model_type"] == "Segmentor"
    assert decoded["class_names"] == {"0": "water", "1": "forest", "2": "field"}
    assert decoded["tiles_size"] == decoded["tile_size"] == 64 and decoded["tiles_overlap"] == 25  # 16 of 64 px
    card = load_model(str(package)).card
    raw = np.random.default_rng(2).integers(0, 5000, size=(3, 5)).astype(np.float64)
    scale, offset = card.scaling.factors("uint16")
    ours = (raw * scale + offset - np.array(card.mean)[:, None]) / np.array(card.std)[:, None]
    theirs = (raw / 255 - np.array(decoded["standardization_mean"])[:, None]) / \
        np.array(decoded["standardization_std"])[:, None]  # Deepness: values / 255, then standardised
    np.testing.assert_allclose(theirs, ours, rtol=1e-9, atol=1e-9)


def test_geoseg_run_with_an_exported_file_gives_the_package_s_mask(package, tmp_path) -> None:
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 150, 190), seed=8, dtype="uint16"),
                      descriptions=("b1", "b2", "b3"))
    settings = {"device": "cpu", "backend": "onnxruntime"}
    segment_scene(scene, tmp_path / "pkg.tif", RunConfig(model=str(package), **settings))
    masks = {}
    for fmt in ("onnx", "deepness"):
        model = tmp_path / f"{fmt}.onnx"
        assert runner.invoke(app, ["models", "export", str(package), "-o", str(model), "--format", fmt]).exit_code == 0
        result = runner.invoke(app, ["run", str(scene), "-o", str(tmp_path / f"{fmt}.tif"), "--model", str(model),
                                     "--device", "cpu", "--backend", "onnxruntime", "--quiet"])
        assert result.exit_code == 0, result.output
        with rasterio.open(tmp_path / f"{fmt}.tif") as ds:
            masks[fmt] = ds.read(1)
            assert json.loads(ds.tags()["CLASSES"]) == ["water", "forest", "field"]
    with rasterio.open(tmp_path / "pkg.tif") as ds:
        reference = ds.read(1)
    assert len(np.unique(reference)) >= 2
    np.testing.assert_array_equal(masks["onnx"], reference)  # the same graph, the same softmax: the same bits
    assert (masks["deepness"] == reference).mean() > 0.999  # the softmax inside the graph: near-ties may differ


def test_a_file_with_only_deepness_metadata_runs_as_an_rgb_model(tmp_path) -> None:
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 2, 1)).eval()
    meta = {"model_type": json.dumps("Segmentor"), "class_names": json.dumps({0: "background", 1: "field"}),
            "resolution": json.dumps(50), "tiles_overlap": json.dumps(10),
            "standardization_mean": json.dumps([0.5, 0.5, 0.5]), "standardization_std": json.dumps([0.25] * 3)}
    model = tmp_path / "third-party.onnx"
    export_network(net, 3, 64, model, probabilities=True, metadata=meta)
    card = onnx_card(model)
    assert card.bands == ("red", "green", "blue") and [c.name for c in card.classes] == ["background", "field"]
    assert card.tile_size == 64 and card.overlap == 6 and card.resolution_m == 0.5
    assert card.scaling.factors("uint8") == (1 / 255, 0.0)
    image = smooth_image((3, 90, 120), seed=3, dtype="uint16") // 300
    scene = write_tif(tmp_path / "rgb.tif", image.astype(np.uint8), res=0.5, descriptions=("red", "green", "blue"))
    summary = segment_scene(scene, tmp_path / "m.tif", RunConfig(model=str(model), device="cpu"))
    with rasterio.open(tmp_path / "m.tif") as ds:
        mask = ds.read(1)
    x = (image.astype(np.float32) / 255 - 0.5) / 0.25  # the network by hand on one interior patch-sized window
    assert set(np.unique(mask)) <= {0, 1} and summary.backend in ("onnxruntime", "openvino")
    with torch.no_grad():
        direct = net(torch.from_numpy(x[None, :, :64, :64])).argmax(1)[0].numpy()
    assert (mask[8:40, 8:40] == direct[8:40, 8:40]).mean() > 0.95  # blending moves only near-ties


def test_onnx_model_mistakes_are_one_line(package, tmp_path) -> None:
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 64, 64), seed=1, dtype="uint16"))
    model = tmp_path / "m.onnx"
    assert runner.invoke(app, ["models", "export", str(package), "-o", str(model)]).exit_code == 0
    again = runner.invoke(app, ["models", "export", str(package), "-o", str(model)])
    assert again.exit_code == 6 and "--overwrite" in again.output and again.output.count("\n") == 1
    torch_run = runner.invoke(app, ["run", str(scene), "--model", str(model), "--device", "cpu", "--backend", "torch"])
    assert torch_run.exit_code == 2 and "CPU backends" in torch_run.output
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07 not a model")
    broken = runner.invoke(app, ["run", str(scene), "--model", str(tmp_path / "broken.onnx"), "--device", "cpu"])
    assert broken.exit_code == 5 and "broken.onnx" in broken.output and broken.output.count("\n") == 1
    assert not list(tmp_path.glob("s.mask*"))
