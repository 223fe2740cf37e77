"""Model packages against smp itself, every architecture, and imports from the sources users have."""

import argparse
import json

import pytest
import segmentation_models_pytorch as smp
import torch
from safetensors.torch import save_file

from geoseg.errors import ConfigError, ModelError
from geoseg.models import get_card, load_model
from geoseg.models.importing import import_model, parse_classes
from geoseg.models.package import CARD_FILE, folder_layout, save_package
from tests.helpers import tiny_card

BANDS = ("red", "green", "blue")
CLASSES = "water,forest,field"


def _logits(network: torch.nn.Module, seed: int = 0) -> torch.Tensor:
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        return network.eval()(x)


def test_a_folder_smp_saved_becomes_a_package_with_the_same_logits(tmp_path) -> None:
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3)
    net.save_pretrained(tmp_path / "smp")
    assert folder_layout(tmp_path / "smp") == "smp-only"
    with pytest.raises(ModelError, match=r"without geoseg's card.*geoseg models import"):
        get_card(str(tmp_path / "smp"))
    card = import_model(tmp_path / "smp", tmp_path / "pkg", bands=BANDS, classes=parse_classes(CLASSES),
                        mean=(0.1, 0.2, 0.3), std=(0.5, 0.5, 0.5), resolution_m=10)
    assert card.architecture == "Unet" and card.encoder == "resnet18"
    loaded = load_model(str(tmp_path / "pkg"))
    assert torch.equal(_logits(loaded.network), _logits(net))
    assert loaded.card.bands == BANDS and [c.name for c in loaded.card.classes] == ["water", "forest", "field"]
    # and smp alone reads what geoseg wrote, to the same logits
    again = smp.from_pretrained(str(tmp_path / "pkg"))
    assert torch.equal(_logits(again), _logits(net))


@pytest.mark.parametrize("architecture", ["Unet", "UnetPlusPlus", "FPN", "DeepLabV3Plus", "Linknet", "PSPNet",
                                          "PAN", "MAnet", "UPerNet"])
def test_every_smp_architecture_round_trips(tmp_path, architecture) -> None:
    net = smp.create_model(architecture, encoder_name="resnet18", encoder_weights=None, in_channels=3, classes=3)
    card = tiny_card()
    network = {"_model_class": architecture, "encoder_name": "resnet18", "in_channels": 3, "classes": 3}
    save_package(tmp_path / "pkg", card.__class__(**{**card.__dict__, "network": network}), net.state_dict())
    loaded = load_model(str(tmp_path / "pkg"))
    assert type(loaded.network).__name__ == architecture
    assert torch.equal(_logits(loaded.network), _logits(net))
    assert type(smp.from_pretrained(str(tmp_path / "pkg"))).__name__ == architecture


def test_lightning_checkpoint_with_torchgeo_hyperparameters(tmp_path) -> None:
    net = smp.DeepLabV3Plus("resnet18", encoder_weights=None, in_channels=3, classes=3)
    ckpt = {"state_dict": {f"model.{k}": v for k, v in net.state_dict().items()},
            "hyper_parameters": {"model": "deeplabv3+", "backbone": "resnet18", "in_channels": 3, "num_classes": 3,
                                 "loss": "ce", "lr": 1e-3},
            "epoch": 3}
    torch.save(ckpt, tmp_path / "last.ckpt")
    with pytest.raises(ModelError, match=r"pickled checkpoint.*--trust-checkpoint"):
        import_model(tmp_path / "last.ckpt", tmp_path / "pkg", bands=BANDS, classes=parse_classes(CLASSES))
    card = import_model(tmp_path / "last.ckpt", tmp_path / "pkg", bands=BANDS, classes=parse_classes(CLASSES),
                        trust_checkpoint=True)
    assert card.architecture == "DeepLabV3Plus" and "Lightning checkpoint" in card.provenance
    assert torch.equal(_logits(load_model(str(tmp_path / "pkg")).network), _logits(net))
    assert sorted(p.name for p in (tmp_path / "pkg").iterdir()) == ["README.md", "config.json", "geoseg.json",
                                                                    "model.safetensors"]
    # the weights are as readable as the package's other files (safetensors alone writes 0600)
    assert len({p.stat().st_mode & 0o777 for p in (tmp_path / "pkg").iterdir()}) == 1


def test_plain_state_dict_needs_the_network_named_and_mismatches_are_named(tmp_path) -> None:
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3)
    torch.save(net.state_dict(), tmp_path / "weights.pth")
    with pytest.raises(ModelError, match=r"does not say which network.*--architecture"):
        import_model(tmp_path / "weights.pth", tmp_path / "pkg", bands=BANDS, classes=parse_classes(CLASSES),
                     trust_checkpoint=True)
    with pytest.raises(ModelError, match=r"80 missing, e.g. \['encoder.layer1.2"):  # resnet18 weights, resnet34 asked
        import_model(tmp_path / "weights.pth", tmp_path / "pkg", bands=BANDS, classes=parse_classes(CLASSES),
                     architecture="Unet", encoder="resnet34", trust_checkpoint=True)
    damaged = dict(net.state_dict(), **{"decoder.blocks.0.conv1.0.weight": torch.zeros(3, 3, 3, 3)})
    torch.save(damaged, tmp_path / "damaged.pth")
    with pytest.raises(ModelError, match=r"1 mis-shaped, e.g. \['decoder.blocks.0.conv1.0.weight \(3, 3, 3, 3\)"):
        import_model(tmp_path / "damaged.pth", tmp_path / "pkg", bands=BANDS, classes=parse_classes(CLASSES),
                     architecture="Unet", encoder="resnet18", trust_checkpoint=True)
    with pytest.raises(ConfigError, match="the weights take 3 bands but --bands names 4"):
        import_model(tmp_path / "weights.pth", tmp_path / "pkg", bands=(*BANDS, "nir"),
                     classes=parse_classes(CLASSES), architecture="unet", encoder="resnet18", trust_checkpoint=True)
    assert not (tmp_path / "pkg").exists()  # nothing half-written
    card = import_model(tmp_path / "weights.pth", tmp_path / "pkg", bands=BANDS, classes=parse_classes(CLASSES),
                        architecture="unet", encoder="resnet18", trust_checkpoint=True)
    assert card.mean == (0.0,) * 3 and "no normalisation given" in card.provenance


def test_a_pickle_that_is_not_plain_tensors_is_refused_even_when_trusted(tmp_path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hparams": argparse.Namespace(lr=1.0)}, tmp_path / "odd.ckpt")
    with pytest.raises(ModelError, match="cannot be read as a checkpoint of tensors"):
        import_model(tmp_path / "odd.ckpt", tmp_path / "pkg", bands=BANDS, classes=parse_classes(CLASSES),
                     trust_checkpoint=True)


def test_torchscript_source(tmp_path) -> None:
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3).eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 64, 64)), str(tmp_path / "scripted.pt"))
    card = import_model(tmp_path / "scripted.pt", tmp_path / "pkg", bands=BANDS, classes=parse_classes(CLASSES),
                        architecture="Unet", encoder="resnet18", trust_checkpoint=True)
    assert "TorchScript" in card.provenance
    assert torch.equal(_logits(load_model(str(tmp_path / "pkg")).network), _logits(net))


def test_older_folder_layout_still_loads_and_converts(tmp_path) -> None:
    folder = tmp_path / "old"
    folder.mkdir()
    tiny_card().save(folder / "config.json")
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3)
    save_file(net.state_dict(), str(folder / "model.safetensors"))
    assert folder_layout(folder) == "card-only"
    assert torch.equal(_logits(load_model(str(folder)).network), _logits(net))
    import_model(folder, tmp_path / "pkg")
    assert json.loads((tmp_path / "pkg" / CARD_FILE).read_text())["bands"] == ["b1", "b2", "b3"]
    assert torch.equal(_logits(load_model(str(tmp_path / "pkg")).network), _logits(net))


def test_classes_from_yaml_with_colours(tmp_path) -> None:
    (tmp_path / "classes.yaml").write_text("- {name: water, color: [0, 0, 255]}\n- {name: forest}\n")
    classes = parse_classes(str(tmp_path / "classes.yaml"))
    assert classes[0].color == (0, 0, 255) and classes[1].name == "forest" and classes[1].value == 1
    with pytest.raises(ConfigError, match=r"class values must be 0\.\.N-1"):
        (tmp_path / "bad.yaml").write_text("1: water\n2: forest\n")
        parse_classes(str(tmp_path / "bad.yaml"))


def test_class_colours_follow_land_cover_names() -> None:
    from geoseg.models.card import PALETTE, class_colour

    assert class_colour("Open water", 0) == (0, 100, 200) and class_colour("Deciduous forest", 1) == (0, 100, 0)
    assert class_colour("meadow", 2) != class_colour("grass", 3)
    assert class_colour("class 7", 7) == PALETTE[7]
