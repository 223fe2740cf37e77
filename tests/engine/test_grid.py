import numpy as np
import pytest

from geoseg.engine.grid import AxisGrid, check_tiling, reflect_index, split_axis
from geoseg.errors import ConfigError


@pytest.mark.parametrize("size", [1, 2, 5, 37, 64])
def test_reflect_index_matches_numpy_reflect_pad(size: int) -> None:
    pad = 150  # larger than the axis: reflection must repeat
    values = np.arange(size)
    expected = np.pad(values, pad, mode="reflect") if size > 1 else np.zeros(size + 2 * pad, int)
    got = values[reflect_index(np.arange(-pad, size + pad), size)]
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(("size", "tile", "overlap"), [(1, 32, 0), (37, 64, 16), (448, 512, 64), (1000, 96, 40)])
def test_grid_covers_every_pixel_and_blocks_own_each_patch_once(size: int, tile: int, overlap: int) -> None:
    grid = AxisGrid(size, tile, overlap)
    covered = np.zeros(size, bool)
    for k in range(grid.count):
        o = grid.origin(k)
        covered[max(o, 0) : min(o + tile, size)] = True
    assert covered.all()
    assert grid.origin(0) == -overlap and grid.origin(grid.count - 1) + tile - overlap >= size
    for block in (7, 64, 300, size):
        blocks = split_axis(size, block)
        owned = [k for i, (a, b) in enumerate(blocks) for k in grid.owned(a, b, last=i == len(blocks) - 1)]
        assert owned == list(range(grid.count))


def test_check_tiling_explains_fix() -> None:
    with pytest.raises(ConfigError, match=r"multiple of 32.*96 or 128"):
        check_tiling(100, 10)
    with pytest.raises(ConfigError, match="smaller than the tile size"):
        check_tiling(64, 64)
