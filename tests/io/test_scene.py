import numpy as np
import pytest

from geoseg.errors import SceneError
from geoseg.io.scene import WindowReader, open_scene
from tests.helpers import smooth_image


@pytest.mark.parametrize(("content", "match"), [(b"", "not a raster"), (b"hello", "not a raster")])
def test_unreadable_files_name_the_file(tmp_path, content: bytes, match: str) -> None:
    path = tmp_path / "bad.tif"
    path.write_bytes(content)
    with pytest.raises(SceneError, match=f"{path}: {match}"):
        open_scene(path)


def test_missing_file(tmp_path) -> None:
    with pytest.raises(SceneError, match="no such file"):
        open_scene(tmp_path / "nope.tif")


def test_pixel_size_in_metres(make_tif) -> None:
    assert open_scene(make_tif(smooth_image((1, 8, 8)), res=10.0)).pixel_size_m == pytest.approx(10.0)


def test_window_reader_gives_values_and_validity(make_tif) -> None:
    data = smooth_image((2, 40, 50))
    data[0, :5] = -9999
    data[1, :, :3] = np.nan
    reader = WindowReader(open_scene(make_tif(data, nodata=-9999)), (2, 1))
    values, valid = reader.read(2, 30, 1, 40)
    np.testing.assert_array_equal(values, data[[1, 0], 2:30, 1:40])
    assert valid is not None and not valid[:3].any() and not valid[:, :2].any() and valid[3:, 2:].all()
