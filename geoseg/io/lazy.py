"""Lazy dask arrays of a scene's pixels and validity, for dask and xarray pipelines.

Chunks are whole multiples of the file's internal blocks, each read by its own task through a
fresh rasterio handle (GDAL handles are not shared between threads), so a chunk never decodes a
file block another chunk also needs. The file engine does not use these (its own threaded reader
decodes each block once into staging buffers); they are the base of geoseg's array API for dask
users. dask is imported here only, where arrays are built: it is not needed by runs.
"""

from __future__ import annotations

import dask.array as da
import numpy as np
from rasterio.windows import Window

from geoseg.io.scene import SceneInfo, nodata_value, open_quiet, valid_from_masks, valid_from_values


def aligned_chunks(size: int, block: int, target: int) -> tuple[int, ...]:
    """Chunk lengths along one axis: a whole multiple of the file's ``block``, near ``target``."""
    step = max(block, round(target / block) * block) if block < size else size
    sizes = [step] * (size // step)
    if size % step:
        sizes.append(size % step)
    return tuple(sizes)


def read_dask(info: SceneInfo, indexes: tuple[int, ...], target_chunk: int = 2048) -> da.Array:
    """The bands ``indexes`` (1-based) as a lazy ``(band, row, col)`` dask array of the file's dtype."""
    rows = aligned_chunks(info.height, info.block_shape[0], target_chunk)
    cols = aligned_chunks(info.width, info.block_shape[1], target_chunk)
    return da.map_blocks(
        _read_chunk, path=str(info.path), indexes=indexes, dtype=info.dtype, chunks=((len(indexes),), rows, cols),
        meta=np.empty((0, 0, 0), dtype=info.dtype), name=f"read-{_token(info, indexes)}",
    )


def valid_dask(info: SceneInfo, indexes: tuple[int, ...], values: da.Array) -> da.Array:
    """Lazy ``(row, col)`` bool array: True where every selected band holds data.

    From the nodata value (and NaN in float scenes) when that is all the file has, so no second
    read; from GDAL's mask bands (internal mask, alpha band) otherwise.
    """
    is_float = np.dtype(info.dtype).kind == "f"
    if info.mask_kind == "mask":
        return da.map_blocks(
            _read_valid_chunk, path=str(info.path), indexes=indexes, dtype=bool,
            chunks=values.chunks[1:], meta=np.empty((0, 0), dtype=bool),
            name=f"valid-{_token(info, indexes)}",
        )
    nodata = nodata_value(info)
    if nodata is None and not is_float:
        return da.ones(values.shape[1:], chunks=values.chunks[1:], dtype=bool)
    return values.map_blocks(valid_from_values, nodata=nodata, drop_axis=0, dtype=bool,
                             meta=np.empty((0, 0), dtype=bool))


def _token(info: SceneInfo, indexes: tuple[int, ...]) -> str:
    from dask.base import tokenize

    stat = info.path.stat()
    return tokenize(str(info.path.resolve()), stat.st_size, stat.st_mtime_ns, indexes)


def _window(block_info: dict) -> Window:
    (row0, row1), (col0, col1) = block_info[None]["array-location"][-2:]
    return Window(col0, row0, col1 - col0, row1 - row0)


def _read_chunk(path: str, indexes: tuple[int, ...], block_info: dict | None = None) -> np.ndarray:
    assert block_info is not None
    window = _window(block_info)
    with open_quiet(path) as ds:
        return ds.read(list(indexes), window=window)


def _read_valid_chunk(path: str, indexes: tuple[int, ...], block_info: dict | None = None) -> np.ndarray:
    assert block_info is not None
    window = _window(block_info)
    with open_quiet(path) as ds:
        return valid_from_masks(ds, list(indexes), window)


