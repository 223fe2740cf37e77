"""Models as single ONNX files: exported with their card (and QGIS Deepness's metadata), and run from one.

``geoseg models export PKG -o model.onnx`` writes the network for ``C x T x T`` patches (a dynamic batch axis)
with its geoseg card in the file's metadata (``geoseg:card``, ``geoseg:output``). ``--format deepness`` also
ends the graph in a softmax and writes the keys QGIS's Deepness plugin reads (``model_type``, ``class_names``,
``resolution`` in cm/px, ``tiles_size`` / ``tile_size``, ``tiles_overlap`` in %, ``standardization_mean`` /
``_std``; each value JSON-encoded, as Deepness decodes them). Deepness divides the raw pixels by 255 and then
standardises; geoseg scales and normalises with the card, so the exported standardisation is the card's
rewritten for raw / 255: ``mean' = (mean - offset) / (255 scale)``, ``std' = std / (255 scale)``.

``geoseg run --model model.onnx`` reads a file with either kind of metadata (:func:`onnx_card`): geoseg's card
where it is there, else a card made from Deepness's keys (3 inputs are red, green, blue; values / 255; its
classes, tile, overlap and resolution). Such a model runs on the CPU backends (ONNX Runtime, OpenVINO) with the
same tiling, blending and products as any other.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import ModelError, OutputError
from geoseg.models.card import ClassInfo, ModelCard, Scaling

if TYPE_CHECKING:
    import torch

#: The ONNX opset geoseg exports with.
OPSET = 17
#: Metadata keys of geoseg's own: the card (JSON) and what the graph's output is (``logits`` or ``probabilities``).
CARD_KEY, OUTPUT_KEY = "geoseg:card", "geoseg:output"
#: What the network's output is, by ``--format``: geoseg's runs take logits (their softmax is geoseg's), Deepness
#: expects probabilities.
FORMATS = {"onnx": "logits", "deepness": "probabilities"}
#: The inputs a Deepness file of three channels takes (its models read RGB orthophotos).
DEEPNESS_RGB = ("red", "green", "blue")


def export_network(network: torch.nn.Module, channels: int, patch: int, path: Path, *,
                   probabilities: bool = False, metadata: dict[str, str] | None = None) -> None:
    """Export ``network`` for ``channels x patch x patch`` patches (a dynamic batch axis) to ``path``, atomically:
    input ``x``, output ``logits`` (``probabilities``: a softmax over the classes ends the graph, output
    ``probabilities``), with ``metadata`` as the file's metadata properties."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    example = torch.zeros(1, channels, patch, patch)
    encoder = getattr(network, "encoder", None)
    if hasattr(encoder, "set_swish"):  # EfficientNet: plain x * sigmoid(x), which ONNX Runtime fuses
        encoder.set_swish(memory_efficient=False)
    graph = _with_softmax(network) if probabilities else network
    output = "probabilities" if probabilities else "logits"
    try:
        # The TorchScript exporter warns about what it cannot fold; those are notes for torch's
        # developers, not for a user of a finished export.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings(), _quiet_exporter():
            warnings.simplefilter("ignore")
            torch.onnx.export(graph.eval(), example, str(tmp), input_names=["x"], output_names=[output],
                              dynamic_axes={"x": {0: "n"}, output: {0: "n"}}, opset_version=OPSET, dynamo=False)
        if metadata:
            import onnx

            model = onnx.load(str(tmp))
            for key, value in metadata.items():
                prop = model.metadata_props.add()
                prop.key, prop.value = key, value
            onnx.save(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _with_softmax(network: torch.nn.Module) -> torch.nn.Module:
    import torch

    class Softmax(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module):
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.inner(x), dim=1)

    return Softmax(network)



def export_model(network: torch.nn.Module, card: ModelCard, path: Path, fmt: str = "onnx",
                 overwrite: bool = False) -> dict[str, Any]:
    """``geoseg models export``: ``card``'s ``network`` as ``path`` in ``fmt`` (see :data:`FORMATS`); what it wrote."""
    from geoseg.models.package import card_document

    if fmt not in FORMATS:
        raise ModelError(f"export format {fmt!r} is not one of {', '.join(FORMATS)}")
    if path.suffix.lower() != ".onnx":
        raise OutputError(f"{path}: an ONNX model's name ends in .onnx; name it e.g. {path.with_suffix('.onnx')}")
    if path.exists() and not overwrite:
        raise OutputError(f"{path}: exists; pass --overwrite to replace it")
    metadata = {CARD_KEY: json.dumps(card_document(card)), OUTPUT_KEY: FORMATS[fmt]}
    if fmt == "deepness":
        metadata.update(deepness_metadata(card))
    try:
        export_network(network, len(card.bands), card.tile_size, path, probabilities=FORMATS[fmt] == "probabilities",
                       metadata=metadata)
    except OSError as exc:
        raise OutputError(f"{path}: cannot be written ({exc.strerror or exc}); check free space and "
                          f"permissions") from None
    return {"path": str(path), "format": fmt, "output": FORMATS[fmt], "bands": list(card.bands),
            "classes": [c.name for c in card.classes], "tile_size": card.tile_size,
            "bytes": path.stat().st_size, "metadata": sorted(metadata)}


def deepness_metadata(card: ModelCard) -> dict[str, str]:
    """The keys QGIS Deepness reads, each JSON-encoded (see module docstring for the standardisation)."""
    scale, offset = card.scaling.integer_scale, card.scaling.integer_offset
    meta: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(i): c.name for i, c in enumerate(card.classes)},
        "tiles_size": card.tile_size, "tile_size": card.tile_size,
        "tiles_overlap": round(100 * card.overlap / card.tile_size),
        "standardization_mean": [(m - offset) / (255 * scale) for m in card.mean],
        "standardization_std": [s / (255 * scale) for s in card.std],
    }
    if card.resolution_m:
        meta["resolution"] = card.resolution_m * 100
    return {key: json.dumps(value) for key, value in meta.items()}


def is_onnx_model(name: str) -> bool:
    """Whether the model ``name`` is an ONNX file (``--model model.onnx``)."""
    return name.lower().endswith(".onnx")


def read_metadata(path: Path) -> tuple[dict[str, str], tuple[Any, ...]]:
    """The file's metadata properties and its input's shape (dimensions as ints or names); read once per version
    of the file in a process (a run asks for the card several times, and parsing a large model takes a while)."""
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist; check the path")
    stat = path.stat()
    return _read_metadata(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_metadata(name: str, size: int, mtime_ns: int) -> tuple[dict[str, str], tuple[Any, ...]]:
    import onnx

    path = Path(name)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # a truncated or foreign file: protobuf's own errors
        raise ModelError(f"{path}: is not an ONNX model onnx can read ({type(exc).__name__}); export it again") \
            from None
    inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    if len(inputs) != 1:
        raise ModelError(f"{path}: has {len(inputs)} inputs; geoseg runs segmentation models of one NCHW input")
    dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in inputs[0].type.tensor_type.shape.dim)
    return {p.key: p.value for p in model.metadata_props}, dims


def onnx_output(path: Path) -> str:
    """What the file's graph puts out: ``logits`` (geoseg's own export) or ``probabilities`` (Deepness's)."""
    meta, _ = read_metadata(path)
    return meta.get(OUTPUT_KEY, "probabilities")


def onnx_card(path: Path) -> ModelCard:
    """The card of an ONNX model file: geoseg's where the file holds one, else one from Deepness's keys."""
    meta, dims = read_metadata(path)
    if len(dims) != 4:
        raise ModelError(f"{path}: its input has {len(dims)} dimensions; geoseg runs models of one NCHW input")
    channels = dims[1]
    if not isinstance(channels, int) or channels < 1:
        raise ModelError(f"{path}: its input's channel count is not fixed ({channels}); export it with fixed channels")
    if CARD_KEY in meta:
        try:
            card = ModelCard.from_dict({**json.loads(meta[CARD_KEY]), "name": path.stem})
        except (ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"{path}: its geoseg card is not valid ({exc}); export it again") from None
    else:
        card = _deepness_card(path, meta, dims)
    if len(card.bands) != channels:
        raise ModelError(f"{path}: its card names {len(card.bands)} bands but the network takes {channels}")
    sizes = [d for d in dims[2:] if isinstance(d, int)]
    if sizes and (len(set(sizes)) != 1 or sizes[0] != card.tile_size):
        raise ModelError(f"{path}: its input is {dims[2]} x {dims[3]} but its card's tile size is {card.tile_size}")
    return card


def _deepness_card(path: Path, meta: dict[str, str], dims: tuple[Any, ...]) -> ModelCard:
    from geoseg.models.card import class_colour

    def value(key: str) -> Any:
        try:
            return json.loads(meta[key]) if key in meta else None
        except ValueError:
            raise ModelError(f"{path}: its metadata {key!r} is not JSON ({meta[key][:60]!r})") from None

    kind = value("model_type")
    if kind is not None and str(kind).lower() not in ("segmentor", "segmenter", "segmentation"):
        raise ModelError(f"{path}: is a Deepness {kind!r} model; geoseg runs segmentation models (Segmentor)")
    channels = dims[1]
    names = value("class_names")
    if not isinstance(names, dict) or not names:
        raise ModelError(f"{path}: has neither a geoseg card nor Deepness class_names in its metadata; export it "
                         f"with `geoseg models export --format deepness` or add class_names")
    classes = tuple(ClassInfo(i, str(name), class_colour(str(name), i))
                    for i, (_, name) in enumerate(sorted(names.items(), key=lambda kv: int(kv[0]))))
    tile = dims[3] if isinstance(dims[3], int) else int(value("tile_size") or value("tiles_size") or 512)
    overlap_percent = value("tiles_overlap")
    overlap = round(tile * float(overlap_percent) / 100) if overlap_percent is not None else tile // 8
    mean = value("standardization_mean") or [0.0] * channels
    std = value("standardization_std") or [1.0] * channels
    resolution = value("resolution")
    bands = DEEPNESS_RGB if channels == 3 else tuple(f"b{i + 1}" for i in range(channels))
    return ModelCard(
        name=path.stem, architecture="onnx", encoder="onnx", bands=bands,
        mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std), classes=classes,
        scaling=Scaling(integer_scale=1 / 255, float_scale=1 / 255), tile_size=tile, overlap=overlap,
        resolution_m=float(resolution) / 100 if resolution else None,
        description=f"ONNX model with Deepness metadata ({path.name})",
        provenance="Deepness metadata: pixel values / 255, then its standardization")


@contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The TorchScript exporter with its log off. Its ``setup_onnx_logging`` tests a function for truth
    instead of calling it, so it turns on ONNX logging for every export, and an export that fails prints
    the whole graph (hundreds of lines) on standard output before the error is raised."""
    import importlib

    modules = []
    for name in ("torch.onnx._internal.torchscript_exporter.utils", "torch.onnx.utils"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "setup_onnx_logging"):
            modules.append((module, module.setup_onnx_logging))
            module.setup_onnx_logging = _no_onnx_log  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for module, original in modules:
            module.setup_onnx_logging = original  # type: ignore[attr-defined]


@contextmanager
def _no_onnx_log(verbose: bool = False) -> Iterator[None]:
    import torch

    torch._C._jit_set_onnx_log_enabled(False)
    yield
