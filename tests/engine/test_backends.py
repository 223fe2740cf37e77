"""The CPU backends that run the network's ONNX export (ONNX Runtime, OpenVINO): the same contract as
PyTorch's (tiling does not change the mask), near-ties only against PyTorch fp32, the export's cache, and
the choices they refuse."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import rasterio
import torch

from geoseg.config import RunConfig
from geoseg.engine import device as device_module
from geoseg.engine.backends import exported_precision, onnx_file, resolve_backend
from geoseg.engine.device import cpu_has_bf16
from geoseg.errors import ConfigError, ModelError
from geoseg.models import load_model
from geoseg.run import segment_scene
from tests.helpers import smooth_image, tiny_card

pytest.importorskip("onnxruntime")

EXPORTED_RUNS = [("onnxruntime", "fp32"), ("openvino", "fp32"),
                 pytest.param("openvino", "bf16", marks=pytest.mark.skipif(
                     not cpu_has_bf16(), reason="bf16 runs only on a CPU with bf16 instructions"))]


@pytest.mark.parametrize(("backend", "precision"), EXPORTED_RUNS)
def test_masks_do_not_depend_on_the_tiling_and_match_torch_but_for_near_ties(make_tif, model_folder, tmp_path,
                                                                            backend, precision) -> None:
    pytest.importorskip(backend)
    scene = make_tif(smooth_image((3, 150, 170)), descriptions=("b1", "b2", "b3"))
    model = str(model_folder)
    masks = {}
    for name, settings in {"blocks-64": dict(block_size=64, batch_size=3, backend=backend, precision=precision),
                           "blocks-512": dict(block_size=512, batch_size=8, backend=backend, precision=precision),
                           "torch": dict(backend="torch", precision="fp32")}.items():
        config = RunConfig(model=model, device="cpu", output_format="gtiff", **settings)
        summary = segment_scene(scene, tmp_path / f"{name}.tif", config)
        assert (summary.backend, summary.precision) == (("torch", "fp32") if name == "torch" else (backend, precision))
        with rasterio.open(tmp_path / f"{name}.tif") as ds:
            masks[name] = ds.read(1)
    assert np.array_equal(masks["blocks-64"], masks["blocks-512"])
    # fp32: only near-ties may differ; bf16 moves more of this untrained network's close calls
    assert (masks["blocks-64"] != masks["torch"]).mean() < (0.001 if precision == "fp32" else 0.02)


def test_the_export_is_cached_by_the_weights(model_folder) -> None:
    net = load_model(str(model_folder)).network
    first = onnx_file(net, 3, 64)
    assert onnx_file(net, 3, 64) == first and first.stat().st_size > 0
    with torch.no_grad():
        next(net.parameters()).add_(1.0)
    assert onnx_file(net, 3, 64) != first


def test_modules_the_forward_never_reaches_do_not_key_the_cache(model_folder) -> None:
    """smp's EfficientNet encoders keep a classifier head no file sets, random at every load: it made every
    CPU run export the network anew (3 s and 77 MB of cache each)."""
    net = load_model(str(model_folder)).network
    net.unused = torch.nn.Conv2d(3, 8, 1)  # random, never called
    first = onnx_file(net, 3, 64)
    net.unused = torch.nn.Conv2d(3, 8, 1)  # another load: other random weights
    assert onnx_file(net, 3, 64) == first


@pytest.mark.parametrize(("has_bf16", "machine", "chosen"), [
    (True, "x86_64", "openvino"), (False, "x86_64", "openvino"), (False, "AMD64", "openvino"),
    (False, "aarch64", "onnxruntime"),  # OpenVINO's fp32 not measured there
])
def test_auto_is_the_fastest_backend_measured_for_the_cpu(monkeypatch, has_bf16, machine, chosen) -> None:
    import platform

    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: has_bf16)
    monkeypatch.setattr(platform, "machine", lambda: machine)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_backend("auto", cpu, "auto") == chosen
    assert exported_precision(chosen, "auto") == ("bf16" if has_bf16 else "fp32")
    assert resolve_backend("auto", cpu, "fp32") == "torch"  # fp32 asked for: PyTorch's, the reference
    assert resolve_backend("auto", cuda, "auto") == "torch"


def test_the_exported_backends_refuse_what_they_cannot_run(monkeypatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        resolve_backend("onnxruntime", cuda, "auto")
    with pytest.raises(ConfigError, match="runs fp32; drop --precision bf16"):
        resolve_backend("onnxruntime", cpu, "bf16")
    with pytest.raises(ConfigError, match="openvino runs fp32 or bf16; drop --precision fp16"):
        resolve_backend("openvino", cpu, "fp16")
    with pytest.raises(ConfigError, match="openvino runs on the CPU"):
        resolve_backend("openvino", cuda, "auto")
    monkeypatch.setattr(device_module, "cpu_has_bf16", lambda: False)
    with pytest.raises(ConfigError, match=r"needs a CPU with bf16 instructions.*use --precision fp32"):
        resolve_backend("openvino", cpu, "bf16")


def test_a_backend_that_is_not_installed_says_how_to_install_it(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    with pytest.raises(ConfigError, match="pip install openvino"):
        resolve_backend("openvino", torch.device("cpu"), "auto")
    for has_bf16 in (True, False):
        monkeypatch.setattr(device_module, "cpu_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        assert resolve_backend("auto", torch.device("cpu"), "auto") == "onnxruntime"  # the next fastest installed


def run_mask(scene, out, model) -> np.ndarray:
    segment_scene(scene, out, RunConfig(device="cpu", output_format="gtiff", overwrite=True), model=model)
    with rasterio.open(out) as ds:
        return ds.read(1)


def test_a_model_fresh_from_its_file_runs_from_its_cached_export_without_building(make_tif, model_folder,
                                                                                   tmp_path) -> None:
    scene = make_tif(smooth_image((3, 96, 100)), descriptions=("b1", "b2", "b3"))
    first = load_model(str(model_folder), deferred=True)
    exported = run_mask(scene, tmp_path / "first.tif", first)
    assert first.built  # nothing cached yet: built, exported, and the export recorded under the file's identity
    second = load_model(str(model_folder), deferred=True)
    assert np.array_equal(run_mask(scene, tmp_path / "second.tif", second), exported)
    assert not second.built  # smp, timm and torchvision never imported for it


def test_weights_changed_in_memory_never_run_the_file_s_export(make_tif, model_folder, tmp_path) -> None:
    scene = make_tif(smooth_image((3, 96, 100)), descriptions=("b1", "b2", "b3"))
    fresh = run_mask(scene, tmp_path / "fresh.tif", load_model(str(model_folder), deferred=True))
    changed = load_model(str(model_folder), deferred=True)
    rare = int(np.argmin(np.bincount(fresh.ravel(), minlength=3)))  # random weights: any class may be missing
    with torch.no_grad():
        changed.network.segmentation_head[0].bias[rare] += 100.0  # that class everywhere
    assert (run_mask(scene, tmp_path / "changed.tif", changed) == rare).all() and not (fresh == rare).all()


def test_a_deferred_model_still_reports_a_missing_weights_file_at_once(model_folder) -> None:
    (model_folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(str(model_folder), deferred=True)


@pytest.fixture
def pspnet_folder(tmp_path):
    """A model folder holding smp's PSPNet: its adaptive pooling has no ONNX export."""
    import segmentation_models_pytorch as smp
    from safetensors.torch import save_file

    folder = tmp_path / "pspnet"
    folder.mkdir()
    replace(tiny_card(), architecture="PSPNet").save(folder / "config.json")
    save_file(smp.PSPNet("resnet18", encoder_weights=None, in_channels=3, classes=3).state_dict(),
              str(folder / "model.safetensors"))
    return folder


def test_a_network_the_cpu_backends_cannot_run_runs_with_pytorch_under_auto(make_tif, pspnet_folder,
                                                                             tmp_path) -> None:
    scene = make_tif(smooth_image((3, 96, 100)), descriptions=("b1", "b2", "b3"))
    config = RunConfig(model=str(pspnet_folder), device="cpu", output_format="gtiff")
    summary = segment_scene(scene, tmp_path / "auto.tif", config)
    assert summary.backend == "torch"
    assert any("could not run with" in w and "ran with PyTorch" in w for w in summary.warnings), summary.warnings
    with rasterio.open(tmp_path / "auto.tif") as ds:
        assert ds.read(1).max() < 3


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_a_backend_asked_for_that_cannot_run_the_network_says_so_in_one_line(make_tif, pspnet_folder, tmp_path,
                                                                              backend, capfd) -> None:
    pytest.importorskip(backend)
    scene = make_tif(smooth_image((3, 96, 100)), descriptions=("b1", "b2", "b3"))
    config = RunConfig(model=str(pspnet_folder), device="cpu", output_format="gtiff", backend=backend)
    with pytest.raises(ModelError, match=f"--backend {backend} cannot run this network .*use --backend torch") as err:
        segment_scene(scene, tmp_path / "named.tif", config)
    assert "\n" not in str(err.value) and not (tmp_path / "named.tif").exists()
    assert capfd.readouterr().out == ""  # torch's exporter printed the whole graph on a failed export


def test_a_cache_that_cannot_be_written_costs_the_cache_not_the_run(make_tif, model_folder, tmp_path,
                                                                   monkeypatch) -> None:
    """A read-only or full cache (here: a file where its folder should be) must not fail a CPU run: the export
    lives in a private folder for the process, OpenVINO compiles without its cache."""
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "not-a-folder" / "cache"))
    scene = make_tif(smooth_image((3, 96, 100)), descriptions=("b1", "b2", "b3"))
    for backend in ("onnxruntime", "openvino"):
        pytest.importorskip(backend)
        config = RunConfig(model=str(model_folder), device="cpu", output_format="gtiff", backend=backend,
                           overwrite=True)
        summary = segment_scene(scene, tmp_path / "mask.tif", config)
        assert summary.backend == backend and summary.warnings == []


def _package_with_interpolation(folder, state, mode):
    import segmentation_models_pytorch as smp

    from geoseg.models.importing import import_model, parse_classes

    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3, decoder_interpolation=mode)
    net.load_state_dict(state)
    net.save_pretrained(folder.parent / f"{folder.name}-smp")
    import_model(folder.parent / f"{folder.name}-smp", folder, bands=("b1", "b2", "b3"),
                 classes=parse_classes("water,forest,field"), mean=(2000.0,) * 3, std=(800.0,) * 3, scale=1.0,
                 resolution_m=None, tile_size=64, overlap=16)
    return folder


def test_packages_with_the_same_weights_but_another_graph_never_share_an_export(make_tif, tmp_path) -> None:
    """Two packages whose weights are equal but whose smp config differs (the decoder's interpolation) once
    shared one cached export: the second ran the first's graph, with thousands of pixels wrong and exit 0."""
    from tests.helpers import varied_unet_package

    base = varied_unet_package(tmp_path / "base")
    state = load_model(str(base)).network.state_dict()
    nearest = _package_with_interpolation(tmp_path / "nearest", state, "nearest")
    bilinear = _package_with_interpolation(tmp_path / "bilinear", state, "bilinear")
    scene = make_tif(smooth_image((3, 160, 150), seed=3, dtype="uint16"), descriptions=("b1", "b2", "b3"))
    masks = {}
    for name, package in (("nearest", nearest), ("bilinear", bilinear)):
        for backend, precision in (("onnxruntime", "fp32"), ("torch", "fp32")):
            config = RunConfig(model=str(package), device="cpu", backend=backend, precision=precision,
                               output_format="gtiff")
            segment_scene(scene, tmp_path / f"{name}-{backend}.tif", config)
            with rasterio.open(tmp_path / f"{name}-{backend}.tif") as ds:
                masks[name, backend] = ds.read(1)
    assert (masks["nearest", "torch"] != masks["bilinear", "torch"]).mean() > 0.01  # the graphs differ
    for name in ("nearest", "bilinear"):  # each package's export is its own graph: near-ties at most
        assert (masks[name, "onnxruntime"] != masks[name, "torch"]).mean() < 0.001, name
