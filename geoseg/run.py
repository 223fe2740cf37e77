"""``segment_scene``: the one library call behind ``geoseg run``, file in, mask file out.

It reads as three steps, each a function others reuse: :func:`geoseg.prepare.prepare_run`
(decisions, before any work), :func:`execute` (the network on its device, the pipeline, the mask
written) and :func:`summarise` (the :class:`~geoseg.summary.RunSummary` the CLI prints).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, closing, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from geoseg.config import RunConfig
from geoseg.engine.backends import EXPORTED, cached_export, resolve_backend
from geoseg.engine.blender import Blender
from geoseg.engine.costs import one_time_costs
from geoseg.engine.device import DeviceSession, resolve_device, resolve_precision
from geoseg.engine.input_rows import InputRows
from geoseg.engine.pipeline import ProgressFn, Tuning, WriteFn, run_pipeline
from geoseg.engine.predictor import Predictor
from geoseg.engine.tile_decode import TileIndex, decode_plan, make_decoder
from geoseg.engine.traced import load_traced, save_traced
from geoseg.errors import ConfigError, DeviceError
from geoseg.export.product import Produced, write_product
from geoseg.io.outputs import OutputLock
from geoseg.io.publish import clean_leftovers
from geoseg.io.record import RECORD_TAG, encode, make_record
from geoseg.io.scene import WindowReader
from geoseg.io.threads import default_workers
from geoseg.io.writing import NODATA
from geoseg.models import LoadedModel, load_model
from geoseg.models.onnxfile import onnx_output
from geoseg.prepare import PreparedRun, VectorRequest, prepare_run
from geoseg.summary import RunSummary
from geoseg.version import __version__

#: Loads a model by name (and whether pickled checkpoints are trusted).
ModelLoader = Callable[[str, bool], LoadedModel]


@dataclass(frozen=True)
class Execution:
    """What :func:`execute` measured, for :func:`summarise`."""

    counts: np.ndarray  # pixels per label value (classes and NODATA)
    device: str
    precision: str
    backend: str  # torch, onnxruntime or openvino
    batch_size: int  # as chosen (auto) and after any out-of-memory back-off
    model_seconds: float
    patches: int
    stage_seconds: dict[str, float]
    peak_device_memory_gib: float | None
    notes: list[str]
    finish_seconds: float = 0.0  # turning the written mask into its format (COG overviews and layout)
    class_stats: list[dict] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    decode: str = "cpu"  # who decoded the tiles (RunSummary.decode)
    seam_share: float | None = None  # RunSummary.seam_share


def segment_scene(scene_path: str | Path, output: str | Path | None = None,
                  config: RunConfig = RunConfig(), model: LoadedModel | None = None,
                  progress: ProgressFn | None = None, loader: ModelLoader | None = None,
                  cancel: threading.Event | None = None, session: DeviceSession | None = None,
                  tuning: Tuning = Tuning(), vector: VectorRequest | None = None,
                  prepared: PreparedRun | None = None) -> RunSummary:
    """Segment one scene into a georeferenced mask file and return a summary.

    ``model`` overrides ``config.model`` with a network already in memory (tests, notebooks);
    ``loader`` loads models by name (``geoseg batch`` shares one cache across scenes); ``session``
    holds placed networks and their CUDA graphs across runs (default: the process's); setting
    ``cancel`` stops the run at the next block with :class:`geoseg.errors.Cancelled`, leaving no
    output; ``tuning`` sizes the pipeline's stages (never changes the mask); ``vector`` also
    polygonises the finished mask (:func:`geoseg.export.vector.polygonize`); ``prepared`` is
    :func:`~geoseg.prepare.prepare_run`'s result for these arguments where the caller already has it
    (``geoseg run`` checks everything before importing torch), so it is not decided twice.
    """
    started = time.perf_counter()
    if prepared is None:
        prepared = prepare_run(scene_path, output, config, model.card if model is not None else None,
                               vector=vector.path if vector is not None else None)
    device = resolve_device(config.device)
    # Planned once, before the model loads: --decode gpu on a CPU fails at once.
    tiles = decode_plan(config.decode, prepared.scene, device, prepared.factor)
    with exclusive_output(prepared):
        loaded = model if model is not None else (loader or deferred_load)(prepared.model, config.trust_checkpoint)
        execution = execute(prepared, loaded, config, device, progress=progress, cancel=cancel, session=session,
                            tuning=tuning, tiles=tiles, started=started)
        return with_vector(summarise(prepared, execution, config, time.perf_counter() - started), vector,
                           config.overwrite)


def exclusive_output(prepared: PreparedRun) -> OutputLock:
    """The right to write ``prepared``'s output, alone (:class:`~geoseg.io.outputs.OutputLock`), once the
    temporary files of killed runs in its folder are removed."""
    assert prepared.output is not None
    clean_leftovers(prepared.output.parent)
    return OutputLock(prepared.output)


def deferred_load(name: str, trust_checkpoint: bool) -> LoadedModel:
    """:func:`load_model` building the network on first use: a CPU run with a cached export never does."""
    return load_model(name, trust_checkpoint, deferred=True)


def with_vector(summary: RunSummary, vector: VectorRequest | None, overwrite: bool) -> RunSummary:
    """``summary``, after polygonising its finished mask into ``vector``'s layer when one is asked for."""
    if vector is None:
        return summary
    from geoseg.export.vector import polygonize  # shapely loads only for a run that writes a vector layer

    layer = polygonize(Path(summary.output), vector.path, min_area_m2=vector.min_area_m2, simplify=vector.simplify,
                       overwrite=overwrite)
    notes = [f"{vector.path}: class {name!r} is in the mask but has no region of at least --min-area "
             f"{vector.min_area_m2:g} m²; the layer has none of it" for name in layer.removed]
    return replace(summary, vector=asdict(layer), warnings=[*summary.warnings, *notes])


def execute(prepared: PreparedRun, loaded: LoadedModel, config: RunConfig, device: torch.device, *,
            progress: ProgressFn | None = None, cancel: threading.Event | None = None,
            session: DeviceSession | None = None, tuning: Tuning = Tuning(),
            tiles: TileIndex | None = None, started: float | None = None) -> Execution:
    """Run the network over ``prepared``'s scene on ``device`` and write its product
    (:func:`write_product`): the mask in ``config.output_format``, the probabilities if asked for, the
    legend, style and STAC sidecars. ``tiles`` is the scene's tile index where the device decodes it
    (:func:`~geoseg.engine.tile_decode.decode_plan`, planned once by the caller), None for the CPU readers.
    ``started`` (:func:`time.perf_counter`) is when the caller's run began: the stage seconds then say when the
    pipeline began and ended and when the product was published, from it (where a run's time outside the
    pipeline goes)."""
    scene, layout, card = prepared.scene, prepared.layout, prepared.card
    started = time.perf_counter() if started is None else started
    session = session or DeviceSession.default()
    patches = layout.rows.count * layout.cols.count
    stages: dict[str, float] = {}
    # the batch sizes this model has run at in the session (a warm service, a batch): a small scene takes one
    warm_key = (loaded.identity or id(loaded), len(card.bands), layout.patch, config.precision, config.tta, str(device))
    once = one_time_costs(patches, device, cuda_graphs=config.cuda_graphs, batch_size=config.batch_size,
                          reproducible=config.reproducible, warm_batches=session.warm_batches(warm_key))
    # cuDNN times its algorithms in this run (a trace records that choice: geoseg.engine.traced)
    tuned = device.type == "cuda" and not config.reproducible and (once.tune or torch.backends.cudnn.benchmark)
    network, exported, traced, weights_key = network_form(loaded, config, prepared, device, tuned)
    # run_in_flight: CUDA graphs are captured only by a run alone in the session (entered before the
    # predictor touches the GPU); closing: captured graphs stay with the network for the next scene.
    with session.run_in_flight(), closing(Predictor(network, device, config.precision, once.batch_size,
                                                    channels=len(card.bands), patch=layout.patch,
                                                    compile=config.compile, cuda_graphs=once.cuda_graphs,
                                                    tune=once.tune,
                                                    session=session, backend=config.backend,
                                                    reproducible=config.reproducible, exported=exported,
                                                    weights_key=weights_key,
                                                    network_source=lambda: loaded.network,
                                                    traced=traced is not None, tta=config.tta,
                                                    probabilities_out=loaded.onnx is not None
                                                    and onnx_output(loaded.onnx) == "probabilities")) as predictor:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        decoder = make_decoder(config.decode, tiles, scene, prepared.bands, device, tuning.decode_streams,
                               tuning.hybrid_share)

        def produce(write: WriteFn, overview_levels: int) -> Produced:
            with network_stream(device, decoder, tuning):
                return produce_here(write, overview_levels)

        def produce_here(write: WriteFn, overview_levels: int) -> Produced:
            inputs = InputRows(layout, card, device, scene.dtype, fused=tuning.fused_develop,
                               all_valid=scene.mask_kind == "none" and np.dtype(scene.dtype).kind != "f")
            blender = Blender(layout, card, predictor, config.probabilities,
                              overview_levels=min(overview_levels, tuning.device_overview_levels),
                              uncertainty=config.uncertainty, wide_votes=tuning.wide_votes)
            reader = WindowReader(scene, prepared.bands)
            stages["pipeline began at"] = round(time.perf_counter() - started, 3)
            try:
                run_pipeline(layout, inputs, blender, reader.read_into, write,
                             config.workers or default_workers(), progress, cancel, block_shape=scene.block_shape,
                             timings=stages, tuning=tuning, decoder=decoder)
            except torch.OutOfMemoryError:
                raise DeviceError(f"{device} ran out of memory outside the model (the input and blend rows grow "
                                  f"with the scene's width and --block-size); use a smaller --block-size") from None
            finally:
                reader.close()
                stages["pipeline ended at"] = round(time.perf_counter() - started, 3)
            return Produced(blender.counts.cpu().numpy(), int(blender.seam_pixels))

        assert prepared.output is not None
        product = write_product(scene, card, prepared.output, config, mask_tags(prepared, loaded.identity, config),
                                produce, tuning.zlevel)
        stages["published at"] = round(time.perf_counter() - started, 3)
        if device.type == "cuda":
            session.ran_batches(warm_key, predictor.batch_size)
        if weights_key is not None and traced is None and predictor.backend == "torch" and not config.compile:
            # built from its file for this run: the next cold process loads the trace instead
            save_traced(predictor.network, weights_key, len(card.bands), layout.patch, predictor.precision, device,
                        tuned)
        return Execution(
            counts=product.counts, device=str(device), precision=predictor.precision, backend=predictor.backend,
            batch_size=predictor.batch_size, model_seconds=predictor.model_seconds, patches=predictor.patches,
            stage_seconds=stages,
            peak_device_memory_gib=(round(torch.cuda.max_memory_allocated(device) / 2**30, 3)
                                    if device.type == "cuda" else None),
            notes=[*(f"{scene.path}: {note}" for note in predictor.notes), *product.notes],
            finish_seconds=product.finish_seconds,
            class_stats=product.class_stats, files=product.files, decode=decoder.mode if decoder else "cpu",
            seam_share=product.seam_share)


def network_form(loaded: LoadedModel, config: RunConfig, prepared: PreparedRun, device: torch.device, tuned: bool
                 ) -> tuple[torch.nn.Module | None, object | None, torch.nn.Module | None, str | None]:
    """Which form of the network a run uses: ``(network, exported, traced, weights_key)``.

    An ONNX model file runs as it is on the exported (CPU) backends. A model fresh from its file (not built yet:
    nothing in memory can have changed its weights) runs on those backends from its cached ONNX export, or on torch
    from its cached trace (no smp needed: :mod:`geoseg.engine.traced`), without building the network; where none
    is cached yet, the built network runs and ``weights_key`` says where to record the export or trace it makes.
    ``network`` is None where the export runs."""
    layout, card = prepared.layout, prepared.card
    weights_key = None if loaded.built else loaded.weights_key
    exported = traced = None
    backend = resolve_backend(config.backend, device, config.precision)
    if loaded.onnx is not None:
        if backend not in EXPORTED or config.compile:
            raise ConfigError(f"{loaded.onnx}: an ONNX model runs on the CPU backends only; use --device cpu and "
                              f"--backend auto, onnxruntime or openvino (without --compile)")
        if layout.patch != card.tile_size:
            raise ConfigError(f"{loaded.onnx}: takes patches of {card.tile_size} px only; drop --tile-size "
                              f"{layout.patch}")
        exported, weights_key = loaded.onnx, None
    elif weights_key is not None and not config.compile and backend in EXPORTED:
        exported = cached_export(weights_key, len(card.bands), layout.patch)
    elif weights_key is not None and not config.compile:
        traced = load_traced(weights_key, len(card.bands), layout.patch, resolve_precision(config.precision, device),
                             device, tuned)
    network = None if exported else traced if traced is not None else loaded.network
    return network, exported, traced, weights_key


def network_stream(device: torch.device, decoder: object | None, tuning: Tuning) -> AbstractContextManager:
    """The device thread's stream for a run: one of priority ``tuning.network_priority`` while the GPU also
    decodes tiles, so the network's kernels go first (the current stream otherwise)."""
    if device.type != "cuda" or decoder is None or tuning.network_priority == 0:
        return nullcontext()
    stream = torch.cuda.Stream(device, priority=tuning.network_priority)
    stream.wait_stream(torch.cuda.current_stream(device))
    return torch.cuda.stream(stream)


def mask_tags(prepared: PreparedRun, identity: str, config: RunConfig) -> dict[str, str]:
    """The metadata geoseg writes into a mask, its resume record included."""
    return {"GEOSEG_VERSION": __version__, "GEOSEG_MODEL": prepared.card.name,
            "GEOSEG_SOURCE": prepared.scene.path.name, "GEOSEG_FACTOR": str(prepared.factor),
            RECORD_TAG: encode(make_record(prepared.scene.path, identity, config))}


def summarise(prepared: PreparedRun, execution: Execution, config: RunConfig, seconds: float) -> RunSummary:
    """The summary of a finished run."""
    scene, card, counts = prepared.scene, prepared.card, execution.counts
    notes = [*prepared.notes, *execution.notes]
    total = scene.width * scene.height
    if counts[NODATA] == total:
        notes.append(f"{scene.path}: has no valid pixels (all nodata or NaN); the mask is all nodata (255)")
    return RunSummary(
        input=str(scene.path), output=str(prepared.output), model=card.name, device=execution.device,
        backend=execution.backend,
        precision=execution.precision, batch_size=execution.batch_size, width=scene.width, height=scene.height,
        bands=prepared.bands, band_match=prepared.band_match, factor=prepared.factor,
        pixel_size_m=round(scene.pixel_size_m, 6) if scene.pixel_size_m else None,
        tile_size=prepared.layout.patch, overlap=prepared.layout.rows.overlap,
        blend=config.blend if isinstance(config.blend, str) else "custom", seconds=round(seconds, 3),
        megapixels_per_second=round(total / 1e6 / seconds, 3),
        class_shares={c.name: round(float(counts[c.value]) / total, 6) for c in card.classes},
        nodata_share=round(float(counts[NODATA]) / total, 6),
        peak_device_memory_gib=execution.peak_device_memory_gib,
        model_seconds=round(execution.model_seconds, 3), patches=execution.patches,
        stage_seconds=execution.stage_seconds, decode=execution.decode, output_format=config.output_format,
        finish_seconds=execution.finish_seconds, class_stats=execution.class_stats, files=execution.files,
        warnings=notes, seam_share=execution.seam_share,
    )
