"""A tiled GeoTIFF's compressed tiles, read as they are stored: where each lies and how it is coded.

:func:`tile_index` reads the first IFD of a GeoTIFF with tifffile (never its pixels) and returns a
:class:`TileIndex` when the file's tiles can be decoded outside GDAL
(:mod:`geoseg.engine.tile_decode`): tiled, little-endian, deflate / zstd / uncompressed, predictor 1, 2
or 3, plain integer or float samples. Otherwise it returns the reason, in words, and the CPU readers
(GDAL) do the work. :meth:`TileIndex.fetch` reads the compressed bytes of chosen tiles into a host
buffer at aligned offsets, each tile with one ``pread``, on a few threads.
"""

from __future__ import annotations

import os
from concurrent.futures import Executor
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from geoseg.io.scene import SceneInfo

#: TIFF compression codes the device decoders take, by name.
CODECS = {1: "none", 8: "deflate", 32946: "deflate", 50000: "zstd"}
_CODEC_NAMES = {5: "LZW", 7: "JPEG", 34887: "LERC", 34925: "LZMA", 50001: "WEBP", 34712: "JPEG 2000"}
#: Bytes skipped at the start of a tile (a zlib stream's header; nvCOMP decodes the raw deflate inside)
#: and at its end (zlib's Adler-32 checksum).
SKIP_HEAD = {"none": 0, "deflate": 2, "zstd": 0}
SKIP_TAIL = {"none": 0, "deflate": 4, "zstd": 0}
#: Alignment of every tile's payload in the host and device buffers (nvCOMP asks for 4 to 16).
ALIGN = 16
#: Threads :meth:`TileIndex.fetch` spreads its reads over, when given a pool (one thread copied about 4 GB/s
#: out of the page cache on the GPU machine: benchmarks/RESULTS.md section 11).
FETCH_THREADS = 4


@dataclass(frozen=True)
class TileIndex:
    """Where a GeoTIFF's full-resolution tiles lie in the file and how they are coded."""

    path: Path
    tile_shape: tuple[int, int]  # (rows, cols) of a tile
    grid: tuple[int, int]  # tiles down, tiles across
    samples: int  # samples per pixel (bands)
    separate: bool  # PlanarConfiguration 2: one set of tiles per band
    dtype: np.dtype  # of one sample, little-endian
    codec: str  # "none", "deflate" or "zstd"
    predictor: int  # 1 none, 2 horizontal differencing, 3 floating point
    offsets: np.ndarray  # int64, one per tile: band-major (separate), then row-major
    counts: np.ndarray  # int64 compressed bytes per tile (0: a sparse tile, read as nodata or 0)

    @property
    def tile_bytes(self) -> int:
        """Decoded bytes of one tile (all its samples when pixel-interleaved)."""
        rows, cols = self.tile_shape
        return rows * cols * (1 if self.separate else self.samples) * self.dtype.itemsize

    def tiles(self, row0: int, row1: int, col0: int, col1: int, bands: tuple[int, ...]) -> np.ndarray:
        """Flat indexes of the tiles holding scene pixels ``[row0, row1) x [col0, col1)`` of the 0-based
        ``bands``, shaped ``(planes, tile rows, tile cols)``: one plane per band when the file is
        band-separate, else one plane holding every sample."""
        th, tw = self.tile_shape
        down, across = self.grid
        ys = np.arange(row0 // th, -(-row1 // th))
        xs = np.arange(col0 // tw, -(-col1 // tw))
        planes = np.asarray(bands if self.separate else (0,))
        return planes[:, None, None] * (down * across) + ys[None, :, None] * across + xs[None, None, :]

    def fetch(self, tiles: np.ndarray, out: np.ndarray, fd: int, pool: Executor | None = None) -> np.ndarray:
        """Read the compressed bytes of ``tiles`` (flat indexes) into the uint8 buffer ``out``, each
        tile's payload (past :data:`SKIP_HEAD`) starting on an :data:`ALIGN`-byte boundary, one ``pread``
        a tile, spread over ``pool``'s threads when given; returns the ``(tile, 2)`` payload offsets and
        sizes in ``out`` (size 0: a sparse tile). ``out`` must hold :meth:`fetch_bytes` bytes."""
        head, tail = SKIP_HEAD[self.codec], SKIP_TAIL[self.codec]
        counts = self.counts[tiles]
        slots = self._slots(counts)
        starts = np.concatenate([[0], np.cumsum(slots)[:-1]]) + (-head) % ALIGN  # payloads aligned
        view = memoryview(out)

        def read(part: range) -> None:
            for i in part:
                count = int(counts[i])
                if count == 0:
                    continue
                t, start = int(tiles[i]), int(starts[i])
                got = os.preadv(fd, [view[start : start + count]], int(self.offsets[t]))
                if got != count:
                    raise OSError(f"{self.path}: tile {t} is cut short ({got} of {count} bytes at offset "
                                  f"{int(self.offsets[t])}); the file is damaged or incomplete")

        if pool is None or len(tiles) < 16:
            read(range(len(tiles)))
        else:  # parts of about equal bytes, one per thread of the pool
            edges = np.searchsorted(np.cumsum(counts), np.linspace(0, counts.sum(), FETCH_THREADS + 1)[1:-1])
            bounds = [0, *edges.tolist(), len(tiles)]
            for job in [pool.submit(read, range(a, b)) for a, b in pairwise(bounds)]:
                job.result()
        present = counts > 0
        return np.stack([np.where(present, starts + head, 0), np.where(present, counts - head - tail, 0)], axis=1)

    def fetch_bytes(self, tiles: np.ndarray) -> int:
        """Room :meth:`fetch` needs for ``tiles``."""
        return int(self._slots(self.counts[tiles]).sum())

    def _slots(self, counts: np.ndarray) -> np.ndarray:
        """Bytes each tile takes in a fetch buffer: its own, room to align its payload, rounded to :data:`ALIGN`."""
        return (counts + SKIP_HEAD[self.codec] + 2 * ALIGN - 1) // ALIGN * ALIGN


def tile_index(info: SceneInfo) -> TileIndex | str:
    """The tile index of ``info``'s file, or why its tiles cannot be decoded outside GDAL."""
    if info.driver != "GTiff":
        return f"a {info.driver} file, not a GeoTIFF"
    if info.mask_kind == "mask":
        return "validity comes from a mask band"
    try:
        import tifffile
    except ImportError:
        return "tifffile is not installed"
    try:
        with tifffile.TiffFile(info.path) as tif:
            page = tif.pages.first
            byteorder = tif.byteorder
            if not page.is_tiled or page.tiledepth > 1:
                return "stored in strips, not tiles"
            compression, predictor = int(page.compression), int(page.predictor)
            layout = dict(tile_shape=(int(page.tilelength), int(page.tilewidth)), samples=int(page.samplesperpixel),
                          separate=int(page.planarconfig) == 2, bits=int(page.bitspersample),
                          fmt=int(page.sampleformat), photometric=int(page.photometric),
                          size=(int(page.imagelength), int(page.imagewidth)))
            offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            counts = np.asarray(page.databytecounts, dtype=np.int64)
    except Exception as exc:
        return f"its TIFF structure was not understood ({type(exc).__name__})"
    if byteorder != "<":
        return "big-endian"
    if compression not in CODECS:
        return f"{_CODEC_NAMES.get(compression, f'compression {compression}')}-compressed"
    if predictor not in (1, 2, 3):
        return f"predictor {predictor}"
    if layout["photometric"] == 6:
        return "YCbCr"
    if layout["size"] != (info.height, info.width) or layout["samples"] != info.count:
        return "its first image is not the raster GDAL reads"
    kind = {1: "u", 2: "i", 3: "f"}.get(layout["fmt"])
    if kind is None or layout["bits"] not in (8, 16, 32, 64) or np.dtype(f"<{kind}{layout['bits'] // 8}") != np.dtype(
            info.dtype):
        return f"{layout['bits']}-bit samples of format {layout['fmt']}"
    th, tw = layout["tile_shape"]
    grid = (-(-info.height // th), -(-info.width // tw))
    planes = layout["samples"] if layout["separate"] else 1
    if len(offsets) != planes * grid[0] * grid[1] or len(counts) != len(offsets):
        return "its tile table does not match its size"
    return TileIndex(Path(info.path), (th, tw), grid, layout["samples"], layout["separate"], np.dtype(info.dtype),
                     CODECS[compression], predictor, offsets, counts)
