"""Sensor presets, telling a sensor from a product name, and the input sanity warnings."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from geoseg.config import RunConfig
from geoseg.errors import BandError, ConfigError
from geoseg.models import Scaling
from geoseg.prepare import prepare_run
from geoseg.sensors import SENSORS, get_sensor, sensor_from_name
from tests.helpers import tiny_card, write_tif

NAIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "naip-rgbn" / "m_4709963_se_14_1_20200831.tif"


@pytest.mark.parametrize(("name", "sensor"), [
    ("S2A_T33UUU_20170216_L1C_B02-B03.tif", "sentinel2-l1c"),
    ("S2B_MSIL2A_20200101T101010_N0213_R022_T33UUU.tif", "sentinel2-l2a"),
    ("LC09_L2SP_044034_20220101_02_T1_SR.tif", "landsat8"),
    ("LE07_L2SP_044034_20020101_02_T1.tif", "landsat7"),
    ("LT05_L2SP_044034_19900101_02_T1.tif", "landsat5"),
    ("m_4709963_se_14_1_20200831.tif", None),
    ("S2A_anything_L1CX.tif", None),
])
def test_sensor_from_product_name(name, sensor) -> None:
    found = sensor_from_name(name)
    assert (found.name if found else None) == sensor


def test_presets_are_consistent_and_unknown_names_list_them() -> None:
    assert SENSORS["naip"].bands == ("red", "green", "blue", "nir") and SENSORS["naip"].dtype == "uint8"
    assert len(SENSORS["sentinel2-l1c"].bands) == 13 and "cirrus" not in SENSORS["sentinel2-l2a"].bands
    with pytest.raises(ConfigError, match="unknown sensor 'spot'; choose one of sentinel2-l1c"):
        get_sensor("spot")


def test_sensor_names_unnamed_bands_and_scales_them(tmp_path, tiny_model) -> None:
    """A 4-band uint8 image: without --sensor the bands go in file order and are scaled as 16-bit
    reflectance (warned); with --sensor naip blue and red are found by name and scaled by 1/255."""
    card = replace(tiny_card(bands=4), bands=("blue", "green", "red", "nir"), mean=(0.4,) * 4, std=(0.1,) * 4,
                   scaling=Scaling(integer_scale=1e-4))
    data = np.full((4, 64, 64), 100, np.uint8)
    scene = write_tif(tmp_path / "aerial.tif", data, res=1.0)
    plain = prepare_run(scene, tmp_path / "a.tif", RunConfig(match_resolution=False), card=card)
    assert plain.bands == (1, 2, 3, 4) and plain.band_match == "position"
    assert any("the scaling looks wrong" in n and "0.01" in n for n in plain.notes), plain.notes
    with pytest.raises(BandError, match=r"the scaling looks wrong.*--strict-inputs"):
        prepare_run(scene, tmp_path / "a.tif", RunConfig(match_resolution=False, strict_inputs=True), card=card)
    named = prepare_run(scene, tmp_path / "a.tif", RunConfig(match_resolution=False, sensor="naip"), card=card)
    assert named.bands == (3, 2, 1, 4) and named.band_match == "name"
    assert named.card.scaling.factors("uint8") == (pytest.approx(1 / 255), 0.0)
    assert not [n for n in named.notes if "scaling" in n or "far from" in n]
    with pytest.raises(BandError, match="has 4 bands but a landsat8 file has 7"):
        prepare_run(scene, tmp_path / "a.tif", RunConfig(sensor="landsat8"), card=card)


def test_unnamed_sentinel2_stack_is_named_by_its_product_name(tmp_path) -> None:
    card = replace(tiny_card(bands=2), bands=("red", "nir"))
    scene = write_tif(tmp_path / "S2A_MSIL2A_20200101_T33UUU.tif", np.full((12, 64, 64), 1000, np.uint16))
    prepared = prepare_run(scene, tmp_path / "a.tif", RunConfig(), card=card)
    assert prepared.bands == (4, 8)
    assert any("named from the file name as sentinel2-l2a" in n for n in prepared.notes)


def test_an_eight_band_stack_without_names_says_what_the_model_needs(tmp_path) -> None:
    card = replace(tiny_card(bands=2), bands=("red", "nir"))
    scene = write_tif(tmp_path / "stack.tif", np.ones((8, 64, 64), np.uint16))
    with pytest.raises(BandError, match=r"the model's red, nir \(the scene has 8 bands.*--sensor \(sentinel2-l1c"):
        prepare_run(scene, tmp_path / "a.tif", RunConfig(), card=card)


def test_resolution_far_from_the_models_is_warned(tmp_path) -> None:
    card = tiny_card(resolution_m=10)
    scene = write_tif(tmp_path / "coarse.tif", np.ones((3, 64, 64), np.float32), res=60.0)
    prepared = prepare_run(scene, tmp_path / "a.tif", RunConfig(), card=card)
    assert any("sees 60 m pixels but was trained at 10 m" in n for n in prepared.notes)


@pytest.mark.skipif(not NAIP.exists(), reason="real NAIP scene not in ../shared/data")
def test_real_naip_with_the_builtin_model_warns_and_with_its_preset_does_not(tmp_path) -> None:
    plain = prepare_run(NAIP, tmp_path / "a.tif", RunConfig(model="csmask-4b-l1c"))
    assert plain.bands == (1, 2, 3, 4)  # red and blue swapped: the file has no band names
    assert any("the scaling looks wrong" in n for n in plain.notes)
    preset = prepare_run(NAIP, tmp_path / "a.tif", RunConfig(model="csmask-4b-l1c", sensor="naip"))
    assert preset.bands == (3, 2, 1, 4)
    assert not [n for n in preset.notes if "scaling" in n or "far from" in n]


@pytest.mark.parametrize(("name", "tags", "expected", "source"), [
    ("S2A_T33UUU_20170216_L1C_B02-B03-B04-B08-B11-B12_10m.tif", {}, "2017-02-16T00:00:00+00:00", "file name"),
    ("S2B_MSIL2A_20230704T101609_N0509_R065_T32UNU_20230704T165213.tif", {}, "2023-07-04T10:16:09+00:00",
     "file name"),
    ("LC08_L2SP_190024_20200418_20200822_02_T1_SR_stack.tif", {}, "2020-04-18T00:00:00+00:00", "file name"),
    ("scene.tif", {"DATE_ACQUIRED": "2019-06-01"}, "2019-06-01T00:00:00+00:00", "tag DATE_ACQUIRED"),
    ("S2A_T33UUU_20170216_x.tif", {"SENSING_TIME": "2017-02-16T10:05:01Z"}, "2017-02-16T10:05:01+00:00",
     "tag SENSING_TIME"),
])
def test_the_acquisition_time_comes_from_tags_or_the_product_name(name, tags, expected, source) -> None:
    from geoseg.sensors import acquisition_time

    when, said = acquisition_time(name, tags)
    assert (when.isoformat(), said) == (expected, source)


def test_no_acquisition_time_where_nothing_tells() -> None:
    from geoseg.sensors import acquisition_time

    assert acquisition_time("mosaic_2019.tif", {"TIFFTAG_DATETIME": "2024:01:01 10:00:00"}) is None
