"""``segment_scene``: the one library call behind ``geoseg run``, file in, mask file out."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import rasterio
import torch

from geoseg import __version__
from geoseg.bands import match_bands
from geoseg.engine import ProgressFn, default_workers, plan_layout, run_engine
from geoseg.errors import DeviceError, GeosegError, OutputError
from geoseg.inference import Predictor, resolve_device, run_in_flight
from geoseg.models import AUTO, LoadedModel, load_model, pick_builtin
from geoseg.models.registry import get_card
from geoseg.record import RECORD_TAG, encode, make_record
from geoseg.resample import resolution_factor
from geoseg.scene import SceneInfo, WindowReader, open_scene
from geoseg.stitch import Stitcher
from geoseg.writing import NODATA, MaskWriter, check_free_space, check_output, default_output

#: Scenes with at least this many patches let cuDNN time its algorithms first (about 3.5 s for the
#: built-in EfficientNet-B4 on an H200, paid once per process; benchmarks/RESULTS.md).
TUNE_MIN_PATCHES = 1024

#: Loads a model by name (and whether pickled checkpoints are trusted).
ModelLoader = Callable[[str, bool], LoadedModel]


@dataclass(frozen=True)
class RunConfig:
    """Every setting of a run, with its default defined here once (the CLI shows these)."""

    model: str = AUTO
    bands: tuple[int | str, ...] | None = None  # scene bands in the model's input order
    tile_size: int | None = None  # None: the model card's
    overlap: int | None = None  # None: the model card's
    blend: str = "cosine"
    batch_size: int | None = None  # None: from the GPU's free memory (up to 16), 4 on the CPU
    device: str = "auto"
    precision: str = "auto"  # auto: bf16 on CUDA and on CPUs with bf16 instructions, else fp32 (fp16 on old GPUs)
    match_resolution: bool = True  # infer at the model's training resolution when the scene is finer
    scale: float | None = None  # None: the model card's input scaling
    block_size: int = 2048  # scene pixels per block edge (rounded to whole output tiles)
    workers: int | None = None  # reader threads; None: one per CPU core but one
    overwrite: bool = False
    trust_checkpoint: bool = False  # allow pickled checkpoints (model.pt ...) in model folders
    compile: bool = False  # torch.compile the network (pays back on long runs; see benchmarks/RESULTS.md)
    cuda_graphs: bool | None = None  # replay the forward pass from a CUDA graph; None: on a GPU


#: The settings a command line or a job file gives a run: every RunConfig field but ``overwrite``,
#: which ``geoseg run`` takes as a flag and ``geoseg batch`` decides per scene.
SETTINGS: tuple[str, ...] = tuple(f.name for f in fields(RunConfig) if f.name != "overwrite")


@dataclass(frozen=True)
class RunSummary:
    """What a run did, for the end-of-run screen and ``--json``."""

    input: str
    output: str
    model: str
    device: str
    precision: str
    batch_size: int  # patches per model call, as chosen (auto) and after any out-of-memory back-off
    width: int
    height: int
    bands: tuple[int, ...]
    band_match: str
    factor: int
    tile_size: int
    overlap: int
    blend: str
    seconds: float
    megapixels_per_second: float
    class_shares: dict[str, float]
    nodata_share: float
    peak_device_memory_gib: float | None = None  # CUDA only: the most the run held on the GPU
    model_seconds: float = 0.0  # of ``seconds``, the time spent in the network (device time on CUDA)
    patches: int = 0  # patches the network saw (a padded last batch included)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # where the device thread's time went
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def segment_scene(scene_path: str | Path, output: str | Path | None = None,
                  config: RunConfig = RunConfig(), model: LoadedModel | None = None,
                  progress: ProgressFn | None = None, loader: ModelLoader | None = None,
                  cancel: threading.Event | None = None) -> RunSummary:
    """Segment one scene into a georeferenced mask file and return a summary.

    ``model`` overrides ``config.model`` with a network already in memory (tests, notebooks);
    ``loader`` loads models by name (``geoseg batch`` shares one cache across scenes); setting
    ``cancel`` stops the run at the next block with :class:`geoseg.errors.Cancelled`, leaving no output.
    """
    started = time.perf_counter()
    notes: list[str] = []
    scene = open_scene(scene_path)
    out = Path(output) if output is not None else default_output(scene.path)
    check_output(out, scene.path, config.overwrite)
    if scene.crs is None:
        notes.append(f"{scene.path}: has no CRS; the mask copies its pixel grid but will not be georeferenced")

    name = resolve_model_name(scene, config) if model is None else config.model
    card = (model.card if model is not None else get_card(name)).with_scaling(config.scale)
    indexes, how = match_bands(scene.descriptions, card.bands, str(scene.path), config.bands)
    if how == "position":
        notes.append(f"{scene.path}: bands have no names; assumed in the model's order "
                     f"({', '.join(card.bands)}); pass --bands if they are not")
    factor = resolution_factor(scene.pixel_size_m, card.resolution_m) if config.match_resolution else 1
    layout = plan_layout(scene.height, scene.width, factor,
                         config.tile_size or card.tile_size,
                         card.overlap if config.overlap is None else config.overlap,
                         config.blend, config.block_size)
    check_free_space(out, scene.width, scene.height)

    device = resolve_device(config.device)
    loaded = model if model is not None else (loader or load_model)(name, config.trust_checkpoint)
    patches = layout.rows.count * layout.cols.count
    # run_in_flight: CUDA graphs are captured only by a run alone in the process (entered before the
    # predictor touches the GPU); closing: captured graphs stay with the network for the next scene.
    with run_in_flight(), closing(Predictor(loaded.network, device, config.precision, config.batch_size,
                                            channels=len(card.bands), tile=layout.tile, compile=config.compile,
                                            cuda_graphs=config.cuda_graphs,
                                            tune=patches >= TUNE_MIN_PATCHES)) as predictor:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

        stitcher = Stitcher(layout, card, predictor, scene.dtype)
        reader = WindowReader(scene, indexes)
        tags = {"GEOSEG_VERSION": __version__, "GEOSEG_MODEL": card.name,
                "GEOSEG_SOURCE": scene.path.name, "GEOSEG_FACTOR": str(factor),
                RECORD_TAG: encode(make_record(scene.path, loaded.identity, config))}
        stages: dict[str, float] = {}
        with _gdal_cache(), MaskWriter(out, scene, card, tags) as writer:
            try:
                run_engine(layout, stitcher, reader.read_into, writer.write, config.workers or default_workers(),
                           progress, cancel, block_shape=scene.block_shape, timings=stages)
            except GeosegError:
                raise
            except torch.OutOfMemoryError:
                raise DeviceError(f"{device} ran out of memory outside the model (input and blend bands grow with the "
                                  f"scene's width and --block-size); use a smaller --block-size") from None
            except OSError as exc:
                raise OutputError(f"{out}: writing failed ({exc}); check free space and permissions") from None

        seconds = time.perf_counter() - started
        notes.extend(f"{scene.path}: {note}" for note in predictor.notes)
        total = scene.width * scene.height
        counts = stitcher.counts.cpu().numpy()
    if counts[NODATA] == total:
        notes.append(f"{scene.path}: has no valid pixels (all nodata or NaN); the mask is all nodata (255)")
    return RunSummary(
        input=str(scene.path), output=str(out), model=card.name, device=str(device),
        precision=predictor.precision, batch_size=predictor.batch_size, width=scene.width, height=scene.height,
        bands=indexes,
        band_match=how, factor=factor, tile_size=layout.tile, overlap=layout.rows.overlap,
        blend=config.blend if isinstance(config.blend, str) else "custom", seconds=round(seconds, 3),
        megapixels_per_second=round(total / 1e6 / seconds, 3),
        class_shares={c.name: round(float(counts[c.value]) / total, 6) for c in card.classes},
        nodata_share=round(float(counts[NODATA]) / total, 6),
        peak_device_memory_gib=(round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
                                if device.type == "cuda" else None),
        model_seconds=round(predictor.model_seconds, 3), patches=predictor.patches, stage_seconds=stages,
        warnings=notes,
    )


def resolve_model_name(scene: SceneInfo, config: RunConfig) -> str:
    """The model a run of ``scene`` uses: ``config.model``, or the fitting built-in one for ``auto``."""
    return pick_builtin(scene, config.bands) if config.model == AUTO else config.model


#: GDAL's block cache for a run, in bytes. Its default (5 % of RAM) fills up over a large scene and
#: reads as memory growing with the scene; each window is decoded once, so a small cache loses nothing.
GDAL_CACHE_BYTES = 256 * 2**20


def _gdal_cache() -> rasterio.Env:
    """A bounded GDAL block cache, unless the user set ``GDAL_CACHEMAX`` themselves."""
    return rasterio.Env() if "GDAL_CACHEMAX" in os.environ else rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)
