"""Exactness on the CPU (tests/test_gpu.py has it on a GPU): the mask must not depend on how the
scene is cut into blocks, and must equal a plain in-memory sliding window written here,
independently of the engine."""

from __future__ import annotations

import math
import sys
from dataclasses import replace

import numpy as np
import pytest
import rasterio
import torch

from geoseg import RunConfig, segment_scene
from geoseg.engine.pipeline import Tuning
from geoseg.engine.plan import ReadChunking
from geoseg.engine.tta import averaged
from geoseg.engine.windows import get_window
from tests.helpers import smooth_image


def sliding_window_reference(image: np.ndarray, net: torch.nn.Module, tile: int, overlap: int,
                             blend: str, tta: str = "none") -> np.ndarray:
    """Blended softmax probabilities ``(K, H, W)`` of a plain sliding window over a padded image (each patch's
    averaged over its symmetric copies with ``tta``, as geoseg.engine.tta says)."""
    _, height, width = image.shape
    stride = tile - overlap
    n_r, n_c = math.ceil((height + overlap) / stride), math.ceil((width + overlap) / stride)
    pad_r = (n_r - 1) * stride + tile - overlap - height
    pad_c = (n_c - 1) * stride + tile - overlap - width
    padded = np.pad(image, ((0, 0), (overlap, pad_r), (overlap, pad_c)), mode="reflect")
    w1 = get_window(blend, tile, overlap)
    w2 = np.outer(w1, w1)
    acc = np.zeros((3, *padded.shape[1:]))
    weight = np.zeros(padded.shape[1:])
    with torch.no_grad():
        for i in range(n_r):
            for j in range(n_c):
                r, c = i * stride, j * stride
                patch = torch.from_numpy(np.ascontiguousarray(padded[None, :, r : r + tile, c : c + tile]))
                prob = averaged(lambda x: torch.softmax(net(x), dim=1), patch, tta)[0].numpy().astype(np.float64)
                acc[:, r : r + tile, c : c + tile] += prob * w2
                weight[r : r + tile, c : c + tile] += w2
    blended = acc / weight
    return blended[:, overlap : overlap + height, overlap : overlap + width]


#: Many small reads: chunks of 64 columns and a few rows.
SMALL_READS = Tuning(chunking=ReadChunking(max_bytes=6 * 64 * 48, cols=64))


def _run(path, out, model, tuning: Tuning = Tuning(), **kw) -> np.ndarray:
    segment_scene(path, out, RunConfig(overwrite=True, workers=2, device="cpu", precision="fp32", **kw), model=model,
                  tuning=tuning)
    with rasterio.open(out) as ds:
        return ds.read(1)


@pytest.mark.parametrize("shape", [(37, 53), (301, 555)], ids=["smaller-than-tile", "larger-than-tile"])
@pytest.mark.parametrize("blend", ["cosine", "gaussian", "none"])
def test_mask_is_independent_of_blocks_and_equals_reference(make_tif, tmp_path, tiny_model, shape, blend) -> None:
    model = tiny_model()
    data = smooth_image((3, *shape), seed=sum(shape))
    path = make_tif(data, block=32)
    masks = [_run(path, tmp_path / f"m{b}.tif", model, block_size=b, batch_size=n, blend=blend)
             for b, n in ((128, 1), (256, 3), (4096, 8))]  # batches also span rows of blocks
    for other in masks[1:]:
        np.testing.assert_array_equal(masks[0], other)
    ref = sliding_window_reference(data, model.network, 64, 16, blend).argmax(0)
    np.testing.assert_array_equal(masks[0], ref)
    assert len(np.unique(masks[0])) > 1  # the stand-in model's classes form regions, not one class


def test_resampled_run_is_independent_of_blocks_and_equals_reference(make_tif, tmp_path, tiny_model) -> None:
    """A 10 m scene with a 30 m model: average 3x3, tile there, upsample bilinearly, argmax."""
    model = tiny_model(resolution_m=30.0)
    data = smooth_image((3, 1000, 823), seed=3)
    path = make_tif(data, res=10.0, block=64)
    masks = [_run(path, tmp_path / f"r{b}.tif", model, block_size=b, batch_size=n)
             for b, n in ((384, 1), (768, 5), (4096, 8))]  # 3, 2 and 1 rows of blocks
    for other in masks[1:]:
        np.testing.assert_array_equal(masks[0], other)

    h, w = math.ceil(1000 / 3), math.ceil(823 / 3)
    coarse = np.zeros((3, h, w), np.float32)
    for i in range(h):  # cell means over whatever pixels each (possibly partial) cell holds
        for j in range(w):
            coarse[:, i, j] = data[:, 3 * i : 3 * i + 3, 3 * j : 3 * j + 3].mean(axis=(1, 2))
    probs = sliding_window_reference(coarse, model.network, 64, 16, "cosine")
    up = torch.nn.functional.interpolate(torch.from_numpy(probs)[None], scale_factor=3, mode="bilinear",
                                         align_corners=False)[0, :, :1000, :823].numpy()
    np.testing.assert_array_equal(masks[0], up.argmax(0))


def test_nodata_pixels_are_written_as_255_and_do_not_leak(make_tif, tmp_path, tiny_model) -> None:
    model = tiny_model()
    data = smooth_image((3, 120, 140), dtype="uint16")
    data[:, :, :30] = 0
    path = make_tif(data, nodata=0)
    mask = _run(path, tmp_path / "n.tif", model, scale=1e-3)
    assert (mask[:, :30] == 255).all() and (mask[:, 30:] < 3).all()


@pytest.mark.parametrize("tiled", [True, False], ids=["tiled", "striped"])
def test_mask_is_independent_of_read_chunks(make_tif, tmp_path, tiny_model, tiled) -> None:
    """Many small read chunks (columns and rows) give the same mask as one chunk per strip; uint16
    values above 32767 (sent to the device as int16 bits) come back as themselves."""
    model = tiny_model()
    data = smooth_image((3, 301, 555), seed=5, dtype="uint16")
    data[:, 100:140, 200:260] += 40000  # above int16's range
    if tiled:
        path = make_tif(data, block=32)
    else:  # strips of 8 rows as wide as the scene
        path = tmp_path / "striped.tif"
        with rasterio.open(path, "w", driver="GTiff", width=555, height=301, count=3, dtype="uint16",
                           crs="EPSG:32633", transform=rasterio.Affine(10, 0, 330000, 0, -10, 5822040),
                           blockysize=8, compress="deflate") as ds:
            ds.write(data)
        with rasterio.open(path) as ds:
            assert ds.block_shapes[0] == (8, 555)
    as_float = make_tif(data.astype("float32"), block=32)
    whole = _run(as_float, tmp_path / "float.tif", model, block_size=4096, scale=1.0)
    chunked = _run(path, tmp_path / "chunked.tif", model, SMALL_READS, block_size=128, scale=1.0, batch_size=3)
    np.testing.assert_array_equal(chunked, whole)
    assert len(np.unique(whole)) > 1


def test_mask_is_independent_of_staging_buffers(make_tif, tmp_path, tiny_model) -> None:
    """One reader and one staging buffer, reused for every small chunk (pixels and their validity),
    give the same mask as one chunk per strip; nodata stays nodata."""
    model = tiny_model()
    data = smooth_image((3, 301, 555), seed=7, dtype="uint16")
    data[:, 50:120, 300:420] = 0
    path = make_tif(data, block=32, nodata=0)
    whole = _run(path, tmp_path / "whole.tif", model, block_size=4096, scale=1e-3)
    config = RunConfig(workers=1, block_size=128, batch_size=3, scale=1e-3, device="cpu", precision="fp32")
    segment_scene(path, tmp_path / "one.tif", config, model=model, tuning=replace(SMALL_READS, staging_spare=0))
    with rasterio.open(tmp_path / "one.tif") as ds:
        one = ds.read(1)
    np.testing.assert_array_equal(one, whole)
    assert (whole[50:120, 300:420] == 255).all() and (whole[:50] < 3).all()


def test_progress_counts_patches_once_per_model_call(make_tif, tiny_model) -> None:
    """The progress bar moves with every batch of patches, not every 2048-px block, and ends full."""
    from geoseg.config import RunConfig
    from geoseg.run import segment_scene
    from tests.helpers import smooth_image

    scene = make_tif(smooth_image((3, 200, 230)), descriptions=("b1", "b2", "b3"))
    calls: list[tuple[int, int]] = []
    segment_scene(scene, scene.with_name("p.tif"), RunConfig(device="cpu", batch_size=2, precision="fp32"),
                  model=tiny_model(), progress=lambda done, total: calls.append((done, total)))
    total = calls[-1][1]
    assert calls[-1] == (total, total) and total > 4
    assert len(calls) >= total // 2  # one call per batch of 2 patches (one block holds them all here)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_a_tile_larger_than_a_block_reaching_back_at_the_bottom_edge(make_tif, tmp_path, tiny_model) -> None:
    """The last patches reflect at the scene's bottom edge: with a tile larger than a block they read rows
    that rows of blocks before them no longer need (found on the H200 with a 512-px tile and 320-row blocks,
    where the engine dropped those rows and indexed out of bounds). The mask equals one-block runs."""
    model = tiny_model(tile=128, overlap=16)
    data = smooth_image((3, 209, 150), seed=5)  # the last row of blocks reads from row 81, the one before from 128
    path = make_tif(data, block=32)
    small = _run(path, tmp_path / "small.tif", model, block_size=64)
    whole = _run(path, tmp_path / "whole.tif", model, block_size=4096)
    np.testing.assert_array_equal(small, whole)


@pytest.mark.parametrize(("first_row_patches", "last_row_patches", "spread", "grow"),
                         [(1, 0, False, 1), (2, 0, False, 1), (5, 0, False, 1), (1, 1, True, 1), (2, 2, False, 1),
                          (1, 9, True, 1), (1, 0, True, 2), (1, 1, True, 3)])
def test_mask_is_independent_of_the_first_and_last_rows_height(make_tif, tmp_path, tiny_model, first_row_patches,
                                                                last_row_patches, spread, grow) -> None:
    """A first row of blocks one, two or five patch rows high (Tuning.first_row_patches), rows after it growing
    up to a block (Tuning.grow_rows), a thin last row (Tuning.last_row_patches; nine patch rows are capped at one
    block) and the first strips' reads cut to the reader threads (Tuning.spread_first_strip) give the one-block
    mask."""
    model = tiny_model()
    data = smooth_image((3, 301, 555), seed=7)
    path = make_tif(data, block=32)
    whole = _run(path, tmp_path / "whole.tif", model, block_size=4096, batch_size=8)
    tuning = Tuning(first_row_patches=first_row_patches, last_row_patches=last_row_patches,
                    spread_first_strip=spread, grow_rows=grow, chunking=ReadChunking(max_bytes=6 * 64 * 96, cols=128))
    cut = _run(path, tmp_path / "cut.tif", model, tuning, block_size=128, batch_size=3)
    np.testing.assert_array_equal(cut, whole)
    assert len(np.unique(whole)) > 1


def test_a_shorter_switch_interval_is_the_runs_alone(make_tif, tmp_path, tiny_model) -> None:
    """Tuning.switch_interval: the same mask, and the interpreter's switch interval as it was once the run
    ends, whether it ends well or fails."""
    model = tiny_model()
    path = make_tif(smooth_image((3, 150, 170), seed=3), block=32)
    before = sys.getswitchinterval()
    whole = _run(path, tmp_path / "whole.tif", model, block_size=4096)
    fast = Tuning(switch_interval=before / 10, chunking=ReadChunking(max_bytes=6 * 64 * 48, cols=64))
    cut = _run(path, tmp_path / "cut.tif", model, fast, block_size=64, batch_size=3)
    np.testing.assert_array_equal(cut, whole)
    assert sys.getswitchinterval() == before
    seen: list[float] = []

    def fail(done: int, total: int) -> None:
        seen.append(sys.getswitchinterval())
        raise RuntimeError("stop")

    config = RunConfig(workers=2, block_size=64, device="cpu", precision="fp32", overwrite=True)
    with pytest.raises(RuntimeError, match="stop"):
        segment_scene(path, tmp_path / "failed.tif", config, model=model, tuning=fast, progress=fail)
    assert seen == [pytest.approx(before / 10)] and sys.getswitchinterval() == before
