"""Models: cards that describe them, the built-in pretrained ones, packages, and loading by name.

Names are imported on first use: reading a card needs neither torch nor smp.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geoseg.models.architectures import ARCHITECTURES, build_network
    from geoseg.models.card import ClassInfo, ModelCard, Scaling
    from geoseg.models.check import ModelCheck, check_model
    from geoseg.models.registry import BUILTIN_MODELS, LoadedModel, builtin_cards, get_card, load_model

_LAZY = {
    "ARCHITECTURES": "geoseg.models.architectures", "build_network": "geoseg.models.architectures",
    "ClassInfo": "geoseg.models.card", "ModelCard": "geoseg.models.card", "Scaling": "geoseg.models.card",
    "BUILTIN_MODELS": "geoseg.models.registry", "LoadedModel": "geoseg.models.registry",
    "builtin_cards": "geoseg.models.registry", "get_card": "geoseg.models.registry",
    "load_model": "geoseg.models.registry", "check_model": "geoseg.models.check", "ModelCheck": "geoseg.models.check",
}

__all__ = ["ARCHITECTURES", "BUILTIN_MODELS", "ClassInfo", "LoadedModel", "ModelCard", "ModelCheck", "Scaling",
           "build_network", "builtin_cards", "check_model", "get_card", "load_model"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geoseg.models' has no attribute {name!r}")
