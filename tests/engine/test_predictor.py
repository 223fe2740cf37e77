"""The predictor's speed options keep the mask: out-of-memory back-off, torch.compile, CUDA graphs' guard."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from geoseg import RunConfig, segment_scene
from geoseg.engine.predictor import CPU_BATCH, Predictor, fill_batch
from geoseg.errors import ConfigError, DeviceError
from geoseg.models import LoadedModel
from tests.helpers import TinyNet, smooth_image


class RunsOutOfMemory(torch.nn.Module):
    """Wraps a network; raises CUDA's out-of-memory error for batches larger than ``fits``."""

    def __init__(self, net: torch.nn.Module, fits: int):
        super().__init__()
        self.net, self.fits = net, fits
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        if len(x) > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.net(x)


def _mask(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read(1)


def test_out_of_memory_halves_the_batch_reports_it_and_keeps_the_mask(make_tif, tmp_path, tiny_model) -> None:
    model = tiny_model()
    scene = make_tif(smooth_image((3, 300, 420), seed=2))
    flaky = RunsOutOfMemory(model.network, fits=2)
    cpu = {"workers": 2, "device": "cpu", "precision": "fp32"}
    summary = segment_scene(scene, tmp_path / "oom.tif", RunConfig(batch_size=8, **cpu),
                            model=LoadedModel(card=model.card, network=flaky))
    plain = segment_scene(scene, tmp_path / "plain.tif", RunConfig(batch_size=2, **cpu), model=model)
    assert summary.batch_size == 2 and plain.batch_size == 2
    backoffs = [w for w in summary.warnings if "ran out of memory" in w]
    assert len(backoffs) == 2 and "batches of 8" in backoffs[0] and "went on with 2" in backoffs[1]
    assert flaky.sizes[:3] == [8, 4, 2]  # halved, then kept at the size that fits
    assert all(n <= 2 for n in flaky.sizes[3:])
    np.testing.assert_array_equal(_mask(tmp_path / "oom.tif"), _mask(tmp_path / "plain.tif"))
    # The summary says where the time went: patches the network ran (failed attempts not counted).
    assert plain.patches == sum(n for n in flaky.sizes if n <= 2) and 0 < plain.model_seconds < plain.seconds
    stages = ("wait for reads", "take in", "blocks", "labels", "wait for writes")
    spans = ("pipeline began at", "pipeline ended at", "published at")  # from the run's start
    writer = ("writer: copy waits", "writer: writing")  # the writer thread's own seconds
    assert set(plain.stage_seconds) == {*stages, "first strip in at", "first row queued at", "pipeline s", *spans,
                                        *writer}
    marks = plain.stage_seconds
    assert marks["writer: copy waits"] >= 0 and 0 < marks["writer: writing"] < marks["pipeline s"]
    assert 0 <= marks["first strip in at"] <= marks["first row queued at"] <= marks["pipeline s"] < plain.seconds
    assert 0 < marks["pipeline began at"] < marks["pipeline ended at"] <= marks["published at"] <= plain.seconds
    assert marks["pipeline ended at"] - marks["pipeline began at"] >= marks["pipeline s"] - 0.002
    assert sum(marks[k] for k in stages) <= marks["pipeline s"] + 0.005  # each figure rounded to 1 ms


def test_out_of_memory_for_one_patch_is_a_device_error(make_tif, tmp_path, tiny_model) -> None:
    model = tiny_model()
    scene = make_tif(smooth_image((3, 80, 90)))
    hopeless = LoadedModel(card=model.card, network=RunsOutOfMemory(model.network, fits=0))
    with pytest.raises(DeviceError, match="out of memory even for one patch"):
        segment_scene(scene, tmp_path / "m.tif", RunConfig(batch_size=4, device="cpu", backend="torch"), model=hopeless)
    assert not (tmp_path / "m.tif").exists()


def test_batch_size_defaults_on_the_cpu_and_cuda_graphs_need_cuda() -> None:
    cpu = torch.device("cpu")
    assert Predictor(TinyNet(), cpu, "fp32", None, channels=3, patch=64).batch_size == CPU_BATCH
    with pytest.raises(ConfigError, match="CUDA graphs need a CUDA device"):
        Predictor(TinyNet(), cpu, "fp32", 4, channels=3, patch=64, cuda_graphs=True)


def test_compiled_network_gives_the_same_mask(make_tif, tmp_path, tiny_model) -> None:
    """torch.compile (inductor, C++ on the CPU) fuses the network's arithmetic; the mask must agree."""
    model = tiny_model()
    scene = make_tif(smooth_image((3, 150, 200), seed=4))
    segment_scene(scene, tmp_path / "eager.tif", RunConfig(workers=2, device="cpu", precision="fp32"), model=model)
    compiled_run = segment_scene(scene, tmp_path / "compiled.tif",
                                 RunConfig(workers=2, compile=True, device="cpu", precision="fp32"), model=model)
    assert any("--compile on the CPU" in w for w in compiled_run.warnings)  # it says what it costs
    eager, compiled = _mask(tmp_path / "eager.tif"), _mask(tmp_path / "compiled.tif")
    assert len(np.unique(eager)) > 1
    assert (eager == compiled).mean() >= 0.999  # only exact near-ties may flip: fusion reorders float sums


def test_the_batch_probe_s_record_is_keyed_by_what_changes_a_patch_s_memory(tmp_path) -> None:
    """A later process reads the memory a patch took (no probe) only for the same weights and settings, and
    a damaged record is probed again, never trusted."""
    from geoseg.engine.predictor import _remember, _remembered, probe_record_path

    cpu = torch.device("cpu")
    base = probe_record_path("w1", 6, 512, "bf16", "none", False, cpu)
    others = [probe_record_path("w2", 6, 512, "bf16", "none", False, cpu),
              probe_record_path("w1", 4, 512, "bf16", "none", False, cpu),
              probe_record_path("w1", 6, 256, "bf16", "none", False, cpu),
              probe_record_path("w1", 6, 512, "fp32", "none", False, cpu),
              probe_record_path("w1", 6, 512, "bf16", "d4", False, cpu),
              probe_record_path("w1", 6, 512, "bf16", "none", True, cpu)]
    assert len({base, *others}) == 7 and base == probe_record_path("w1", 6, 512, "bf16", "none", False, cpu)
    record = tmp_path / "probe.json"
    assert _remembered(record) is None  # none yet
    _remember(record, 123456789.0)
    assert _remembered(record) == 123456789.0
    for damaged in ("{", '{"bytes_per_patch": "x"}', '{"bytes_per_patch": -5}', '{"bytes_per_patch": NaN}', "[]"):
        record.write_text(damaged)
        assert _remembered(record) is None, damaged
    _remember(tmp_path / "not-a-folder" / "x" / "probe.json", 1.0)  # a cache it cannot write: no error


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("count", [5, 3])
def test_patches_filled_into_a_graph_buffer_are_the_padded_stacked_batch(layout, count) -> None:
    """What a recorded CUDA graph's input buffer holds after :func:`fill_batch` (the patches strided views of the
    developed rows, the buffer channels-last as the graph records it): the padded ``torch.stack`` batch."""
    rows = torch.randn(3, 40, 90)
    patches = [rows[:, r : r + 16, c : c + 16] for r, c in [(0, 0), (5, 30), (24, 74), (10, 11), (3, 60)][:count]]
    buffer = torch.full((5, 3, 16, 16), float("nan")).contiguous(memory_format=layout)  # last batch's values
    fill_batch(buffer, patches)
    padded = torch.cat([torch.stack(patches), torch.zeros(5 - count, 3, 16, 16)])
    assert torch.equal(buffer, padded) and buffer.is_contiguous(memory_format=layout)


def test_predicting_patches_equals_predicting_their_stacked_batch() -> None:
    predictor = Predictor(TinyNet(), torch.device("cpu"), "fp32", 4, channels=3, patch=16)
    rows = torch.randn(3, 40, 90)
    patches = [rows[:, r : r + 16, c : c + 16] for r, c in [(0, 0), (5, 30), (24, 74)]]
    assert torch.equal(predictor.predict_patches(patches), predictor(torch.stack(patches)))
