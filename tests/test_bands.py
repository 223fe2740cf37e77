import pytest

from geoseg.bands import match_bands
from geoseg.errors import BandError

S2 = ("blue (B02)", "green (B03)", "red (B04)", "nir (B08)", "swir16 (B11)", "swir22 (B12)")


def test_match_by_name_in_any_order() -> None:
    shuffled = (S2[3], S2[0], S2[2], S2[1])
    assert match_bands(shuffled, ("blue", "green", "red", "nir"), "x.tif") == ((2, 4, 3, 1), "name")


def test_match_by_sentinel2_code() -> None:
    assert match_bands(("B04", "B03", "B02", "B08"), ("blue", "green", "red", "nir"), "x.tif")[0] == (3, 2, 1, 4)


def test_unnamed_bands_are_used_in_order_and_flagged() -> None:
    assert match_bands((None,) * 4, ("blue", "green", "red", "nir"), "x.tif") == ((1, 2, 3, 4), "position")


def test_explicit_bands_by_index_and_name() -> None:
    assert match_bands(S2, ("red", "nir"), "x.tif", bands=(3, "nir")) == ((3, 4), "given")


def test_too_few_bands_says_what_is_needed() -> None:
    with pytest.raises(BandError, match=r"x.tif: has 3 band\(s\) but the model needs 4"):
        match_bands((None,) * 3, ("blue", "green", "red", "nir"), "x.tif")


def test_missing_band_name_lists_the_bands() -> None:
    with pytest.raises(BandError, match=r"no band named 'swir22'.*1=blue"):
        match_bands(S2[:4], ("blue", "nir"), "x.tif", bands=("blue", "swir22"))
