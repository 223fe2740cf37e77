"""Finding a model by name: the built-in ones, or a folder with ``config.json`` + ``model.safetensors``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from geoseg.config import AUTO
from geoseg.errors import ModelError
from geoseg.models.architectures import build_network
from geoseg.models.cache import load_weights
from geoseg.models.card import ModelCard
from geoseg.models.csmask import CSMASK_VARIANTS, UNUSED_KEYS, csmask_card, csmask_weights

#: Built-in name -> (card factory, weights factory).
BUILTIN_MODELS: dict[str, tuple[Callable[[str], ModelCard], Callable[[str], dict[str, torch.Tensor]]]] = {
    name: (csmask_card, csmask_weights) for name in CSMASK_VARIANTS
}

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
#: Pickled PyTorch checkpoints: loading one can run arbitrary code, so it needs ``trust_checkpoint``.
PICKLE_FILES = ("model.pt", "model.pth", "model.ckpt", "model.bin")


@dataclass
class LoadedModel:
    """A model card with its network, weights loaded, in eval mode on the CPU.

    ``identity`` names exactly these weights (for resume records): the built-in name and version, or
    the weight file's path, size and modification time.
    """

    card: ModelCard
    network: torch.nn.Module
    identity: str = ""


def builtin_cards() -> list[ModelCard]:
    return [factory(name) for name, (factory, _) in BUILTIN_MODELS.items()]


def get_card(name: str) -> ModelCard:
    """The card of a built-in model or of a model folder, without loading weights."""
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name][0](name)
    folder = Path(name)
    if folder.is_dir():
        config = folder / CONFIG_FILE
        if not config.is_file():
            raise ModelError(f"{folder}: model folder has no {CONFIG_FILE}; a model folder holds "
                             f"{CONFIG_FILE} (the model card) and {WEIGHTS_FILE}")
        return ModelCard.load(config)
    raise ModelError(f"unknown model {name!r}; choose one of {AUTO}, {', '.join(BUILTIN_MODELS)} "
                     f"or give a model folder ({CONFIG_FILE} + {WEIGHTS_FILE}); `geoseg models` lists them")


def load_model(name: str, trust_checkpoint: bool = False) -> LoadedModel:
    """Build the network of ``name`` and load its weights, checking that every weight fits.

    A folder may hold a pickled checkpoint (``model.pt`` ...) instead of safetensors only with
    ``trust_checkpoint``: unpickling can run any code the file's author put in it.
    """
    card = get_card(name)
    if name in BUILTIN_MODELS:
        tensors = BUILTIN_MODELS[name][1](name)
        allowed_missing = UNUSED_KEYS
    else:
        tensors = _read_weights(_weights_file(Path(name), trust_checkpoint))
        allowed_missing = frozenset()
    network = build_network(card)
    load_state(network, tensors, allowed_missing, name)
    return LoadedModel(card=card, network=network.eval(), identity=model_identity(name, trust_checkpoint))


def model_identity(name: str, trust_checkpoint: bool = False) -> str:
    """Names exactly the weights ``load_model(name)`` loads, without loading them (for resume records)."""
    if name in BUILTIN_MODELS:
        return f"{name}@{get_card(name).description}"
    path = _weights_file(Path(name), trust_checkpoint)
    stat, config = path.stat(), Path(name) / CONFIG_FILE
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{config.read_text()}"


def _weights_file(folder: Path, trust_checkpoint: bool) -> Path:
    path = folder / WEIGHTS_FILE
    if path.is_file():
        return path
    pickled = [folder / p for p in PICKLE_FILES if (folder / p).is_file()]
    if pickled and not trust_checkpoint:
        raise ModelError(f"{pickled[0]}: is a pickled checkpoint, which can run code when loaded; convert it to "
                         f"{WEIGHTS_FILE} (safetensors) or pass --trust-checkpoint if you trust its source")
    if pickled:
        return pickled[0]
    raise ModelError(f"{path}: missing; a model folder needs its weights as {WEIGHTS_FILE}")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_weights(path)
        state = torch.load(path, map_location="cpu", weights_only=False)  # trusted by the user
        state = state.get("state_dict", state) if isinstance(state, dict) else state.state_dict()
        return {k.removeprefix("model."): v for k, v in state.items()}
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelError(f"{path}: weights cannot be read ({first}); the file is damaged or not "
                         f"{'safetensors' if path.suffix == '.safetensors' else 'a PyTorch checkpoint'}: "
                         f"re-export it") from None


def load_state(network: torch.nn.Module, tensors: dict[str, torch.Tensor], allowed_missing: frozenset[str],
               source: str) -> None:
    """Load ``tensors`` into ``network``; raise unless only ``allowed_missing`` keys stay unset."""
    try:
        result = network.load_state_dict(tensors, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise ModelError(f"model {source!r}: weights do not fit the architecture ({first})") from None
    missing = set(result.missing_keys) - allowed_missing - {k for k in result.missing_keys
                                                             if k.endswith("num_batches_tracked")}
    if missing or result.unexpected_keys:
        raise ModelError(
            f"model {source!r}: weights do not fit the architecture ({len(missing)} missing, e.g. "
            f"{sorted(missing)[:2]}; {len(result.unexpected_keys)} unexpected, e.g. {result.unexpected_keys[:2]})"
        )
