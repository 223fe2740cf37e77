"""``check_model``: load a model (every weight must fit, none NaN) and run one patch through it on the CPU,
the library call behind ``geoseg models check``."""

from __future__ import annotations

import time
from dataclasses import dataclass

from geoseg.errors import ConfigError, ModelError
from geoseg.models.card import ModelCard
from geoseg.models.registry import load_model


@dataclass(frozen=True)
class ModelCheck:
    """What :func:`check_model` found: the card, the network's size and how long loading and one patch took."""

    card: ModelCard
    parameters: int
    seconds: float


def check_model(name: str, trust_checkpoint: bool = False) -> ModelCheck:
    """Load ``name`` and run one patch of zeros through it; raise :class:`ModelError` for scores that are
    not finite and :class:`ConfigError` for an output whose shape the card does not predict."""
    import torch

    started = time.perf_counter()
    loaded = load_model(name, trust_checkpoint=trust_checkpoint)
    card = loaded.card
    patch = torch.zeros(1, card.in_channels, card.tile_size, card.tile_size)
    with torch.inference_mode():
        out = loaded.network(patch)
    if not bool(torch.isfinite(out).all()):
        raise ModelError(f"{name}: one {card.tile_size}-px patch gave NaN or infinite scores; the network's weights "
                         f"or normalisation are broken: retrain it or export it again")
    expected = (1, card.num_classes, card.tile_size, card.tile_size)
    if tuple(out.shape) != expected:
        raise ConfigError(f"{name}: one {card.tile_size}-px patch gave {tuple(out.shape)}, expected {expected}; the "
                          f"card's tile size or classes do not fit the network")
    return ModelCheck(card, sum(p.numel() for p in loaded.network.parameters()),
                      round(time.perf_counter() - started, 3))
