"""Test-time augmentation: the symmetries undo themselves, the average is what it says, the blending stays exact."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from geoseg import RunConfig, segment_scene
from geoseg.engine.tta import TTA, averaged
from geoseg.models.registry import LoadedModel
from tests.engine.test_exactness import sliding_window_reference
from tests.helpers import SkewedNet, smooth_image, tiny_card


def test_each_symmetry_is_undone_by_its_inverse_and_the_groups_are_distinct() -> None:
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    for mode, copies in TTA.items():
        images = {tuple(s.forward(x).flatten().tolist()) for s in copies}
        assert len(images) == len(copies), mode  # no copy twice
        for s in copies:
            np.testing.assert_array_equal(s.inverse(s.forward(x)), x)
    assert [len(TTA[m]) for m in ("none", "flips", "d4")] == [1, 4, 8]
    # d4 holds the quarter turn
    turned = torch.rot90(x, 1, dims=(-2, -1))
    assert any(torch.equal(s.forward(x), turned) for s in TTA["d4"])


def test_average_is_the_mean_of_the_copies_turned_back() -> None:
    net = SkewedNet().eval()
    x = torch.from_numpy(smooth_image((3, 32, 32), seed=2))[None].repeat(2, 1, 1, 1)

    def probs(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net(batch), dim=1)

    got = averaged(probs, x, "d4")
    by_hand = []
    for k in range(4):  # every quarter turn of the patch and of its transpose, turned back
        for transposed in (False, True):
            seen = x.transpose(-2, -1) if transposed else x
            back = torch.rot90(probs(torch.rot90(seen, k, dims=(-2, -1))), -k, dims=(-2, -1))
            by_hand.append(back.transpose(-2, -1) if transposed else back)
    torch.testing.assert_close(got, torch.stack(by_hand).mean(0), rtol=0, atol=1e-6)
    assert not torch.allclose(got, probs(x), atol=1e-3)  # the stand-in is not symmetric: TTA changes it
    torch.testing.assert_close(averaged(probs, x, "none"), probs(x), rtol=0, atol=0)


@pytest.mark.parametrize("mode", ["flips", "d4"])
def test_tta_mask_is_independent_of_blocks_and_batches_and_equals_reference(make_tif, tmp_path, mode) -> None:
    model = LoadedModel(card=tiny_card(), network=SkewedNet().eval())
    data = smooth_image((3, 150, 233), seed=9)
    path = make_tif(data, block=32)
    masks = []
    for block, batch in ((64, 1), (128, 3), (4096, 8)):
        out = tmp_path / f"{mode}-{block}.tif"
        segment_scene(path, out, RunConfig(overwrite=True, workers=2, device="cpu", precision="fp32", tta=mode,
                                           block_size=block, batch_size=batch), model=model)
        with rasterio.open(out) as ds:
            masks.append(ds.read(1))
    for other in masks[1:]:
        np.testing.assert_array_equal(masks[0], other)
    reference = sliding_window_reference(data, model.network, 64, 16, "cosine", tta=mode).argmax(0)
    np.testing.assert_array_equal(masks[0], reference)
    plain = sliding_window_reference(data, model.network, 64, 16, "cosine").argmax(0)
    assert (plain != reference).mean() > 0.001  # TTA changed the map


def test_tta_through_segment_array_equals_segment_scene(make_tif, tmp_path) -> None:
    """The dask-chunk path (geoseg.engine.region) runs the same averaged probabilities."""
    rioxarray = pytest.importorskip("rioxarray")
    import dask

    from geoseg import segment_array

    model = LoadedModel(card=tiny_card(), network=SkewedNet().eval())
    path = make_tif(smooth_image((3, 120, 170), seed=4), block=32, descriptions=("b1", "b2", "b3"))
    settings = {"device": "cpu", "precision": "fp32", "backend": "torch", "tta": "flips"}
    segment_scene(path, tmp_path / "m.tif", RunConfig(**settings), model=model)
    with rasterio.open(tmp_path / "m.tif") as ds:
        reference = ds.read(1)
    pixels = rioxarray.open_rasterio(path, chunks={"band": -1, "y": 50, "x": 70})
    with dask.config.set(scheduler="threads"):
        np.testing.assert_array_equal(segment_array(pixels, model, **settings).values, reference)
