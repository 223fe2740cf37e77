"""The settings of a run, declared once.

:class:`RunConfig` holds every setting with its default. Each field's :class:`Setting` metadata says
how the command line shows it and whether it changes the mask. Everything else derives from here:

* the options of ``geoseg run`` and ``geoseg batch`` (:func:`geoseg.cli.options.with_run_settings`);
* the keys and value types of YAML job files (:mod:`geoseg.batch.jobs`);
* the settings kept in every mask's resume record (:data:`RESULT_SETTINGS`, :mod:`geoseg.io.record`).

A new setting is one field here; the CLI, job files and records pick it up. A RunConfig checks itself
when it is made (:meth:`RunConfig.__post_init__`: types, bounds, value lists), so the command line, job files,
``segment_array`` and the Python API refuse a bad value with the same one line, and no layer below checks
it again.
"""

from __future__ import annotations

import math
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from geoseg.errors import ConfigError
from geoseg.sensors import SENSORS

#: The model name that picks a built-in model to fit each scene.
AUTO = "auto"
#: The largest patch edge (``--tile-size``, a card's ``tile_size``): a batch of one 4096² patch of 13 bands is
#: 0.9 GB before the network's own memory; a larger one (``tile_size: 1e9`` in a card) would only fail allocating.
MAX_TILE_SIZE = 4096
#: A model card's patch edge and overlap where a source does not say (the built-in models', an import's, a training's).
DEFAULT_TILE_SIZE, DEFAULT_OVERLAP = 512, 64
#: Patch edges are multiples of this: a U-Net halves its input 5 times.
TILE_MULTIPLE = 32
#: Precisions a run may ask for; ``auto`` is resolved per device (:func:`geoseg.engine.device.resolve_precision`).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: The names of the strategies that live in higher layers, declared once here; each registry there is keyed by
#: exactly these (tests/test_config.py checks it): blend windows (:data:`geoseg.engine.windows.BLEND_WINDOWS`),
#: output formats (:data:`geoseg.io.writing.RASTER_FORMATS`), tile decoders and inference backends.
BLEND_WINDOW_NAMES = ("cosine", "gaussian", "none")
OUTPUT_FORMATS = ("cog", "gtiff")
DECODE_MODES = ("auto", "cpu", "gpu", "hybrid")
BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
TTA_MODES = ("none", "flips", "d4")
UNCERTAINTY_KINDS = ("margin", "entropy")
#: Upper bounds of counts: past these a run would only fail allocating (``batch_size: 1e9`` in a job file).
MAX_BLOCK_SIZE, MAX_BATCH_SIZE, MAX_WORKERS = 32768, 1024, 1024


def parse_bands(value: str | None) -> tuple[int | str, ...] | None:
    """``"4,3,2"`` or ``"red,green,blue"`` -> a tuple of 1-based indexes / names."""
    if value is None:
        return None
    parts = [p.strip() for p in str(value).split(",")]
    if not all(parts):
        raise ConfigError(f"bands {value!r} has an empty entry; list bands like 3,2,1,4 or red,green,blue,nir")
    return tuple(int(p) if p.isdigit() else p for p in parts)


@dataclass(frozen=True)
class Setting:
    """What the world outside :class:`RunConfig` needs to know about one of its fields."""

    help: str
    #: Changes the mask: kept in the resume record, so a rerun with another value redoes the scene.
    result: bool = False
    #: Option declarations when not plain ``--name`` (a boolean's ``--x/--no-x`` ...).
    flags: tuple[str, ...] = ()
    #: Shown as ``[default: ...]`` where the default is None or decided at run time.
    default_text: str | None = None
    #: Smallest and largest value a number may take.
    min: int | None = None
    max: int | None = None
    #: Allowed values (a registry's names are declared above, beside the other value lists).
    choices: tuple[str, ...] | None = None
    #: What a value is called in errors ("blend window 'box' is not one of ...").
    what: str | None = None
    #: Turns the text form (command line, job file string) into the field's value.
    parse: Callable[[str | None], Any] | None = None
    #: Further checks of a value; raises :class:`ConfigError`.
    check: Callable[[Any], None] | None = None


def setting(default: Any, help: str, **meta: Any) -> Any:
    return field(default=default, metadata={"setting": Setting(help=help, **meta)})


def is_finite_number(value: object) -> bool:
    """Whether ``value`` is an int or a float (not a bool, which Python counts as an int) and finite."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_tile_size(tile: int) -> None:
    """A patch edge geoseg runs: a positive multiple of :data:`TILE_MULTIPLE`, at most :data:`MAX_TILE_SIZE`
    (``--tile-size``, a job file's, or a model card's, checked where a run's grid is planned)."""
    if tile > MAX_TILE_SIZE:
        raise ConfigError(f"tile size {tile} is larger than {MAX_TILE_SIZE}, the largest patch geoseg runs; use e.g. "
                          f"512 (more patches, each blended with its neighbours, give the same kind of mask)")
    if tile <= 0 or tile % TILE_MULTIPLE:
        lower = max(TILE_MULTIPLE, tile // TILE_MULTIPLE * TILE_MULTIPLE)
        raise ConfigError(f"tile size {tile} is not a positive multiple of {TILE_MULTIPLE} (the U-Net halves it 5 "
                          f"times); use e.g. {lower} or {lower + TILE_MULTIPLE}")


def _check_device(value: str) -> None:
    spec = value.strip().lower()
    if spec not in ("auto", "cpu", "cuda") and not (spec.startswith("cuda:") and spec[5:].isdigit()):
        raise ConfigError(f"device {value!r} is not valid; use auto, cpu, cuda or cuda:N")


def _check_name(value: str) -> None:
    if not value.strip():
        raise ConfigError("model '' is empty; give auto, a built-in name (see `geoseg models`) or a model folder")


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run, with its default (the CLI shows these)."""

    model: str = setting(AUTO, "Built-in model name (see `geoseg models`), model folder, or auto.", check=_check_name)
    bands: tuple[int | str, ...] | None = setting(
        None, "Scene bands in the model's input order: 1-based indexes or names, comma-separated.",
        result=True, default_text="matched by band name", parse=parse_bands)
    sensor: str | None = setting(
        None, "The scene's sensor: names its bands in the sensor's order and scales them to reflectance "
        "(see `geoseg models sensors`).", result=True, choices=tuple(SENSORS), default_text="from band names")
    strict_inputs: bool = setting(
        False, "Stop, instead of warning, when what the network receives is outside what the model was trained "
        "on (values after scaling, resolution).", flags=("--strict-inputs/--no-strict-inputs",))
    tile_size: int | None = setting(None, "Patch edge in pixels, a multiple of 32.", result=True,
                                    default_text="model's", check=check_tile_size)
    overlap: int | None = setting(None, "Overlap between patches in pixels.", result=True, default_text="model's",
                                  min=0, max=MAX_TILE_SIZE - 1)
    blend: str = setting("cosine", "Blend window: cosine, gaussian or none.", result=True,
                         choices=BLEND_WINDOW_NAMES, what="blend window")
    batch_size: int | None = setting(
        None, "Patches per model call; halved automatically when the GPU runs out of memory.", min=1,
        max=MAX_BATCH_SIZE,
        default_text="from free GPU memory, up to 16; on the CPU 1 (ONNX Runtime, OpenVINO) or 4 (PyTorch)")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N.", check=_check_device)
    precision: str = setting(
        "auto", "auto (bf16 on CUDA and on CPUs with bf16 instructions, else fp32), fp32, bf16 or fp16.",
        result=True, choices=PRECISIONS)
    backend: str = setting(
        "auto", "Inference backend: auto (on the CPU at --precision auto: OpenVINO, in bf16 where the CPU has bf16 "
        "instructions, else in fp32; PyTorch otherwise), torch, onnxruntime (CPU, fp32) or openvino (CPU, "
        "fp32 or bf16); the CPU backends run the network exported once to ONNX and cached.", result=True,
        choices=BACKENDS)
    tta: str = setting(
        "none", "Test-time augmentation: average each patch's class probabilities over its mirrored copies: "
        "flips (4 copies: left-right, up-down, both) or d4 (8: flips and quarter turns); the network's time "
        "grows as many times.", result=True, choices=TTA_MODES, what="test-time augmentation")
    match_resolution: bool = setting(
        True, "Infer at the model's training resolution when the scene is clearly finer; the mask stays on "
        "the scene's grid.", result=True)
    scale: float | None = setting(None, "Multiply pixel values by this before normalising.", result=True,
                                  default_text="model's, e.g. 0.0001 for uint16 reflectance")
    decode: str = setting(
        "auto", "Who decodes the scene's compressed tiles: cpu (GDAL's reader threads), gpu (nvCOMP on the CUDA "
        "device; tiled deflate / zstd GeoTIFFs, pip install 'geoseg[gpu-decode]'), hybrid (both, sharing each "
        "strip) or auto (gpu where it can be used and the network sees a coarser grid than the scene's, else cpu). "
        "The pixels, and the mask, are the same.",
        choices=DECODE_MODES)
    block_size: int = setting(2048, "Scene pixels per processing block edge.", min=1, max=MAX_BLOCK_SIZE)
    workers: int | None = setting(None, "Reader threads.", min=1, max=MAX_WORKERS, default_text="CPU cores minus one")
    trust_checkpoint: bool = setting(
        False, "Allow a model folder's pickled checkpoint (model.pt, .pth, .ckpt): loading one can run code, so "
        "only for files you trust.")
    compile: bool = setting(False, "torch.compile the network: faster model calls after a one-off compile; pays "
                            "on long runs and batches.", flags=("--compile/--no-compile",))
    cuda_graphs: bool | None = setting(
        None, "Replay the model from a CUDA graph: one launch per batch instead of hundreds.",
        flags=("--cuda-graphs/--no-cuda-graphs",), default_text="on a GPU")
    reproducible: bool = setting(
        False, "On a GPU, the same bits in every process (reruns, cluster workers): cuDNN picks convolution "
        "algorithms by its fixed heuristics instead of timing them, and the automatic batch size is 16.",
        flags=("--reproducible/--no-reproducible",))
    output_format: str = setting("cog", "Mask file format: cog (Cloud-Optimized GeoTIFF with overviews) or gtiff "
                                 "(tiled GeoTIFF, no overviews).", result=True, flags=("--format",),
                                 choices=OUTPUT_FORMATS, what="output format")
    probabilities: str | None = setting(
        None, "Also write probabilities beside the mask (NAME.probs.tif, uint8 = p x 250): top (the chosen class's) "
        "or all (one band per class).", result=True, choices=("top", "all"), default_text="none")
    uncertainty: str | None = setting(
        None, "Also write how unsure the model is beside the mask (NAME.uncertainty.tif, uint8 = u x 250, 0 sure, "
        "250 unsure): margin (1 minus the gap between the two likeliest classes) or entropy (of the class "
        "probabilities, over its largest value).", result=True, choices=UNCERTAINTY_KINDS, default_text="none")
    #: Not a shared setting: ``geoseg run`` takes it as a flag, ``geoseg batch`` decides per scene.
    overwrite: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            meta = f.metadata.get("setting")
            if meta is not None:
                check_setting(f.name, meta, getattr(self, f.name), f.default)

    def to_json(self) -> dict[str, Any]:
        """The settings as JSON values (what ``geoseg run`` sends the service's door); the Python API's own
        blend function has no JSON form."""
        if callable(self.blend):
            raise ConfigError("a blend function has no JSON form; give a blend window's name")
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RunConfig:
        """The inverse of :meth:`to_json`; every value is checked as the command line's are."""
        return cls(**{k: tuple(v) if isinstance(v, list) and value_type(k) is tuple else v for k, v in data.items()})


def check_setting(name: str, meta: Setting, value: Any, default: Any) -> None:
    """Raise :class:`ConfigError` naming ``value`` and what is allowed, unless it suits setting ``name``."""
    what = meta.what or name.replace("_", " ")
    if value is None:
        if default is None:
            return
        raise ConfigError(f"{what} must be given (default {default!r})")
    if name == "blend" and callable(value):  # the Python API's own window function
        return
    kind = value_type(name)
    if kind is float:
        ok = is_finite_number(value)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        shown = {float: "a finite number", int: "a whole number", bool: "true or false", str: "text",
                 tuple: "a list"}.get(kind, kind.__name__)
        raise ConfigError(f"{what} {value!r} must be {shown}")
    if meta.choices is not None and value not in meta.choices:
        raise ConfigError(f"{what} {value!r} is not one of {', '.join(meta.choices)}")
    if (meta.min is not None and value < meta.min) or (meta.max is not None and value > meta.max):
        bounds = f"{meta.min}..{meta.max}" if meta.max is not None else f"at least {meta.min}"
        raise ConfigError(f"{what} {value} must be {bounds}" if meta.max is None else
                          f"{what} {value} must lie in {bounds}")
    if meta.check is not None:
        meta.check(value)


def _settings() -> dict[str, Setting]:
    return {f.name: f.metadata["setting"] for f in fields(RunConfig) if "setting" in f.metadata}


#: Every setting a command line or a job file gives a run, by field name, in declaration order.
SETTINGS: dict[str, Setting] = _settings()
#: The settings that change the mask, kept in the resume record.
RESULT_SETTINGS: tuple[str, ...] = tuple(name for name, s in SETTINGS.items() if s.result)


def value_type(name: str) -> type:
    """The plain type of setting ``name``'s values: ``int`` for ``int | None``, ``tuple`` for ``tuple[...]``."""
    hint = typing.get_type_hints(RunConfig)[name]
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_origin(hint) or hint
