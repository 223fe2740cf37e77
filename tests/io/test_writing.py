import pytest
import rasterio

from geoseg import RunConfig, segment_scene
from geoseg.engine.predictor import Predictor
from geoseg.errors import OutputError
from tests.helpers import smooth_image


def test_output_copies_the_grid_and_carries_colours_and_class_names(make_tif, tmp_path, tiny_model) -> None:
    path = make_tif(smooth_image((3, 90, 110)), res=20.0)
    summary = segment_scene(path, tmp_path / "m.tif", model=tiny_model())
    with rasterio.open(path) as src, rasterio.open(summary.output) as out:
        assert (out.crs, out.transform, out.width, out.height) == (src.crs, src.transform, src.width, src.height)
        assert out.nodata == 255 and out.dtypes[0] == "uint8" and out.profile["compress"] == "deflate"
        assert out.profile["tiled"] and out.colormap(1)[1] == (0, 255, 0, 255)
        assert out.tags()["CLASSES"] == '["a", "b", "c"]'
    assert sum(summary.class_shares.values()) == pytest.approx(1.0)


def test_default_output_is_beside_the_input_and_never_overwritten(make_tif, tiny_model) -> None:
    path = make_tif(smooth_image((3, 40, 40)), name="scene.tif")
    summary = segment_scene(path, model=tiny_model())
    assert summary.output == str(path.with_name("scene.mask.tif"))
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        segment_scene(path, model=tiny_model())
    with pytest.raises(OutputError, match="is the input scene"):
        segment_scene(path, path, RunConfig(overwrite=True), model=tiny_model())


def test_a_failed_run_leaves_nothing_at_the_final_path(make_tif, tmp_path, tiny_model, monkeypatch) -> None:
    path = make_tif(smooth_image((3, 600, 600)), block=64)
    calls = {"n": 0}
    real = Predictor.__call__

    def fail_later(self, patches):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C mid-run
        return real(self, patches)

    monkeypatch.setattr(Predictor, "__call__", fail_later)
    out = tmp_path / "out.tif"
    with pytest.raises(KeyboardInterrupt):
        segment_scene(path, out, RunConfig(block_size=256, workers=1), model=tiny_model())
    assert calls["n"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
