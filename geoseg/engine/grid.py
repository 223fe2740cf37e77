"""The global patch grid: where the model's tiles sit on a raster, independent of dask blocks.

Along one axis of ``size`` pixels, with patch ``T``, overlap ``O`` and stride ``s = T - O``::

    origin_k = k * s - O            for k = 0 .. n - 1
    n        = ceil((size + O) / s)

Patch ``k`` covers ``[origin_k, origin_k + T)``. The first patch starts ``O`` pixels before the
raster so that its blend ramp falls in the reflected margin and pixel 0 sits where the window is
full; the last patch is the first whose ``origin + T - O`` reaches ``size``. Pixels outside the
raster are taken by reflection (:func:`reflect_index`), so every pixel sees full context.

Because the grid depends only on the raster size and the patch settings, the blended result is the
same however the raster is cut into blocks: a block only decides *which task* runs a patch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from geoseg.config import check_tile_size
from geoseg.errors import ConfigError


def check_tiling(tile_size: int, overlap: int) -> None:
    """Raise :class:`ConfigError` unless ``tile_size`` and ``overlap`` make a usable grid."""
    check_tile_size(tile_size)
    if not 0 <= overlap < tile_size:
        raise ConfigError(
            f"overlap {overlap} must be >= 0 and smaller than the tile size {tile_size}; "
            f"a common choice is {tile_size // 8}"
        )


@dataclass(frozen=True)
class AxisGrid:
    """Patch positions along one axis (rows or columns)."""

    size: int
    patch: int
    overlap: int

    @property
    def stride(self) -> int:
        return self.patch - self.overlap

    @property
    def count(self) -> int:
        return max(1, math.ceil((self.size + self.overlap) / self.stride))

    def origin(self, k: int) -> int:
        return k * self.stride - self.overlap

    def owned(self, start: int, stop: int, last: bool) -> range:
        """Patches whose anchor ``k * stride`` lies in ``[start, stop)``; the last block takes the rest.

        Every patch is owned by exactly one block, so it is predicted exactly once.
        """
        k0 = math.ceil(start / self.stride)
        k1 = self.count if last else min(self.count, math.ceil(stop / self.stride))
        return range(k0, max(k0, k1))

    def weight_sum(self, window: np.ndarray) -> np.ndarray:
        """Sum over all patches of the 1-D blend window at each raster pixel (float64, shape (size,)).

        Summed in patch order, so the result for a pixel does not depend on any blocking.
        """
        total = np.zeros(self.size, dtype=np.float64)
        for k in range(self.count):
            o = self.origin(k)
            lo, hi = max(o, 0), min(o + self.patch, self.size)
            if hi > lo:
                total[lo:hi] += window[lo - o : hi - o]
        return total


def reflect_index(index: np.ndarray, size: int) -> np.ndarray:
    """Map any integer positions onto ``[0, size)`` by mirror reflection without repeating the edge.

    ``-1 -> 1``, ``size -> size - 2`` (numpy's ``reflect`` mode), repeated as often as needed, so
    rasters smaller than a patch still fill it. A 1-pixel axis maps everything to 0.
    """
    if size == 1:
        return np.zeros_like(index)
    period = 2 * (size - 1)
    folded = np.mod(index, period)
    return np.where(folded < size, folded, period - folded)


def split_axis(size: int, block: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of consecutive blocks of ``block`` pixels covering ``size``."""
    return [(start, min(start + block, size)) for start in range(0, size, block)]
