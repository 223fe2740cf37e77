"""The blender's device-side halving of label strips equals the host's, edges and nodata included."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.engine.blender import mode2x2 as device_mode2x2
from geoseg.io.overviews import mode2x2 as host_mode2x2


@pytest.mark.parametrize("shape", [(256, 300), (255, 301), (1, 1)])
def test_device_halving_equals_the_host_one(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    labels = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), size=shape)
    padded = np.full((shape[0] + shape[0] % 2, shape[1] + shape[1] % 2), 255, np.uint8)
    padded[: shape[0], : shape[1]] = labels
    np.testing.assert_array_equal(device_mode2x2(torch.from_numpy(labels), 255).numpy(), host_mode2x2(padded, 255))
