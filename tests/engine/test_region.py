"""The region engine (geoseg/engine/region.py): the labels of any rectangle equal the file engine's there."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from geoseg import RunConfig, segment_scene
from geoseg.engine.plan import Box, plan_layout
from geoseg.engine.predictor import Predictor
from geoseg.engine.region import label_region, plan_region
from geoseg.io.scene import WindowReader, open_scene
from tests.helpers import smooth_image

SHAPE = (3, 203, 317)


@pytest.mark.parametrize("resolution", [None, 30.0], ids=["own-grid", "coarser-model-grid"])
def test_regions_equal_the_whole_scene_run(make_tif, tiny_model, tmp_path, resolution, monkeypatch) -> None:
    monkeypatch.setattr("geoseg.engine.region.READ_CHUNK", 64)  # many chunks, read on threads
    image = smooth_image(SHAPE, seed=3, dtype="uint16")
    image[:, 190:, :40] = 0  # a nodata corner
    path = make_tif(image, nodata=0)
    model = tiny_model(resolution_m=resolution)
    config = RunConfig(device="cpu", precision="fp32", backend="torch", probabilities="all")
    segment_scene(path, tmp_path / "m.tif", config, model=model)
    with rasterio.open(tmp_path / "m.tif") as ds:
        whole = ds.read(1)
    with rasterio.open(tmp_path / "m.probs.tif") as ds:
        whole_probs = ds.read()
    scene = open_scene(path)
    factor = 3 if resolution else 1
    layout = plan_layout(scene.height, scene.width, factor, 64, 16)
    predictor = Predictor(model.network, torch.device("cpu"), "fp32", None, channels=3, patch=64)
    reader = WindowReader(scene, (1, 2, 3))
    # corners, edges, a sliver one pixel wide, the middle, and the whole scene
    for box in [Box(0, 50, 0, 70), Box(150, 203, 250, 317), Box(100, 101, 0, 317), Box(37, 161, 91, 250),
                Box(0, 203, 0, 317)]:
        made = label_region(layout, model.card, predictor, box, reader.read_into, scene.dtype, probabilities="all",
                            readers=3, block_shape=(64, 64))
        np.testing.assert_array_equal(made.labels, whole[box.row0 : box.row1, box.col0 : box.col1], err_msg=str(box))
        np.testing.assert_array_equal(made.probabilities, whole_probs[:, box.row0 : box.row1, box.col0 : box.col1])
    assert (whole == 255).any() and len(np.unique(whole)) >= 3  # the comparison saw nodata and several classes


def test_a_region_reads_only_its_halo() -> None:
    layout = plan_layout(10_000, 10_000, 1, 256, 32)
    plan = plan_region(layout, Box(4096, 6144, 4096, 6144))
    # the patches reaching the region, and not more: a patch of halo each side at most
    assert plan.native.row0 >= 4096 - 256 and plan.native.row1 <= 6144 + 256
    assert plan.native.col0 >= 4096 - 256 and plan.native.col1 <= 6144 + 256
    for k in (plan.row_patches[0], plan.row_patches[-1]):
        origin = layout.rows.origin(k)
        assert origin < 6144 and origin + 256 > 4096
    assert layout.rows.origin(plan.row_patches[0] - 1) + 256 <= 4096
    assert layout.rows.origin(plan.row_patches[-1] + 1) >= 6144
