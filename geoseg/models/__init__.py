"""Models: cards that describe them, the built-in pretrained ones, and loading by name."""

from geoseg.models.architectures import ARCHITECTURES, build_network
from geoseg.models.card import ClassInfo, ModelCard, Scaling
from geoseg.models.registry import BUILTIN_MODELS, LoadedModel, builtin_cards, get_card, load_model

__all__ = [
    "ARCHITECTURES",
    "BUILTIN_MODELS",
    "ClassInfo",
    "LoadedModel",
    "ModelCard",
    "Scaling",
    "build_network",
    "builtin_cards",
    "get_card",
    "load_model",
]
