import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

from geoseg.errors import ModelError
from geoseg.models import BUILTIN_MODELS, get_card, load_model
from geoseg.models.builtin import UNUSED_KEYS
from geoseg.models.cache import cache_dir
from tests.helpers import tiny_card


def test_builtin_weights_load_with_only_the_unused_head_missing_and_are_cached() -> None:
    loaded = load_model("csmask-4b-l2a")
    assert isinstance(loaded.network, smp.Unet) and loaded.card.bands == ("blue", "green", "red", "nir")
    cached = list((cache_dir() / "models").glob("csmask-4b-l2a-*.safetensors"))
    assert len(cached) == 1
    # a damaged cache entry is rebuilt rather than trusted
    cached[0].write_bytes(b"garbage")
    again = load_model("csmask-4b-l2a")
    first, second = loaded.network.state_dict(), again.network.state_dict()
    for key in set(first) - UNUSED_KEYS:
        assert torch.equal(first[key], second[key]), key


def test_builtin_cards_describe_four_variants() -> None:
    assert sorted(BUILTIN_MODELS) == ["csmask-4b-l1c", "csmask-4b-l2a", "csmask-6b-l1c", "csmask-6b-l2a"]
    card = get_card("csmask-6b-l1c")
    assert card.resolution_m == 30 and card.scaling.integer_scale == 1e-4 and len(card.mean) == 6
    assert [c.name for c in card.classes] == ["clear", "cloud", "cloud shadow"]


def test_model_folder_round_trip_and_wrong_weights(tmp_path) -> None:
    card = tiny_card()
    folder = tmp_path / "m"
    folder.mkdir()
    card.save(folder / "config.json")
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3)
    save_file(net.state_dict(), str(folder / "model.safetensors"))
    loaded = load_model(str(folder))
    assert loaded.card == card
    with pytest.raises(ModelError, match="do not fit the architecture"):
        save_file({"x": torch.zeros(1)}, str(folder / "model.safetensors"))
        load_model(str(folder))
    (folder / "model.safetensors").write_bytes(b"\x00corrupt")
    with pytest.raises(ModelError, match=r"weights cannot be read.*re-export it"):
        load_model(str(folder))
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelError, match="missing"):
        load_model(str(folder))


def test_unknown_model_lists_names() -> None:
    with pytest.raises(ModelError, match="unknown model 'unet9'; choose one of auto, csmask-6b-l1c"):
        get_card("unet9")


def test_builtin_weights_load_where_the_cache_cannot_be_written(tmp_path, monkeypatch) -> None:
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path / "not-a-folder" / "cache"))
    loaded = load_model("csmask-6b-l1c")  # converted from ukis-csmask's ONNX file, kept in memory only
    assert loaded.card.name == "csmask-6b-l1c" and not cache_dir().exists()
