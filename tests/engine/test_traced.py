"""The traced network (geoseg.engine.traced): a later process runs the trace a first run cached, without
building the network (no smp, timm or torchvision imports), and its masks are the first run's, bit for bit,
in fp32 and under bf16 autocast."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import rasterio
import torch

from geoseg.config import RunConfig
from geoseg.engine.traced import save_traced, traced_path
from geoseg.models import load_model
from geoseg.run import segment_scene
from tests.helpers import module_package, smooth_image, write_tif


@pytest.fixture(scope="module")
def package(tmp_path_factory) -> Iterator[Path]:
    with module_package(tmp_path_factory, "model", "unet") as package:
        yield package


def _labels(path: Path):
    with rasterio.open(path) as ds:
        return ds.read(1)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_second_run_uses_the_trace_and_gives_the_same_mask(package, tmp_path, precision) -> None:
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 160, 200), seed=2, dtype="uint16"))
    config = RunConfig(model=str(package), backend="torch", precision=precision, device="cpu")
    first = load_model(str(package), deferred=True)
    segment_scene(scene, tmp_path / "a.tif", config, model=first)
    assert first.built  # built from its file: the run traced it for the next process
    trace = traced_path(first.weights_key, 3, 64, precision, torch.device("cpu"))
    assert trace.is_file()
    second = load_model(str(package), deferred=True)
    segment_scene(scene, tmp_path / "b.tif", config, model=second)
    assert not second.built  # the trace ran; the network was never built
    assert (_labels(tmp_path / "a.tif") == _labels(tmp_path / "b.tif")).all()
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()


def test_a_trace_run_without_autocast_equals_the_network_under_autocast(package, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))
    net = load_model(str(package)).network.eval()
    cpu = torch.device("cpu")
    path = save_traced(net, "key", 3, 64, "bf16", cpu)
    assert path is not None
    traced = torch.jit.load(str(path))
    x = torch.randn(5, 3, 64, 64)
    with torch.inference_mode():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            eager = net(x)
        assert torch.equal(traced(x), eager)


def test_a_cold_process_with_the_trace_imports_no_smp(package, tmp_path) -> None:
    scene = write_tif(tmp_path / "s.tif", smooth_image((3, 96, 96), seed=1, dtype="uint16"))
    code = ("import sys\nfrom geoseg.config import RunConfig\nfrom geoseg.run import segment_scene\n"
            f"segment_scene({str(scene)!r}, {str(tmp_path / 'OUT')!r}, RunConfig(model={str(package)!r}, "
            "backend='torch', precision='fp32', device='cpu', overwrite=True))\n"
            "print(sorted(m for m in ('segmentation_models_pytorch', 'timm', 'torchvision', 'torch._dynamo', "
            "'shapely') if m in sys.modules))\n")
    cache = {"GEOSEG_CACHE_DIR": str(tmp_path / "cache")}
    import os

    env = {**os.environ, **cache}
    cold = [subprocess.run([sys.executable, "-c", code.replace("OUT", f"m{i}.tif")], capture_output=True, text=True,
                           env=env, timeout=300, cwd=Path(__file__).resolve().parents[2]) for i in range(2)]
    assert all(c.returncode == 0 for c in cold), [c.stderr[-2000:] for c in cold]
    assert "segmentation_models_pytorch" in cold[0].stdout  # the first process built the network and traced it
    assert cold[1].stdout.strip() == "[]", cold[1].stdout  # the second: torch alone (and no shapely: no vector layer)
    assert (tmp_path / "m0.tif").read_bytes() == (tmp_path / "m1.tif").read_bytes()


def test_a_trace_keeps_the_cudnn_flags_of_its_run_and_is_keyed_by_them(tmp_path, monkeypatch) -> None:
    """A traced convolution's benchmark flag is a constant of the graph: a trace is made under its run's flags
    (heuristics unless tuned), whatever the process's flag says, and the two kinds never share a file."""
    import torch

    from geoseg.engine.traced import save_traced, traced_path

    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1)).eval()
    path = save_traced(net, "key", 3, 32, "fp32", torch.device("cpu"))
    assert path is not None
    graph = str(torch.jit.load(str(path)).inlined_graph).splitlines()
    conv = next(line for line in graph if "aten::_convolution(" in line)
    benchmark = conv.split("aten::_convolution(")[1].split(")")[0].split(", ")[9]  # the 10th argument
    value = next(line for line in graph if line.strip().startswith(f"{benchmark} : bool = prim::Constant"))
    assert "value=0" in value  # traced on cuDNN's heuristics though the process timed its algorithms
    cuda = torch.device("cuda")
    assert traced_path("key", 3, 32, "bf16", cuda, tuned=True) != traced_path("key", 3, 32, "bf16", cuda)
    assert traced_path("key", 3, 32, "fp32", torch.device("cpu"), tuned=True) == path
