"""Model packages: a folder that smp itself reads and writes, with geoseg's card beside it.

    PACKAGE/
      config.json        smp's constructor arguments (``_model_class``, ``encoder_name``, ``in_channels``,
                         ``classes``, ...): ``segmentation_models_pytorch.from_pretrained(PACKAGE)`` reads it
      model.safetensors  the weights under smp's tensor names (safetensors only: no pickle)
      geoseg.json        geoseg's card: bands by name, scaling, mean / std, resolution, tile size,
                         overlap, classes with names and colours
      README.md          what the package is, for a person

Folders of the older layout, whose ``config.json`` *is* geoseg's card, are still read
(:func:`folder_layout` tells them apart).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from geoseg.errors import ModelError, OutputError, reason
from geoseg.models.card import ModelCard, network_config

if TYPE_CHECKING:
    import torch

SMP_CONFIG = "config.json"
CARD_FILE = "geoseg.json"
WEIGHTS_FILE = "model.safetensors"

Layout = Literal["package", "card-only", "smp-only"]


def folder_layout(folder: Path) -> Layout:
    """``package`` (smp config + geoseg.json), ``card-only`` (the older layout: config.json is geoseg's card)
    or ``smp-only`` (a folder smp wrote, without geoseg's card: ``geoseg models import`` adds one)."""
    if (folder / CARD_FILE).is_file():
        return "package"
    config = folder / SMP_CONFIG
    if not config.is_file():
        raise ModelError(f"{folder}: model folder has no {CARD_FILE} or {SMP_CONFIG}; a model package holds "
                         f"{SMP_CONFIG} (smp's), {CARD_FILE} (geoseg's card) and {WEIGHTS_FILE}")
    return "smp-only" if "_model_class" in _read_json(config) else "card-only"


def read_card(folder: Path) -> ModelCard:
    """The card of a model folder of either layout, without loading weights."""
    layout = folder_layout(folder)
    if layout == "card-only":
        return ModelCard.load(folder / SMP_CONFIG)
    if layout == "smp-only":
        raise ModelError(f"{folder}: an smp model folder without geoseg's card ({CARD_FILE}); make it a geoseg "
                         f"package with `geoseg models import {folder} -o PACKAGE --bands ... --classes ...`")
    smp_config = _read_json(folder / SMP_CONFIG)
    data = _read_json(folder / CARD_FILE)
    data.setdefault("architecture", smp_config["_model_class"])
    data.setdefault("encoder", smp_config.get("encoder_name", ""))
    data["network"] = smp_config
    card = ModelCard.from_dict(data)
    if card.architecture != smp_config["_model_class"]:
        raise ModelError(f"{folder}: {CARD_FILE} says {card.architecture} but {SMP_CONFIG} builds "
                         f"{smp_config['_model_class']}; remove 'architecture' from {CARD_FILE}")
    return card


def card_document(card: ModelCard) -> dict[str, Any]:
    """``geoseg.json``'s content: the card without the network (that is smp's ``config.json``)."""
    data = card.to_dict()
    for key in ("network", "decoder_channels"):
        data.pop(key, None)
    return data


def save_package(folder: Path, card: ModelCard, tensors: dict[str, torch.Tensor], overwrite: bool = False,
                 readme: str = "") -> ModelCard:
    """Write a package atomically (a temporary folder renamed at the end); return its card.

    The weights must fit the card's network exactly (checked by loading them into it first).
    """
    from geoseg.models.architectures import build_network
    from geoseg.models.cache import save_weights
    from geoseg.models.weights import load_state

    config = network_config(card)
    # Weights come from this package: without this smp.from_pretrained would download ImageNet encoder weights.
    config["encoder_weights"] = None
    card = ModelCard.from_dict({**card.to_dict(), "network": config, "architecture": config["_model_class"],
                                "encoder": config.get("encoder_name", card.encoder)})
    network = build_network(card)
    load_state(network, tensors, frozenset(), card.name)
    if folder.exists() and not overwrite:
        raise OutputError(f"{folder}: already exists; pass --overwrite or choose another -o")
    if not folder.parent.is_dir():
        raise OutputError(f"{folder.parent}: folder does not exist; create it first")
    staging = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        (staging / SMP_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))
        state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
        save_weights(staging / WEIGHTS_FILE, state, metadata={"format": "pt"})  # written by Python: the umask's mode
        (staging / CARD_FILE).write_text(json.dumps(card_document(card), indent=2))
        (staging / "README.md").write_text(readme or describe(card))
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"{folder}: the package cannot be written ({exc.strerror or reason(exc)}); free space "
                          f"or choose another -o") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return card


def describe(card: ModelCard) -> str:
    """A short Markdown description of a package (its README.md)."""
    network = network_config(card)
    lines = [
        f"# {card.name}", "",
        card.description or "A geoseg model package.", "",
        f"- network: segmentation-models-pytorch `{network['_model_class']}`, encoder `{network.get('encoder_name')}`",
        f"- inputs: {', '.join(card.bands)} (integer pixels x {card.scaling.integer_scale:g}"
        f"{f' {card.scaling.integer_offset:+g}' if card.scaling.integer_offset else ''}, float pixels x "
        f"{card.scaling.float_scale:g}; then normalised by the mean and std)",
        f"- classes (mask value, name): {', '.join(f'{c.value} {c.name}' for c in card.classes)}"
        + (f"; the training labels held them as {', '.join(map(str, card.label_values))}: masks hold 0..N-1"
           if card.label_values else ""),
        f"- tile {card.tile_size} px, overlap {card.overlap} px"
        + (f", trained at {card.resolution_m:g} m" if card.resolution_m else ""),
        "", "Load it with geoseg (`geoseg run --model THIS_FOLDER`) or with smp alone:", "",
        "```python", "import segmentation_models_pytorch as smp", "model = smp.from_pretrained('THIS_FOLDER')", "```",
    ]
    if card.provenance:
        lines[3:3] = [f"Provenance: {card.provenance}", ""]
    return "\n".join(lines) + "\n"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: cannot read it as JSON ({exc}); re-export the model") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: is not a JSON object; re-export the model")
    return data
