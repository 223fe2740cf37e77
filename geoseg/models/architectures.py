"""Building the network a model card describes, with segmentation-models-pytorch.

Any smp architecture and encoder: a package's card carries smp's own constructor arguments
(``card.network``, as smp's ``config.json`` holds them); older cards name an architecture and an
encoder, built with the card's bands, classes and decoder channels.
"""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch

from geoseg.errors import ModelError
from geoseg.models.card import ModelCard, network_config

#: smp architectures by class name (Unet, UnetPlusPlus, FPN, DeepLabV3Plus, Segformer, ...).
ARCHITECTURES: dict[str, type[torch.nn.Module]] = {
    name: cls for name, cls in vars(smp).items()
    if isinstance(cls, type) and issubclass(cls, torch.nn.Module) and hasattr(cls, "from_pretrained")
    and name[0].isupper()
}
def architecture_class(name: str, source: str) -> type[torch.nn.Module]:
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(f"{source}: unknown architecture {name!r}; choose one of "
                         f"{', '.join(sorted(ARCHITECTURES))}") from None


def build_network(card: ModelCard) -> torch.nn.Module:
    """An untrained network of the card's architecture (never downloads encoder weights)."""
    config = network_config(card)
    cls = architecture_class(config.pop("_model_class", card.architecture), f"model {card.name!r}")
    config["encoder_weights"] = None  # weights come from the package, never from a download
    if config.get("in_channels", card.in_channels) != card.in_channels or \
            config.get("classes", card.num_classes) != card.num_classes:
        raise ModelError(f"model {card.name!r}: the network takes {config.get('in_channels')} bands and gives "
                         f"{config.get('classes')} classes, but the card lists {card.in_channels} bands and "
                         f"{card.num_classes} classes; fix geoseg.json or config.json")
    try:
        return cls(**config)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ModelError(f"model {card.name!r}: cannot build {cls.__name__} with encoder "
                         f"{config.get('encoder_name')!r} ({exc}); see smp's list of encoders") from None
