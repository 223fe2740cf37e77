"""Finding a model by name: the built-in ones, or a model package folder (:mod:`geoseg.models.package`)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from geoseg.config import AUTO
from geoseg.errors import ModelError
from geoseg.models.builtin import CSMASK_VARIANTS, UNUSED_KEYS, csmask_card, csmask_source, csmask_weights
from geoseg.models.cache import pulled_package
from geoseg.models.card import ModelCard
from geoseg.models.onnxfile import is_onnx_model, onnx_card
from geoseg.models.package import CARD_FILE, SMP_CONFIG, WEIGHTS_FILE, read_card

if TYPE_CHECKING:
    import torch

#: Built-in name -> (card factory, weights factory).
BUILTIN_MODELS: dict[str, tuple[Callable[[str], ModelCard], Callable[[str], dict[str, torch.Tensor]]]] = {
    name: (csmask_card, csmask_weights) for name in CSMASK_VARIANTS
}

#: Pickled PyTorch checkpoints: loading one can run arbitrary code, so it needs ``trust_checkpoint``.
PICKLE_FILES = ("model.pt", "model.pth", "model.ckpt", "model.bin")


class LoadedModel:
    """A model card with its network, weights loaded, in eval mode on the CPU.

    ``identity`` names exactly these weights (for resume records): the built-in name and version, or
    the weight file's path, size and modification time. A model loaded with ``deferred=True`` builds
    its network (importing segmentation-models-pytorch, timm and torchvision: 2 to 5 s) on first use
    of :attr:`network`; a CPU run whose ONNX export is cached never uses it.
    """

    def __init__(self, card: ModelCard, network: torch.nn.Module | None = None, identity: str = "", *,
                 build: Callable[[], torch.nn.Module] | None = None, weights_key: str | None = None,
                 onnx: Path | None = None):
        if network is None and build is None:
            raise ValueError("a LoadedModel needs its network or a way to build it")
        self.card, self.identity = card, identity
        #: An ONNX model file (:mod:`geoseg.models.onnxfile`): the CPU backends run it; there is no torch network.
        self.onnx = onnx
        self._network, self._build = network, build
        self._building = threading.Lock()  # a batch's scene threads share one model
        #: Names these weights for caches of what is derived from them (the ONNX export); None: not stable
        #: across processes (a network made in memory).
        self.weights_key = weights_key if weights_key is not None else (identity or None)

    @property
    def network(self) -> torch.nn.Module:
        if self._network is None:
            with self._building:
                if self._network is None:
                    assert self._build is not None
                    self._network = self._build()
        return self._network

    @property
    def built(self) -> bool:
        """Whether the network exists yet (a deferred model builds it on first use)."""
        return self._network is not None


def builtin_cards() -> list[ModelCard]:
    return [factory(name) for name, (factory, _) in BUILTIN_MODELS.items()]


def resolve_name(name: str) -> str:
    """``name``, or the folder of the package ``geoseg models pull`` made under it (a local folder of that name
    wins)."""
    if name in BUILTIN_MODELS or Path(name).exists():
        return name
    pulled = pulled_package(name)
    return str(pulled) if pulled is not None else name


def get_card(name: str) -> ModelCard:
    """The card of a built-in model or of a model folder, without loading weights."""
    name = resolve_name(name)
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name][0](name)
    if is_onnx_model(name):
        return onnx_card(Path(name))
    folder = Path(name)
    if folder.is_dir():
        return read_card(folder)
    if "/" in name or "\\" in name or name.startswith((".", "~")):  # meant as a folder
        raise ModelError(f"model folder {name!r} does not exist (relative paths start at {Path.cwd()}); check the "
                         f"path, or give a built-in model: `geoseg models` lists them")
    raise ModelError(f"unknown model {name!r}; choose one of {AUTO}, {', '.join(BUILTIN_MODELS)}, a package "
                     f"`geoseg models pull` made, or a model package folder; `geoseg models` lists them")


def load_model(name: str, trust_checkpoint: bool = False, *, deferred: bool = False) -> LoadedModel:
    """Build the network of ``name`` and load its weights, checking that every weight fits.

    A folder may hold a pickled checkpoint (``model.pt`` ...) instead of safetensors only with
    ``trust_checkpoint``: unpickling can run any code the file's author put in it. ``deferred`` checks
    the card and that the weights are there now, and builds the network on first use (then, a weight
    that does not fit raises there).
    """
    name = resolve_name(name)
    card = get_card(name)
    identity = model_identity(name, trust_checkpoint)  # also: the weights file is there and may be read
    if is_onnx_model(name):
        def no_network() -> torch.nn.Module:
            raise ModelError(f"{name}: is an ONNX model, which runs on the CPU backends only (--device cpu, "
                             f"--backend auto, onnxruntime or openvino); for PyTorch or a GPU, import its weights "
                             f"as a package")

        return LoadedModel(card, identity=identity, build=no_network, weights_key=None, onnx=Path(name))

    def build() -> torch.nn.Module:
        from geoseg.models.architectures import build_network
        from geoseg.models.weights import load_state, read_tensors

        if name in BUILTIN_MODELS:
            tensors = BUILTIN_MODELS[name][1](name)
            allowed_missing = UNUSED_KEYS
        else:
            tensors = read_tensors(weights_file(Path(name), trust_checkpoint), trust_checkpoint)
            allowed_missing = frozenset()
        network = build_network(card)
        load_state(network, tensors, allowed_missing, name)
        return network.eval()

    key = f"{identity}|{csmask_source(name)}" if name in BUILTIN_MODELS else identity
    if deferred:
        return LoadedModel(card, identity=identity, build=build, weights_key=key)
    return LoadedModel(card, build(), identity, weights_key=key)


def model_identity(name: str, trust_checkpoint: bool = False) -> str:
    """Names exactly the weights ``load_model(name)`` loads, without loading them (for resume records)."""
    name = resolve_name(name)
    if name in BUILTIN_MODELS:
        return f"{name}@{get_card(name).description}"
    if is_onnx_model(name):
        stat = Path(name).stat()
        return f"{Path(name).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    folder = Path(name)
    path = weights_file(folder, trust_checkpoint)
    stat = path.stat()
    cards = "".join((folder / f).read_text() for f in (SMP_CONFIG, CARD_FILE) if (folder / f).is_file())
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}:{cards}"


def weights_file(folder: Path, trust_checkpoint: bool) -> Path:
    path = folder / WEIGHTS_FILE
    if path.is_file():
        return path
    pickled = [folder / p for p in PICKLE_FILES if (folder / p).is_file()]
    if pickled and not trust_checkpoint:
        raise ModelError(f"{pickled[0]}: is a pickled checkpoint, which can run code when loaded; convert it to "
                         f"{WEIGHTS_FILE} with `geoseg models import` or pass --trust-checkpoint if you trust its "
                         f"source")
    if pickled:
        return pickled[0]
    raise ModelError(f"{path}: missing; a model folder needs its weights as {WEIGHTS_FILE}")
