import numpy as np
import pytest

from geoseg.engine.windows import BLEND_WINDOWS, cosine_window, get_window
from geoseg.errors import ConfigError


def test_cosine_ramps_sum_to_one_where_neighbours_overlap() -> None:
    tile, overlap = 64, 16
    w = cosine_window(tile, overlap)
    np.testing.assert_allclose(w[tile - overlap :] + w[:overlap], 1.0, atol=1e-12)
    assert w[overlap : tile - overlap].min() == 1.0


@pytest.mark.parametrize("name", list(BLEND_WINDOWS))
def test_windows_are_positive(name: str) -> None:
    w = get_window(name, 96, 24)
    assert w.shape == (96,) and (w > 0).all()


def test_unknown_window_lists_choices() -> None:
    with pytest.raises(ConfigError, match="cosine, gaussian, none"):
        get_window("hann", 64, 8)
