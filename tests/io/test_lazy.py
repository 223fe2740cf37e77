"""Lazy dask arrays of a scene: chunks of whole file blocks, exact values, validity from nodata or masks."""

import numpy as np
import pytest
import rasterio

from geoseg.io.lazy import aligned_chunks, read_dask, valid_dask
from geoseg.io.scene import open_scene
from tests.helpers import smooth_image


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "int16", "float32", "float64"])
def test_read_dask_is_lazy_block_aligned_and_exact(make_tif, dtype: str) -> None:
    data = smooth_image((3, 150, 230), dtype=dtype)
    path = make_tif(data, block=32)
    info = open_scene(path)
    arr = read_dask(info, (3, 1), target_chunk=70)
    assert all(c % 32 == 0 for c in arr.chunks[1][:-1]) and all(c % 32 == 0 for c in arr.chunks[2][:-1])
    assert arr.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(arr.compute(), data[[2, 0]])


def test_valid_from_nodata_value_and_nan(make_tif) -> None:
    data = smooth_image((2, 40, 50))
    data[0, :5] = -9999
    data[1, :, :3] = np.nan
    info = open_scene(make_tif(data, nodata=-9999))
    valid = valid_dask(info, (1, 2), read_dask(info, (1, 2))).compute()
    assert not valid[:5].any() and not valid[:, :3].any() and valid[5:, 3:].all()


def test_valid_from_internal_mask(make_tif, tmp_path) -> None:
    data = smooth_image((2, 40, 50), dtype="uint16")
    path = make_tif(data)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as ds:
        mask = np.full((40, 50), 255, np.uint8)
        mask[10:20, 10:20] = 0
        ds.write_mask(mask)
    info = open_scene(path)
    assert info.mask_kind == "mask"
    valid = valid_dask(info, (1, 2), read_dask(info, (1, 2))).compute()
    assert (~valid).sum() == 100 and not valid[10:20, 10:20].any()


def test_aligned_chunks() -> None:
    assert aligned_chunks(1000, 256, 600) == (512, 488)
    assert aligned_chunks(100, 256, 600) == (100,)
