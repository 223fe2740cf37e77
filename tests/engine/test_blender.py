"""The blender: the seam figure against a plain sliding window; the GPU's batched blending against the CPU's
per-patch one."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def _votes_reference(image: np.ndarray, net: torch.nn.Module, tile: int, overlap: int) -> np.ndarray:
    """Pixels where two patches of a plain sliding window (positive cosine weight) chose different classes."""
    from geoseg.engine.windows import get_window

    _, height, width = image.shape
    stride = tile - overlap
    n_r, n_c = -(-(height + overlap) // stride), -(-(width + overlap) // stride)
    pad_r = (n_r - 1) * stride + tile - overlap - height
    pad_c = (n_c - 1) * stride + tile - overlap - width
    padded = np.pad(image, ((0, 0), (overlap, pad_r), (overlap, pad_c)), mode="reflect")
    w = get_window("cosine", tile, overlap)
    counts = np.outer(w, w) > 0
    lo = np.full(padded.shape[1:], 255)
    hi = np.zeros(padded.shape[1:], dtype=int)
    with torch.no_grad():
        for i in range(n_r):
            for j in range(n_c):
                r, c = i * stride, j * stride
                patch = torch.from_numpy(np.ascontiguousarray(padded[None, :, r : r + tile, c : c + tile]))
                chosen = net(patch)[0].argmax(0).numpy()
                lo[r : r + tile, c : c + tile] = np.where(counts, np.minimum(lo[r : r + tile, c : c + tile], chosen),
                                                          lo[r : r + tile, c : c + tile])
                hi[r : r + tile, c : c + tile] = np.where(counts, np.maximum(hi[r : r + tile, c : c + tile], chosen),
                                                          hi[r : r + tile, c : c + tile])
    return (lo < hi)[overlap : overlap + height, overlap : overlap + width]


def test_seam_share_counts_where_overlapping_patches_disagree(make_tif, tmp_path) -> None:
    """The summary's and STAC Item's seam figure: valid pixels where two patches chose different classes, the
    same for any block or batch size, and what a plain sliding window finds."""
    import json

    import rasterio

    from geoseg import RunConfig, segment_scene
    from geoseg.models.registry import LoadedModel
    from tests.helpers import SkewedNet, smooth_image, tiny_card

    model = LoadedModel(card=tiny_card(), network=SkewedNet().eval())
    data = smooth_image((3, 140, 190), seed=12)
    data[:, :, :20] = np.nan  # no data: never counted
    path = make_tif(data, block=32)
    shares = []
    for block, batch in ((64, 1), (4096, 8)):
        config = RunConfig(device="cpu", precision="fp32", block_size=block, batch_size=batch, uncertainty="entropy")
        summary = segment_scene(path, tmp_path / f"m{block}.tif", config, model=model)
        shares.append(summary.seam_share)
    disagree = _votes_reference(np.nan_to_num(data), model.network, 64, 16)
    valid = ~np.isnan(data).any(axis=0)
    expected = (disagree & valid).sum() / valid.sum()
    assert shares[0] == shares[1] == round(expected, 6) and expected > 0
    item = json.loads((tmp_path / "m64.json").read_text())
    assert item["properties"]["geoseg:seam_disagreement"] == shares[0]
    assert item["assets"]["uncertainty"]["href"] == "./m64.uncertainty.tif"
    with rasterio.open(tmp_path / "m64.uncertainty.tif") as unsure, rasterio.open(tmp_path / "m64.tif") as mask:
        assert unsure.transform == mask.transform and unsure.shape == mask.shape
        values = unsure.read(1)
        assert (values[mask.read(1) == 255] == 255).all() and values[valid].max() <= 250
        assert unsure.tags()["UNCERTAINTY"] == "entropy" and unsure.scales == (1 / 250,)


@pytest.mark.parametrize(("shape", "batch", "resolution"), [((3, 170, 233), 5, None), ((3, 330, 410), 3, None),
                                                           ((3, 500, 610), 4, 20.0)],
                         ids=["edge-batches", "interior-batches-too", "model-grid-halved"])
def test_batched_blending_gives_the_same_bits_as_a_slice_per_patch(make_tif, tmp_path, monkeypatch, shape,
                                                                   batch, resolution) -> None:
    """The GPU's way of blending (a batch in a few indexed kernels) against the CPU's (a slice per patch), both
    run here on the CPU, with the votes in uint8 and in int32 (``Tuning.wide_votes``): the same mask,
    probabilities and seam figure, edges and nodata included; the larger scene has batches whose patches all lie
    inside it (added without the edge masking), and the third blends on a model grid coarser than the scene's."""
    import rasterio

    from geoseg import RunConfig, segment_scene
    from geoseg.engine import blender
    from geoseg.engine.pipeline import Tuning
    from geoseg.models.registry import LoadedModel
    from tests.helpers import SkewedNet, smooth_image, tiny_card

    # resolution: a model trained at 20 m runs on the 10 m scene's pixels averaged 2 x 2 (its own, coarser grid)
    model = LoadedModel(card=tiny_card(resolution_m=resolution), network=SkewedNet().eval())
    data = smooth_image(shape, seed=21)
    data[:, 100:, :30] = np.nan
    path = make_tif(data, block=32)
    out = {}
    for batched, wide in ((False, False), (True, False), (True, True), (False, True)):
        monkeypatch.setattr(blender, "BATCHED_BLEND", batched)
        config = RunConfig(device="cpu", precision="fp32", block_size=64, batch_size=batch, probabilities="all",
                           output_format="gtiff")
        name = f"m{batched}{wide}"
        summary = segment_scene(path, tmp_path / f"{name}.tif", config, model=model, tuning=Tuning(wide_votes=wide))
        assert summary.factor == (2 if resolution else 1)
        with rasterio.open(tmp_path / f"{name}.tif") as m, rasterio.open(tmp_path / f"{name}.probs.tif") as p:
            out[batched, wide] = (m.read(), p.read(), summary.seam_share, summary.class_shares)
    for other in ((True, False), (True, True), (False, True)):
        for a, b in zip(out[False, False], out[other], strict=True):
            assert np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
    assert out[True, True][2] > 0
