"""Tiles decoded outside GDAL (geoseg.engine.tile_decode) must be GDAL's pixels, bit for bit.

On the CPU the inflating is done by :class:`HostInflater` (zlib / zstandard); everything else (the
tile table, the aligned fetch, the predictors, placing tiles and their validity into strips, sharing
chunks with the CPU readers) is the code the GPU runs. tests/test_gpu.py runs nvCOMP itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from affine import Affine

from geoseg import RunConfig, segment_scene
from geoseg.engine.inflate import HostInflater
from geoseg.engine.input_rows import InputRows
from geoseg.engine.pipeline import Tuning
from geoseg.engine.plan import Box, ReadChunking, plan_layout
from geoseg.engine.tile_decode import ChunkQueue, TileDecoder, decode_plan, make_decoder
from geoseg.errors import ConfigError, SceneError
from geoseg.io.scene import open_scene
from geoseg.io.tiles import TileIndex, tile_index
from tests.helpers import UTM33, decoded_strip, tiny_card
from tests.helpers import full_range_values as values
from tests.helpers import write_tiled as write

CPU = torch.device("cpu")



@pytest.mark.parametrize(("dtype", "predictor"), [
    ("uint8", 1), ("uint8", 2), ("uint16", 1), ("uint16", 2), ("int16", 2), ("int8", 2), ("uint32", 2),
    ("int32", 2), ("float32", 1), ("float32", 2), ("float32", 3), ("float64", 3)])
@pytest.mark.parametrize("interleave", ["pixel", "band"])
def test_deflate_tiles_equal_gdal(tmp_path: Path, dtype: str, predictor: int, interleave: str) -> None:
    data = values(dtype, (3, 100, 75))  # neither side a multiple of the 32-px tiles: edge tiles
    path = write(tmp_path / "s.tif", data, predictor=predictor, interleave=interleave)
    strip, reference, _ = decoded_strip(path, (1, 2, 3))
    assert torch.equal(strip.raw, reference.raw)  # the same bits (NaN payloads and -0.0 included)
    assert torch.equal(strip.valid, reference.valid)


@pytest.mark.parametrize("interleave", ["pixel", "band"])
def test_zstd_and_uncompressed_tiles_equal_gdal(tmp_path: Path, interleave: str) -> None:
    data = values("uint16", (4, 70, 90))
    for compress, predictor in (("zstd", 2), ("zstd", 1), (None, 1)):
        path = write(tmp_path / f"{compress}-{predictor}.tif", data, compress=compress, predictor=predictor,
                     interleave=interleave)
        strip, reference, _ = decoded_strip(path, (1, 2, 3, 4))
        assert torch.equal(strip.raw, reference.raw), (compress, predictor)


def test_bands_picked_and_reordered_with_nodata(tmp_path: Path) -> None:
    data = values("uint16", (5, 64, 96))
    data[:, :10, :20] = 0  # a nodata corner
    data[2, 40, 50] = 0  # one band at nodata: the pixel has no data
    for interleave in ("pixel", "band"):
        path = write(tmp_path / f"{interleave}.tif", data, predictor=2, interleave=interleave, nodata=0)
        strip, reference, _ = decoded_strip(path, (4, 1, 3))
        assert torch.equal(strip.raw, reference.raw)
        assert torch.equal(strip.valid, reference.valid)
        assert not strip.valid[:10, :20].any() and not strip.valid[40, 50] and strip.valid.sum() > 5000


def test_float_nan_is_no_data(tmp_path: Path) -> None:
    data = values("float32", (2, 40, 40))
    data[1, 5:9, 7] = np.nan
    path = write(tmp_path / "f.tif", data, predictor=3)
    strip, reference, _ = decoded_strip(path, (1, 2))
    assert torch.equal(strip.valid, reference.valid) and not strip.valid[5:9, 7].any()


def test_sparse_tiles_read_as_nodata(tmp_path: Path) -> None:
    """Tiles GDAL never wrote (SPARSE_OK) read as the nodata value, or 0."""
    for nodata in (7, None):
        path = tmp_path / f"sparse-{nodata}.tif"
        base = dict(driver="GTiff", width=96, height=64, count=2, dtype="uint16", crs=UTM33, tiled=True,
                    blockxsize=32, blockysize=32, compress="deflate", predictor=2, sparse_ok=True, nodata=nodata,
                    transform=Affine(10, 0, 330000, 0, -10, 5822040))
        with rasterio.open(path, "w", **base) as ds:
            ds.write(values("uint16", (2, 32, 32)), window=((0, 32), (32, 64)))  # one tile of six
        index = tile_index(open_scene(path))
        assert isinstance(index, TileIndex) and (index.counts == 0).sum() >= 5
        strip, reference, _ = decoded_strip(path, (1, 2))
        assert torch.equal(strip.raw, reference.raw)
        assert torch.equal(strip.valid, reference.valid)


def test_chunks_are_shared_and_every_one_decoded_once(tmp_path: Path) -> None:
    path = write(tmp_path / "s.tif", values("uint16", (3, 128, 128)), predictor=2)
    queue = ChunkQueue([Box(0, 32, c, c + 32) for c in range(0, 128, 32)])
    taken = queue.take_right(10**9, 1, 0.5)
    assert [b.col0 for b in taken] == [64, 96]  # half, from the right, in order
    assert queue.take_left().col0 == 0 and [b.col0 for b in queue.take_right(10**9, 1, 0.5)] == [32]
    assert queue.take_left() is None and queue.take_right(10**9, 1, 1.0) == []
    _, _, decoder = decoded_strip(path, (1, 2, 3), mode="hybrid", chunk_cols=32)
    # alone, it took every chunk: one strip's first (6 tiles, at most half of them), then batches of at most 4 tiles
    assert decoder.stats.chunks == 8 and decoder.stats.tiles == 16 and decoder.stats.batches >= 4


@pytest.mark.parametrize("mode", ["gpu", "hybrid"])
@pytest.mark.parametrize("interleave", ["pixel", "band"])
def test_run_with_device_decoding_gives_the_same_mask(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      tiny_model, mode: str, interleave: str) -> None:
    """A whole run, its chunks decoded by the tile decoder (and, in hybrid, the reader threads too)."""
    data = values("uint16", (3, 300, 260))
    data[:, :40, :70] = 0
    path = write(tmp_path / "s.tif", data, tile=64, predictor=2, interleave=interleave, nodata=0)
    model = tiny_model()
    config = RunConfig(device="cpu", precision="fp32", batch_size=3, workers=2, block_size=128, overwrite=True)
    tuning = Tuning(chunking=ReadChunking(max_bytes=64 * 64 * 6 * 2, cols=64))
    segment_scene(path, tmp_path / "cpu.tif", config, model=model, tuning=tuning)
    made: list[TileDecoder] = []

    class PacedInflater(HostInflater):
        """The host inflater at a device's pace: each batch takes a while, as on a GPU, so in hybrid the
        reader threads get their chunks however busy the machine running the tests is."""

        def inflate(self, *args, **kwargs):
            time.sleep(0.03)
            return super().inflate(*args, **kwargs)

    def host_decoder(decode, planned, scene, bands, device, streams, hybrid_share):
        assert planned is None  # a CPU run: decode_plan gave the CPU readers
        index = tile_index(scene)
        made.append(TileDecoder(index, bands, device, scene.nodata, mode, inflater=PacedInflater(index.codec),
                                batch_tiles=5, streams=streams, hybrid_share=hybrid_share))
        return made[-1]

    monkeypatch.setattr("geoseg.run.make_decoder", host_decoder)
    summary = segment_scene(path, tmp_path / "dev.tif", config, model=model, tuning=tuning)
    stats = made[0].stats
    assert stats.chunks > 0 and (stats.cpu_chunks > 0) == (mode == "hybrid")
    assert summary.stage_seconds["device decode chunks"] == stats.chunks and summary.decode == mode
    with rasterio.open(tmp_path / "cpu.tif") as a, rasterio.open(tmp_path / "dev.tif") as b:
        assert np.array_equal(a.read(), b.read())


def test_files_gdal_keeps(tmp_path: Path, make_tif) -> None:
    data = values("uint16", (2, 64, 64))
    lzw = write(tmp_path / "lzw.tif", data, compress="lzw")
    striped = write(tmp_path / "strips.tif", data, tiled=False)
    assert tile_index(open_scene(lzw)) == "LZW-compressed"
    assert tile_index(open_scene(striped)) == "stored in strips, not tiles"
    masked = write(tmp_path / "masked.tif", data)
    with rasterio.open(masked, "r+") as ds:
        ds.write_mask(np.full((64, 64), 255, dtype=np.uint8))
    assert tile_index(open_scene(masked)) == "validity comes from a mask band"
    assert isinstance(tile_index(open_scene(write(tmp_path / "ok.tif", data))), TileIndex)


def test_decode_modes_on_a_cpu(tmp_path: Path) -> None:
    scene = open_scene(write(tmp_path / "s.tif", values("uint16", (2, 64, 64))))
    assert decode_plan("auto", scene, CPU, 2) is None  # auto on a CPU: the CPU readers
    assert decode_plan("cpu", scene, CPU, 1) is None
    with pytest.raises(ConfigError, match=r"s\.tif: --decode gpu cannot be used: the device is cpu, not a CUDA GPU; "):
        decode_plan("gpu", scene, CPU, 1)
    lzw = open_scene(write(tmp_path / "lzw.tif", values("uint16", (2, 64, 64)), compress="lzw"))
    with pytest.raises(ConfigError, match="the file is LZW-compressed"):
        decode_plan("hybrid", lzw, CPU, 1)
    assert make_decoder("cpu", None, scene, (1, 2), CPU) is None


def test_auto_decodes_on_the_gpu_where_it_can_and_quietly_on_the_cpu_elsewhere(tmp_path: Path, monkeypatch) -> None:
    """--decode auto: the device decoder for a tiled deflate file on a CUDA device with nvCOMP when the network
    sees a coarser grid; the CPU readers, without a word, at the scene's own resolution (the network is the wall),
    for a file nvCOMP cannot decode, without nvCOMP, or on a CPU. Named modes ignore the factor."""
    cuda = torch.device("cuda")  # only named: decode_plan decides without touching the device
    tiled = open_scene(write(tmp_path / "s.tif", values("uint16", (2, 64, 64))))
    lzw = open_scene(write(tmp_path / "lzw.tif", values("uint16", (2, 64, 64)), compress="lzw"))
    monkeypatch.setattr("geoseg.engine.tile_decode.nvcomp_missing", lambda: None)
    assert isinstance(decode_plan("auto", tiled, cuda, 2), TileIndex)
    assert decode_plan("auto", tiled, cuda, 1) is None  # f = 1: the CPU readers
    assert isinstance(decode_plan("gpu", tiled, cuda, 1), TileIndex)
    assert isinstance(decode_plan("hybrid", tiled, cuda, 1), TileIndex)
    assert decode_plan("auto", lzw, cuda, 2) is None
    assert decode_plan("auto", tiled, CPU, 2) is None
    monkeypatch.setattr("geoseg.engine.tile_decode.nvcomp_missing", lambda: "nvCOMP is not installed")
    assert decode_plan("auto", tiled, cuda, 2) is None
    with pytest.raises(ConfigError, match="nvCOMP is not installed"):
        decode_plan("gpu", tiled, cuda, 2)


def test_a_cut_short_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path / "s.tif", values("uint16", (2, 64, 64)), predictor=2)
    index = tile_index(open_scene(path))
    assert isinstance(index, TileIndex)
    last = int(np.argmax(index.offsets))
    with open(path, "r+b") as f:
        f.truncate(int(index.offsets[last]) + 10)
    decoder = TileDecoder(index, (1, 2), CPU, None, "gpu", inflater=HostInflater(index.codec))
    inputs = InputRows(plan_layout(64, 64, 1, 64, 16), tiny_card(bands=2), CPU, "uint16")
    with pytest.raises(SceneError, match=r"s\.tif: tile \d+ is cut short .*damaged or incomplete"):
        decoder.drain(inputs.open_strip(0, 64), ChunkQueue([Box(0, 64, 0, 64)]))


def test_fetch_on_threads_lays_out_the_same_bytes(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    path = write(tmp_path / "s.tif", values("uint16", (3, 256, 256)), predictor=2)  # 64 tiles
    index = tile_index(open_scene(path))
    assert isinstance(index, TileIndex)
    tiles = np.arange(len(index.counts))[::-1].copy()
    one, many = (np.zeros(index.fetch_bytes(tiles), np.uint8) for _ in range(2))
    with open(path, "rb") as f, ThreadPoolExecutor(4) as pool:
        where = index.fetch(tiles, one, f.fileno())
        assert np.array_equal(index.fetch(tiles, many, f.fileno(), pool), where)
        raw = f.read()
    assert np.array_equal(one, many) and (where[:, 0] % 16 == 0).all()
    for t, (start, size) in zip(tiles, where, strict=True):  # each payload: the stream, zlib header and checksum off
        offset = int(index.offsets[t])
        assert one[start : start + size].tobytes() == raw[offset + 2 : offset + int(index.counts[t]) - 4]
