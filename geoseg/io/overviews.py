"""Overviews of a class mask, built while the mask is written, so a COG costs no second MODE pass.

GDAL's COG driver spends most of its time resampling overviews by MODE (measured in
benchmarks/RESULTS.md). :class:`OverviewPyramid` builds them instead from the label strips as the
engine hands them out: the first levels are halved on the engine's device (:meth:`add_levels`; see
:data:`geoseg.engine.blender.DEVICE_OVERVIEW_LEVELS`), the rest here, a quarter as much work at each
level. Each level halves the one above with :func:`mode2x2` (the most frequent valid class of each
2 x 2 cell, nodata ignored), until the level fits in one 512-px COG block, and is written to a scratch
GeoTIFF of its own. :func:`overview_vrt` lists the mask with those levels as its overviews, and the
COG driver copies them as they are (``OVERVIEWS=FORCE_USE_EXISTING``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np
from affine import Affine

from geoseg.io.scene import SceneInfo

#: Levels are made until the level fits in a block of this edge (the COG block size).
SMALLEST = 512


def level_key(k: int) -> str:
    """The name of overview level ``k`` (1: the mask halved) among the strips the engine hands the writer."""
    return f"overview{k}"


def mode2x2(values: np.ndarray, nodata: int) -> np.ndarray:
    """``(2r, 2c)`` -> ``(r, c)``: the most frequent valid value of each 2 x 2 cell; ties go to the
    first of top-left, top-right, bottom-left, bottom-right; ``nodata`` only where all four are."""
    cells = (values[0::2, 0::2], values[0::2, 1::2], values[1::2, 0::2], values[1::2, 1::2])
    best, best_count = cells[0], np.zeros(cells[0].shape, np.uint8)
    for i, x in enumerate(cells):
        count = sum((x == y).astype(np.uint8) for y in cells) * (x != nodata)
        if i == 0:
            best_count = count
            continue
        better = count > best_count
        best = np.where(better, x, best)
        best_count = np.maximum(count, best_count)
    return np.where(best_count == 0, np.asarray(nodata, values.dtype), best)


class OverviewPyramid:
    """Levels 1, 2, ... of a mask on ``scene``'s grid, fed the mask's strips in row order."""

    def __init__(self, scene: SceneInfo, nodata: int, open_level: Callable[[int, SceneInfo], Callable]):
        """``open_level(k, grid)`` opens level ``k``'s writer and returns its ``write(row0, values)``."""
        self.nodata = nodata
        self.grids: list[SceneInfo] = []
        width, height, k = scene.width, scene.height, 0
        while max(width, height) > SMALLEST:
            width, height, k = math.ceil(width / 2), math.ceil(height / 2), k + 1
            self.grids.append(replace(scene, width=width, height=height,
                                      transform=scene.transform * Affine.scale(2**k)))
        self._write = [open_level(i + 1, grid) for i, grid in enumerate(self.grids)]
        self._pending: list[np.ndarray | None] = [None] * len(self.grids)
        self._next = [0] * len(self.grids)

    def add(self, labels: np.ndarray) -> None:
        """The next strip of the full-resolution mask, ``(row, col)``."""
        self._push(0, labels)

    def add_levels(self, levels: list[np.ndarray]) -> None:
        """The next rows of levels 1, 2, ..., already halved level by level (the engine does it on the
        device); the levels below the last given are made here."""
        levels = levels[: len(self.grids)]
        for k, rows in enumerate(levels):
            self._write[k](self._next[k], rows)
            self._next[k] += len(rows)
        if levels:
            self._push(len(levels), levels[-1])

    def close(self) -> None:
        """Reduce what is left of each level (an odd last row, paired with nodata)."""
        for k in range(len(self.grids)):
            rest = self._pending[k]
            if rest is not None and len(rest):
                self._pending[k] = None
                self._reduce(k, np.concatenate([rest, np.full_like(rest, self.nodata)]))

    def _push(self, k: int, rows: np.ndarray) -> None:
        """Rows of level ``k`` (0: the mask) are reduced into level ``k + 1`` two at a time."""
        if k == len(self.grids):
            return
        rest = self._pending[k]
        buffer = rows if rest is None or not len(rest) else np.concatenate([rest, rows])
        even = len(buffer) // 2 * 2
        self._pending[k] = buffer[even:]
        if even:
            self._reduce(k, buffer[:even])

    def _reduce(self, k: int, rows: np.ndarray) -> None:
        if rows.shape[1] % 2:
            rows = np.concatenate([rows, np.full((len(rows), 1), self.nodata, rows.dtype)], axis=1)
        down = np.ascontiguousarray(mode2x2(rows, self.nodata))
        self._write[k](self._next[k], down)
        self._next[k] += len(down)
        self._push(k + 1, down)


def overview_vrt(mask: Path, levels: list[Path], scene: SceneInfo, nodata: float,
                 colormap: dict[int, tuple[int, int, int, int]] | None, tags: dict[str, str],
                 description: str = "") -> str:
    """A VRT of ``mask`` whose overviews are ``levels`` (for the COG driver to copy as they are), with
    the mask's metadata, colour table and band description."""
    metadata = "".join(f'<MDI key="{escape(k)}">{escape(v)}</MDI>' for k, v in tags.items())
    entries = "".join(f'<Entry c1="{r}" c2="{g}" c3="{b}" c4="{a}"/>'
                      for r, g, b, a in ((colormap or {}).get(v, (0, 0, 0, 0)) for v in range(256)))
    t = scene.transform
    srs = f"<SRS>{escape(scene.crs.to_wkt())}</SRS>" if scene.crs is not None else ""
    overviews = "".join(f'<Overview><SourceFilename relativeToVRT="0">{escape(str(p))}</SourceFilename>'
                        "<SourceBand>1</SourceBand></Overview>" for p in levels)
    return (f'<VRTDataset rasterXSize="{scene.width}" rasterYSize="{scene.height}">{srs}'
            f"<GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>"
            f"<Metadata>{metadata}</Metadata>"
            f'<VRTRasterBand dataType="Byte" band="1"><Description>{escape(description)}</Description>'
            f"<NoDataValue>{nodata:g}</NoDataValue>"
            + (f"<ColorInterp>Palette</ColorInterp><ColorTable>{entries}</ColorTable>" if colormap else "")
            + f'<SimpleSource><SourceFilename relativeToVRT="0">{escape(str(mask))}</SourceFilename>'
            f"<SourceBand>1</SourceBand></SimpleSource>{overviews}</VRTRasterBand></VRTDataset>")
