"""Building the network a model card describes, with segmentation-models-pytorch."""

from __future__ import annotations

import segmentation_models_pytorch as smp
import torch

from geoseg.errors import ModelError
from geoseg.models.card import ModelCard

#: smp architectures geoseg knows how to build from a card.
ARCHITECTURES = {"Unet": smp.Unet, "UnetPlusPlus": smp.UnetPlusPlus}


def build_network(card: ModelCard) -> torch.nn.Module:
    """An untrained network of the card's architecture (never downloads encoder weights)."""
    try:
        cls = ARCHITECTURES[card.architecture]
    except KeyError:
        raise ModelError(f"model {card.name!r}: unknown architecture {card.architecture!r}; "
                         f"choose one of {', '.join(ARCHITECTURES)}") from None
    try:
        return cls(
            encoder_name=card.encoder,
            encoder_weights=None,
            in_channels=card.in_channels,
            classes=card.num_classes,
            decoder_channels=card.decoder_channels,
        )
    except (KeyError, ValueError) as exc:
        raise ModelError(f"model {card.name!r}: cannot build {card.architecture} with encoder "
                         f"{card.encoder!r} ({exc}); see smp's list of encoders") from None
