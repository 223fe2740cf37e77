"""Preparing a run: the model chosen for a scene, bands, inference grid and layout, before any work."""

import pytest

from geoseg.config import RunConfig
from geoseg.errors import BandError, OutputError
from geoseg.io.scene import open_scene
from geoseg.prepare import choose_builtin, prepare_run
from tests.helpers import smooth_image, tiny_card

SIX = ("blue", "green", "red", "nir", "swir16", "swir22")


def test_auto_picks_by_bands_and_product_level(make_tif) -> None:
    six = ("blue", "green", "red", "nir", "swir16", "swir22")
    assert choose_builtin(open_scene(make_tif(smooth_image((6, 8, 8)), descriptions=six))) == "csmask-6b-l1c"
    four = open_scene(make_tif(smooth_image((4, 8, 8)), name="S2B_L2A_x.tif", descriptions=six[:4]))
    assert choose_builtin(four) == "csmask-4b-l2a"


def test_prepare_decides_model_bands_grid_and_layout(make_tif, tmp_path) -> None:
    scene = make_tif(smooth_image((6, 300, 400), dtype="uint16"), descriptions=SIX[::-1], res=10.0)
    prepared = prepare_run(scene, tmp_path / "m.tif", RunConfig(block_size=512))
    assert prepared.model == "csmask-6b-l1c" and prepared.band_match == "name"
    assert prepared.bands == (6, 5, 4, 3, 2, 1)  # the scene's bands in the model's order
    assert prepared.factor == 3  # 10 m scene, 30 m model
    assert (prepared.layout.height, prepared.layout.width) == (300, 400) and prepared.layout.rows.size == 100
    assert prepared.output == tmp_path / "m.tif" and not prepared.output.exists()
    assert prepared.notes == ()


def test_prepare_with_a_card_in_memory_and_its_mistakes(make_tif, tmp_path) -> None:
    scene = make_tif(smooth_image((3, 50, 60)), crs=None)
    prepared = prepare_run(scene, None, RunConfig(scale=2.0), tiny_card())
    assert prepared.output == scene.with_name(f"{scene.stem}.mask.tif")
    assert prepared.card.scaling.float_scale == 2.0 and prepared.band_match == "position"
    assert any("no CRS" in n for n in prepared.notes) and any("no names" in n for n in prepared.notes)
    with pytest.raises(OutputError, match="is the input scene"):
        prepare_run(scene, scene, RunConfig(), tiny_card())
    with pytest.raises(BandError, match="band 9 does not exist"):
        prepare_run(scene, tmp_path / "m.tif", RunConfig(bands=(1, 2, 9)), tiny_card())
