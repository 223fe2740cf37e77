"""Overviews built while the mask is written: MODE of each 2 x 2 cell, level by level, any size."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from affine import Affine

from geoseg.io.overviews import OverviewPyramid, mode2x2
from geoseg.io.scene import SceneInfo

NODATA = 255


def brute_mode(cell: list[int]) -> int:
    valid = [v for v in cell if v != NODATA]
    if not valid:
        return NODATA
    counts = Counter(valid)
    top = max(counts.values())
    return next(v for v in valid if counts[v] == top)  # ties: the first in cell order


def test_mode2x2_against_a_plain_count() -> None:
    rng = np.random.default_rng(0)
    values = rng.choice(np.array([0, 1, 2, NODATA], np.uint8), size=(60, 80), p=[0.4, 0.3, 0.2, 0.1])
    down = mode2x2(values, NODATA)
    for r in range(30):
        for c in range(40):
            cell = [values[2 * r, 2 * c], values[2 * r, 2 * c + 1],
                    values[2 * r + 1, 2 * c], values[2 * r + 1, 2 * c + 1]]
            assert down[r, c] == brute_mode([int(v) for v in cell]), (r, c, cell)


def blocky_mask(height: int, width: int, cell: int, seed: int) -> np.ndarray:
    """Classes 0..3 in ``cell``-px squares, 5 % of the pixels nodata."""
    rng = np.random.default_rng(seed)
    mask = rng.integers(0, 4, (height // cell + 1, width // cell + 1)).repeat(cell, 0).repeat(cell, 1)[:height, :width]
    mask = mask.astype(np.uint8)
    mask[rng.random(mask.shape) < 0.05] = NODATA
    return mask


def pyramid_levels(mask: np.ndarray, strip: int, feed=None) -> dict[int, np.ndarray]:
    """The levels an OverviewPyramid writes for ``mask`` fed in strips of ``strip`` rows, by
    ``feed(pyramid, rows)`` (default: :meth:`OverviewPyramid.add`)."""
    height, width = mask.shape
    scene = SceneInfo(path=None, driver="GTiff", width=width, height=height, count=1, dtype="uint8", crs=None,  # type: ignore[arg-type]
                      transform=Affine(10, 0, 0, 0, -10, 0), nodata=None, block_shape=(256, 256), descriptions=(None,),
                      mask_kind="none", tags={})
    levels: dict[int, np.ndarray] = {}

    def open_level(k: int, grid: SceneInfo):
        levels[k] = np.full((grid.height, grid.width), 77, np.uint8)
        assert grid.transform.a == 10 * 2**k

        def write(row0: int, values: np.ndarray) -> None:
            levels[k][row0 : row0 + len(values)] = values

        return write

    pyramid = OverviewPyramid(scene, NODATA, open_level)
    for row0 in range(0, height, strip):
        (feed or OverviewPyramid.add)(pyramid, mask[row0 : row0 + strip])
    pyramid.close()
    return levels


@pytest.mark.parametrize(("height", "width", "strip"), [(1300, 2100, 256), (1025, 700, 256), (3000, 513, 96)])
def test_the_pyramid_equals_halving_the_whole_mask_level_by_level(height, width, strip) -> None:
    mask = blocky_mask(height, width, 8, seed=height)
    levels = pyramid_levels(mask, strip)
    expected, k = mask, 0
    while max(expected.shape) > 512:
        k += 1
        padded = np.full((expected.shape[0] + expected.shape[0] % 2, expected.shape[1] + expected.shape[1] % 2),
                         NODATA, np.uint8)
        padded[: expected.shape[0], : expected.shape[1]] = expected
        expected = mode2x2(padded, NODATA)
        np.testing.assert_array_equal(levels[k], expected)
    assert sorted(levels) == list(range(1, k + 1)) and max(levels[k].shape) <= 512


@pytest.mark.parametrize(("height", "width"), [(1300, 2100), (2600, 777), (513, 4097)])
def test_levels_halved_on_the_device_give_the_same_pyramid(height, width) -> None:
    """The blender halves its 256-row strips on the device level after level (the last strip odd at some
    level, odd widths): the pyramid fed those levels writes what it makes from the mask alone."""
    import torch

    from geoseg.engine.blender import DEVICE_OVERVIEW_LEVELS, LABEL_ROWS
    from geoseg.engine.labels import mode2x2 as device_mode2x2

    mask = blocky_mask(height, width, 4, seed=width)

    def device_levels(pyramid: OverviewPyramid, strip: np.ndarray) -> None:
        made, level = [], torch.from_numpy(strip)
        for _ in range(min(len(pyramid.grids), DEVICE_OVERVIEW_LEVELS)):
            level = device_mode2x2(level, NODATA)
            made.append(level.numpy())
        pyramid.add_levels(made)

    from_host = pyramid_levels(mask, LABEL_ROWS)
    from_device = pyramid_levels(mask, LABEL_ROWS, device_levels)
    assert len(from_host) >= 3 and sorted(from_device) == sorted(from_host)
    for k in from_host:
        np.testing.assert_array_equal(from_device[k], from_host[k], err_msg=f"level {k}")
