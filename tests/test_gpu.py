"""On a CUDA GPU (skipped without one): the device-side pipeline keeps the exactness guarantee.

The reader threads copy into the device on their own stream, staging buffers are recycled once
their copies are done, and the model is replayed from CUDA graphs; none of it may change a pixel.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import rasterio
import torch

from geoseg import RunConfig, segment_scene
from geoseg.engine.pipeline import Tuning
from geoseg.engine.plan import ReadChunking
from geoseg.engine.predictor import Predictor
from tests.helpers import TinyNet, smooth_image

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _mask(path, out, model, tuning: Tuning = Tuning(), **kw) -> np.ndarray:
    segment_scene(path, out, RunConfig(overwrite=True, scale=1e-3, **kw), model=model, tuning=tuning)
    with rasterio.open(out) as ds:
        return ds.read(1)


def _uint16_scene(make_tif, seed: int):
    """A 700 x 900 uint16 scene in 64² blocks with values above int16's range and a block of no data at
    rows 400-480, columns 600-700."""
    data = smooth_image((3, 700, 900), seed=seed, dtype="uint16")
    data[:, 100:180, 200:300] += 40000  # above int16's range: travels as int16 bits
    data[:, 400:480, 600:700] = 0
    return make_tif(data, block=64, nodata=0)


def test_mask_is_independent_of_blocks_chunks_staging_and_graphs(make_tif, tmp_path, tiny_model) -> None:
    model = tiny_model()
    path = _uint16_scene(make_tif, seed=11)
    whole = _mask(path, tmp_path / "whole.tif", model, device="cuda", precision="fp32", block_size=4096,
                  cuda_graphs=False)
    # Three staging buffers for three readers: recycled all the time.
    small = Tuning(chunking=ReadChunking(max_bytes=6 * 64 * 64, cols=64), staging_spare=0)
    pieces = _mask(path, tmp_path / "pieces.tif", model, small, device="cuda", precision="fp32", block_size=128,
                   batch_size=3, workers=3, cuda_graphs=True)
    np.testing.assert_array_equal(pieces, whole)
    assert (whole[400:480, 600:700] == 255).all() and len(np.unique(whole)) > 2
    cpu = _mask(path, tmp_path / "cpu.tif", model, device="cpu", block_size=4096)
    assert (cpu == whole).mean() > 0.9999  # other kernels, other rounding: near-ties may flip


class _Syncing(TinyNet):
    """Reads a value back to the host mid-forward, which a CUDA graph cannot capture."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(x.abs().sum()) < 0:
            x = -x
        return super().forward(x)


def test_a_network_that_cannot_be_captured_runs_eagerly_with_a_note() -> None:
    cuda = torch.device("cuda")
    batch = torch.rand((4, 3, 64, 64), device=cuda)
    graphed = Predictor(_Syncing(), cuda, "fp32", 4, channels=3, patch=64, cuda_graphs=True)
    eager = Predictor(TinyNet(), cuda, "fp32", 4, channels=3, patch=64, cuda_graphs=False)
    assert torch.equal(graphed(batch), eager(batch))
    assert not graphed.cuda_graphs
    assert "cannot be replayed from a CUDA graph" in graphed.notes[0]
    assert torch.equal(graphed(batch), eager(batch))  # and goes on eagerly


def test_a_later_predictor_of_the_same_weights_knows_its_batch_size_without_probing() -> None:
    """The batch-size probe keeps what a patch took in geoseg's cache (the tests' own, tests/conftest.py)."""
    cuda = torch.device("cuda")

    class Counting(TinyNet):
        calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            Counting.calls += 1
            return super().forward(x)

    first = Predictor(Counting(), cuda, "fp32", None, channels=3, patch=64, cuda_graphs=False,
                      weights_key="test-probe-record")
    assert Counting.calls == 1  # the probe
    second = Predictor(Counting(), cuda, "fp32", None, channels=3, patch=64, cuda_graphs=False,
                       weights_key="test-probe-record")
    assert Counting.calls == 1 and second.batch_size == first.batch_size


def test_graph_replay_gives_the_eager_probabilities() -> None:
    cuda = torch.device("cuda")
    graphed = Predictor(TinyNet(), cuda, "fp32", 4, channels=3, patch=64)  # graphs are the default on a GPU
    eager = Predictor(TinyNet(), cuda, "fp32", 4, channels=3, patch=64, cuda_graphs=False)
    assert graphed.cuda_graphs and not eager.cuda_graphs
    for seed in range(3):  # the graph's buffers are reused: every replay must see its own batch
        batch = torch.rand((4, 3, 64, 64), device=cuda, generator=torch.Generator(cuda).manual_seed(seed))
        assert torch.equal(graphed(batch).clone(), eager(batch))


def test_captured_graphs_stay_with_the_network_for_the_next_run(monkeypatch) -> None:
    """A closed predictor leaves its graphs to the next one on the same network, precision and memory."""
    cuda = torch.device("cuda")
    net, captures = TinyNet(), []
    record = Predictor._record

    def counted(self: Predictor, batch: torch.Tensor):
        captures.append(self.precision)
        return record(self, batch)

    monkeypatch.setattr(Predictor, "_record", counted)
    eager = Predictor(TinyNet(), cuda, "fp32", 4, channels=3, patch=64, cuda_graphs=False)

    def run(precision: str, seed: int) -> torch.Tensor:
        predictor = Predictor(net, cuda, precision, 4, channels=3, patch=64)
        batch = torch.rand((4, 3, 64, 64), device=cuda, generator=torch.Generator(cuda).manual_seed(seed))
        probs = predictor(batch).clone()
        assert predictor.cuda_graphs and not predictor.notes
        predictor.close()
        if precision == "fp32":
            assert torch.equal(probs, eager(batch))
        return probs

    run("fp32", 0)
    run("fp32", 1)  # replays the first run's graph
    assert captures == ["fp32"]
    run("bf16", 2)  # another precision: captured anew, and now the kept one
    assert captures == ["fp32", "bf16"]
    run("fp32", 3)
    assert captures == ["fp32", "bf16", "fp32"]
    old = [p.data for p in net.parameters()]  # kept alive, so the parameters cannot come back to the same memory
    net.cpu()  # moved away and back (by the next Predictor): the kept graph would read the old memory
    run("fp32", 4)
    del old
    assert captures == ["fp32", "bf16", "fp32", "fp32"]


@pytest.mark.parametrize("graphs", [[], ["--cuda-graphs"]], ids=["default", "cuda-graphs"])
def test_batch_scenes_in_flight_share_the_gpu(tmp_path, model_folder, graphs) -> None:
    """Two scenes at a time on one GPU: eagerly by default; with --cuda-graphs, a scene captures only
    while it is alone in the process, and otherwise runs eagerly (captures beside other runs crashed)."""
    from typer.testing import CliRunner

    from geoseg.cli.app import app
    from tests.helpers import write_tif

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        write_tif(folder / f"s{i}.tif", smooth_image((3, 300, 340), seed=i), descriptions=("b1", "b2", "b3"))
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["batch", str(folder), "-o", str(out), "--model", str(model_folder),
                                      "--parallel", "2", "--quiet", *graphs])
    summary = json.loads((out / "geoseg-batch-summary.json").read_text())
    assert result.exit_code == 0, [s.get("error") for s in summary["scenes"]]
    assert summary["counts"]["done"] == 6


def test_segment_array_on_the_gpu_equals_segment_scene(make_tif, tmp_path, tiny_model) -> None:
    """The region engine on the device (patches batched differently, padded, graph-replayed) gives the file
    engine's labels, for several chunkings."""
    import dask
    import dask.array as da

    from geoseg import segment_array

    model = tiny_model()
    data = smooth_image((3, 700, 900), seed=12, dtype="uint16")
    data[:, 400:480, 600:700] = 0
    path = make_tif(data, block=64, nodata=0)
    whole = _mask(path, tmp_path / "whole.tif", model, device="cuda", precision="fp32", batch_size=8)
    with rasterio.open(path) as ds:
        values, transform, crs = ds.read(), ds.transform, ds.crs
    for chunks in (128, (700, 300), (250, 900)):
        lazy = da.from_array(values, chunks=(3, *((chunks, chunks) if isinstance(chunks, int) else chunks)))
        labels = segment_array(lazy, model, transform=transform, crs=crs, nodata=0, device="cuda", precision="fp32",
                               batch_size=8, scale=1e-3)
        with dask.config.set(scheduler="threads"):
            np.testing.assert_array_equal(labels.compute(), whole, err_msg=str(chunks))


# -- tiles decoded on the GPU by nvCOMP (geoseg.engine.tile_decode): GDAL's pixels, bit for bit ------------------
def _nvcomp():
    from geoseg.engine.inflate import nvcomp_missing

    missing = nvcomp_missing()
    if missing:
        pytest.skip(missing)


@pytest.mark.parametrize(("dtype", "compress", "predictor"), [
    ("uint16", "deflate", 1), ("uint16", "deflate", 2), ("int16", "deflate", 2), ("uint8", "deflate", 2),
    ("uint16", "zstd", 2), ("uint16", "zstd", 1), ("float32", "deflate", 3), ("float32", "zstd", 3),
    ("float32", "deflate", 2), ("int32", "deflate", 2), ("uint16", None, 1)])
@pytest.mark.parametrize("interleave", ["pixel", "band"])
@pytest.mark.parametrize("api", ["c", "bindings"])
def test_nvcomp_tiles_equal_gdal(tmp_path, dtype, compress, predictor, interleave, api) -> None:
    """Both ways into nvCOMP: its C API, asynchronous (geoseg's), and its Python bindings where installed."""
    _nvcomp()
    if api == "bindings":
        pytest.importorskip("nvidia.nvcomp", reason="nvCOMP's Python bindings (nvidia-nvcomp-cu13) are not installed")
    from geoseg.engine.inflate import NvcompBindingsInflater, NvcompInflater
    from tests.helpers import decoded_strip
    from tests.helpers import full_range_values as values
    from tests.helpers import write_tiled as write

    cuda = torch.device("cuda")
    data = values(dtype, (4, 300, 230))  # edge tiles on both sides
    if dtype != "float32":
        data[:, :40, :50] = 0
    path = write(tmp_path / "s.tif", data, tile=64, compress=compress, predictor=predictor, interleave=interleave,
                 nodata=None if dtype == "float32" else 0)
    from geoseg.io.scene import open_scene
    from geoseg.io.tiles import tile_index

    codec = tile_index(open_scene(path)).codec
    def inflater(decoder):  # the bindings' codec is bound to the decoder's one stream; the C API takes two
        return NvcompInflater(codec, cuda) if api == "c" else NvcompBindingsInflater(codec, cuda, decoder.streams[0])

    strip, reference, decoder = decoded_strip(path, (3, 1, 4), chunk_cols=128, device=cuda, inflater=inflater,
                                              streams=2 if api == "c" else 1)
    assert decoder.stats.tiles > 0 and decoder._inflater.check() == 0
    assert torch.equal(strip.raw, reference.raw)
    assert torch.equal(strip.valid, reference.valid)


def test_auto_decodes_a_tiled_deflate_scene_on_the_gpu_when_the_network_sees_a_coarser_grid(make_tif, tmp_path,
                                                                                           tiny_model) -> None:
    """A 10 m scene and a 20 m model (f = 2): the device decodes; the same scene with a model of its own
    resolution (f = 1, the network is the wall): the CPU readers."""
    _nvcomp()
    data = smooth_image((3, 600, 500), seed=6, dtype="uint16")
    path = make_tif(data, block=128, predictor=2)
    config = RunConfig(device="cuda", precision="fp32", scale=1e-3, overwrite=True)
    coarser = segment_scene(path, tmp_path / "f2.tif", config, model=tiny_model(resolution_m=20.0))
    assert coarser.factor == 2
    assert coarser.decode == "gpu" and coarser.stage_seconds["device decode chunks"] > 0
    native = segment_scene(path, tmp_path / "f1.tif", config, model=tiny_model(resolution_m=10.0))
    assert native.factor == 1 and native.decode == "cpu" and "device decode chunks" not in native.stage_seconds


@pytest.mark.parametrize("mode", ["gpu", "hybrid"])
def test_runs_decoding_on_the_gpu_give_the_cpu_readers_mask(make_tif, tmp_path, tiny_model, mode) -> None:
    _nvcomp()
    model = tiny_model()
    data = smooth_image((3, 1100, 900), seed=5, dtype="uint16")
    data[:, 300:380, 200:300] = 0
    path = make_tif(data, block=128, nodata=0, predictor=2)
    small = Tuning(chunking=ReadChunking(max_bytes=6 * 128 * 256, cols=256))
    kw = dict(device="cuda", precision="fp32", block_size=256, batch_size=4, workers=3, cuda_graphs=False)
    cpu = _mask(path, tmp_path / "cpu.tif", model, small, decode="cpu", **kw)
    gpu = _mask(path, tmp_path / f"{mode}.tif", model, small, decode=mode, **kw)
    np.testing.assert_array_equal(gpu, cpu)


def _extreme_pixels(dtype: str, shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Pixels of ``dtype`` over its whole range: a float32 scene's magnitudes from 1e-30 to 1e30 with 0, -0.0, NaN,
    ±inf and the smallest normal first; an integer scene's from its minimum to its maximum, both first, then 0."""
    if dtype == "float32":
        pixels = (rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, shape)).astype(np.float32)
        pixels.flat[:6] = [0.0, -0.0, np.nan, np.inf, -np.inf, np.finfo(np.float32).tiny]
    else:
        info = np.iinfo(dtype)
        pixels = rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
        pixels.flat[:3] = [info.min, info.max, 0]
    return pixels


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "float32"])
def test_rows_developed_in_one_kernel_have_the_op_by_op_bits(dtype) -> None:
    """``Tuning.fused_develop`` (geoseg.engine.input_rows.fused_develop): the same float32 bits as the six passes,
    for every value a file of ``dtype`` holds at its extremes, signed zeros and NaN among them, with and without
    data, and on a column slice of the rows (not contiguous) as the pipeline develops them."""
    from geoseg.engine.input_rows import InputRows
    from geoseg.engine.plan import plan_layout
    from geoseg.models.card import Scaling
    from tests.helpers import tiny_card

    rng = np.random.default_rng(3)
    shape = (3, 70, 301)
    pixels = _extreme_pixels(dtype, shape, rng)
    card = replace(tiny_card(), mean=(0.3, -0.1, 0.25), std=(0.7, 1.3, 0.09),
                   scaling=Scaling(integer_scale=1e-4, integer_offset=-0.1, float_scale=3.0))
    cuda = torch.device("cuda")
    valid = torch.from_numpy(rng.random(shape[1:]) > 0.2).to(cuda)
    layout = plan_layout(shape[1], shape[2], 1, 64, 16)
    plain, fused = (InputRows(layout, card, cuda, dtype, fused=on) for on in (False, True))
    assert fused._fused is not None
    raw = plain.transfer(pixels)
    for part, ok in ((raw, valid), (raw[:, 5:60, 7:250], valid[5:60, 7:250])):
        a, b = plain.developed(part, ok), fused.developed(part, ok)
        assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))  # bits: NaN and -0.0 compared too


def test_a_run_with_rows_developed_in_one_kernel_gives_the_same_mask(make_tif, tmp_path, tiny_model) -> None:
    model = tiny_model()
    path = _uint16_scene(make_tif, seed=4)
    kw = dict(device="cuda", precision="fp32", block_size=256, batch_size=4, cuda_graphs=False)
    plain = _mask(path, tmp_path / "plain.tif", model, Tuning(), **kw)
    fused = _mask(path, tmp_path / "fused.tif", model, Tuning(fused_develop=True), **kw)
    np.testing.assert_array_equal(fused, plain)


def test_a_trace_run_without_autocast_equals_the_network_under_autocast_on_cuda(tmp_path, monkeypatch) -> None:
    """geoseg.engine.traced on CUDA: the trace (autocast recorded inside it) gives the eager network's bits."""
    from geoseg.engine.traced import save_traced
    from geoseg.models import load_model
    from tests.helpers import varied_unet_package

    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))
    cuda = torch.device("cuda")
    net = load_model(str(varied_unet_package(tmp_path / "unet"))).network.eval().to(cuda)
    net = net.to(memory_format=torch.channels_last)
    # an earlier run of the process timed cuDNN's algorithms: a trace for a run on the heuristics must not keep that
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    path = save_traced(net, "key", 3, 64, "bf16", cuda)
    assert path is not None
    traced = torch.jit.load(str(path), map_location=cuda)
    x = torch.randn(16, 3, 64, 64, device=cuda).contiguous(memory_format=torch.channels_last)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False), torch.inference_mode(), \
            torch.autocast("cuda", dtype=torch.bfloat16):
        eager = net(x)
    with torch.inference_mode():
        assert torch.equal(traced(x), eager)


def test_a_cold_run_with_the_trace_gives_the_first_runs_mask(make_tif, tmp_path, monkeypatch) -> None:
    """The first run builds the network and traces it; a second model loaded from the file runs the trace."""
    from geoseg.models import load_model
    from tests.helpers import varied_unet_package

    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "cache"))
    package = varied_unet_package(tmp_path / "unet")
    path = make_tif(smooth_image((3, 400, 300), seed=3, dtype="uint16"))
    config = RunConfig(model=str(package), device="cuda", precision="bf16", reproducible=True)
    first, second = (load_model(str(package), deferred=True) for _ in range(2))
    segment_scene(path, tmp_path / "a.tif", config, model=first)
    segment_scene(path, tmp_path / "b.tif", config, model=second)
    assert first.built and not second.built
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        assert np.array_equal(a.read(1), b.read(1))


def test_a_steady_run_never_makes_the_device_thread_wait_for_the_gpu(make_tif, tmp_path, tiny_model) -> None:
    """A call that waits for the GPU mid-run (``torch.tensor(..., device="cuda")`` copies from pageable memory and
    then waits for the queue to drain) leaves the GPU idle until the device thread queues more: the strided blend's
    index of edge patches did so in 34 of a 16384² scene's 86 batches. Batches here mix patches inside the scene
    with patches reaching past its edges."""
    model = tiny_model()
    path = make_tif(smooth_image((3, 700, 900), seed=5, dtype="uint16"), block=64)
    config = RunConfig(overwrite=True, scale=1e-3, device="cuda", precision="bf16", batch_size=5, block_size=256)
    traced = Tuning(trace_waits=True)
    segment_scene(path, tmp_path / "first.tif", config, model=model, tuning=traced)  # captures, tunes
    steady = segment_scene(path, tmp_path / "steady.tif", config, model=model, tuning=traced).stage_seconds
    assert steady["device waits"] == 0, {k: v for k, v in steady.items() if k.startswith("device wait")}


def test_a_small_scene_pads_to_a_batch_size_its_process_has_run_at(make_tif, tmp_path, tiny_model) -> None:
    """In a warm process (a service, a batch) a small scene's one call is padded to a batch size the network has
    run at, whose cuDNN plans and kernels are ready, rather than a shape of its own (seconds on the H100)."""
    from geoseg.engine.device import DeviceSession
    from geoseg.engine.plan import plan_layout

    model, session = tiny_model(), DeviceSession()
    config = RunConfig(overwrite=True, scale=1e-3, device="cuda")
    large = make_tif(smooth_image((3, 400, 400), seed=1, dtype="uint16"))  # 9 x 9 patches: the automatic size
    small = make_tif(smooth_image((3, 100, 150), seed=2, dtype="uint16"))
    card = model.card
    layout = plan_layout(100, 150, 1, card.tile_size, card.overlap)
    patches = layout.rows.count * layout.cols.count  # 3 x 4: the grid reaches half an overlap past the edges
    first = segment_scene(large, tmp_path / "large.tif", config, model=model, session=session)
    later = segment_scene(small, tmp_path / "later.tif", config, model=model, session=session)
    assert later.batch_size == first.batch_size > patches and later.patches == first.batch_size  # one padded call
    alone = segment_scene(small, tmp_path / "alone.tif", config, model=model, session=DeviceSession())
    assert (alone.batch_size, alone.patches) == (patches, patches)  # a cold session: exactly its patches, no probe
    with rasterio.open(tmp_path / "later.tif") as a, rasterio.open(tmp_path / "alone.tif") as b:
        assert (a.read(1) == b.read(1)).mean() > 0.9999  # another batch size may round a near-tie otherwise


@pytest.mark.parametrize("dtype", ["uint8", "int8", "uint16", "int16", "float32"])
@pytest.mark.parametrize("all_valid", [False, True])
def test_rows_developed_on_the_gpu_have_the_six_passes_bits(dtype, all_valid) -> None:
    """The op-by-op develop as it now runs on a GPU (integers widened inside the scaling multiply at f = 1, no
    ``where`` for an all-valid scene, the last step written in place) against the six passes written out: the same
    float32 bits, on the device whose kernels the CPU test cannot see (tests/engine/test_input_rows.py)."""
    from geoseg.engine.input_rows import InputRows
    from geoseg.engine.plan import plan_layout
    from geoseg.models.card import Scaling
    from tests.helpers import tiny_card

    if all_valid and dtype == "float32":
        pytest.skip("a float scene is never all-valid (NaN)")
    rng = np.random.default_rng(4)
    shape = (3, 70, 301)
    pixels = _extreme_pixels(dtype, shape, rng)
    card = replace(tiny_card(), mean=(0.3, -0.1, 0.25), std=(0.7, 1.3, 0.09),
                   scaling=Scaling(integer_scale=1e-4, integer_offset=0.0, float_scale=3.0))
    cuda = torch.device("cuda")
    valid = (torch.ones(shape[1:], dtype=torch.bool) if all_valid
             else torch.from_numpy(rng.random(shape[1:]) > 0.2)).to(cuda)
    inputs = InputRows(plan_layout(shape[1], shape[2], 1, 64, 16), card, cuda, dtype, all_valid=all_valid)
    raw = inputs.transfer(pixels)
    scale, offset = card.scaling.factors(dtype)
    x = torch.from_numpy(pixels.astype(np.float32)).to(cuda)
    want = torch.where(valid, (x * scale + offset - inputs.mean) / inputs.std, 0.0)
    got = inputs.developed(raw, valid)
    into = torch.full_like(want, 7.0)
    inputs.developed(raw, valid, out=into)
    for a in (got, into):
        assert torch.equal(a.view(torch.int32), want.view(torch.int32))
