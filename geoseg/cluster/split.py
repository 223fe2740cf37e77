"""One large scene across a cluster's workers: ``geoseg run --scheduler/--cluster``.

The scene is cut into full-width strips of rows. Each strip is a dask task that computes its labels
with the region engine (:func:`geoseg.engine.region.label_region`: every patch of the global grid that
reaches the strip, its halo read from the file), so the labels are bit-identical to a one-process run.
This process is the one writer: it takes the strips in order as they finish and streams them through
:func:`geoseg.export.product.write_product`, which writes the mask atomically with its overviews and sidecars.

What it costs: the patches of the one or two patch rows that reach two strips are predicted by both
(benchmarks/RESULTS.md section 10); the labels travel from workers to the writer (1 byte a pixel).
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.cluster.workers import model_for_workers, scene_resources
from geoseg.config import RunConfig
from geoseg.engine.pipeline import ProgressFn, WriteFn
from geoseg.engine.plan import Box
from geoseg.errors import ConfigError
from geoseg.export.product import LAYERS, Produced, write_product
from geoseg.io.overviews import level_key
from geoseg.io.writing import OUTPUT_TILE
from geoseg.models.card import ModelCard
from geoseg.models.registry import model_identity
from geoseg.prepare import PreparedRun, prepare_run
from geoseg.run import (
    Execution,
    RunSummary,
    VectorRequest,
    exclusive_output,
    mask_tags,
    summarise,
    with_vector,
)

#: Scene pixels of one strip at most (its labels, input and blend sums are held by one worker).
STRIP_PIXELS = 64 * 2**20
#: Strips per worker at least, so that the workers stay busy while the writer takes strips in order.
STRIPS_PER_WORKER = 3


def strip_rows(height: int, width: int, workers: int) -> int:
    """Rows per strip: whole output tiles, at most :data:`STRIP_PIXELS`, at least :data:`STRIPS_PER_WORKER`
    strips per worker where the scene is tall enough."""
    by_memory = max(1, STRIP_PIXELS // max(1, width) // OUTPUT_TILE)
    by_spread = max(1, math.ceil(height / (STRIPS_PER_WORKER * max(1, workers)) / OUTPUT_TILE))
    return min(by_memory, by_spread) * OUTPUT_TILE


@dataclass(frozen=True)
class StripJob:
    """What every strip task of one scene shares (it travels with each task: small)."""

    path: Path
    bands: tuple[int, ...]
    card: ModelCard
    model: Any  # geoseg.engine.resident.ModelRef
    config: RunConfig
    grid: Any  # geoseg.array.GridSpec


def segment_scene_on(client: Any, scene_path: str | Path, output: str | Path | None = None,
                     config: RunConfig = RunConfig(), *, rows: int | None = None,
                     progress: ProgressFn | None = None, vector: VectorRequest | None = None,
                     prepared: PreparedRun | None = None) -> RunSummary:
    """Segment one scene on the workers of ``client`` into one mask file (see module docstring);
    ``rows`` overrides the strip height (a multiple of 512); ``vector`` and ``prepared`` as for
    :func:`geoseg.run.segment_scene`."""
    started = time.perf_counter()
    if prepared is None:
        prepared = prepare_run(scene_path, output, config, vector=vector.path if vector is not None else None)
    with exclusive_output(prepared):
        return _segment_on(client, prepared, config, rows, progress, vector, started)


def _segment_on(client: Any, prepared: PreparedRun, config: RunConfig, rows: int | None,
                progress: ProgressFn | None, vector: VectorRequest | None, started: float) -> RunSummary:
    from geoseg.array import GridSpec
    from geoseg.engine.resident import ModelRef

    scene, layout = prepared.scene, prepared.layout
    workers = max(1, len(client.scheduler_info()["workers"]))
    step = rows or strip_rows(scene.height, scene.width, workers)
    if step % OUTPUT_TILE:
        raise ConfigError(f"strip height {step} is not a multiple of {OUTPUT_TILE} (whole output tiles)")
    model = ModelRef(model_for_workers(prepared.model), config.trust_checkpoint)
    job = StripJob(scene.path, prepared.bands, prepared.card, model,
                  config, GridSpec.of(layout, config.blend, config.block_size))
    boxes = [Box(r, min(r + step, scene.height), 0, scene.width) for r in range(0, scene.height, step)]
    # Two strips per worker at once: one reads while the other is on the device (they take turns there).
    resources = {k: v / 2 for k, v in (scene_resources(client) or {}).items()} or None
    futures = [client.submit(label_strip, job, box, pure=False, resources=resources,
                             key=f"geoseg-strip-{box.row0}-{uuid.uuid4().hex}") for box in boxes]
    stats: dict[str, Any] = {"patches": 0, "model_seconds": 0.0, "device": set(), "precision": set(),
                             "backend": set(), "batch": set(), "notes": set()}
    total = layout.rows.count * layout.cols.count

    def produce(write: WriteFn, overview_levels: int) -> np.ndarray:
        counts = np.zeros(256, dtype=np.int64)
        for box, future in zip(boxes, futures, strict=True):  # in order: the writer streams rows top to bottom
            made = future.result()
            future.release()
            counts += made["counts"]
            strips = {"labels": made["labels"]}
            if overview_levels:  # the first level, halved on the worker; the writer makes the rest
                strips[level_key(1)] = made["overview"]
            for key in LAYERS:
                if made[key] is not None:
                    strips[key] = made[key]
            write(box.row0, strips)
            stats["patches"] += made["patches"]
            stats["model_seconds"] += made["model_seconds"]
            for key in ("device", "precision", "backend", "batch"):
                stats[key].add(made[key])
            stats["notes"].update(made["notes"])
            if progress is not None:
                progress(min(total, round(total * box.row1 / scene.height)), total)
        return Produced(counts)

    try:
        assert prepared.output is not None
        product = write_product(scene, prepared.card, prepared.output, config,
                                mask_tags(prepared, model_identity(prepared.model, config.trust_checkpoint), config),
                                produce)
    finally:
        client.cancel([f for f in futures if not f.done()])
    execution = Execution(
        counts=product.counts, device=f"{workers} dask worker(s): {', '.join(sorted(stats['device']))}",
        precision=",".join(sorted(stats["precision"])), backend=",".join(sorted(stats["backend"])),
        batch_size=min(stats["batch"]), model_seconds=stats["model_seconds"], patches=stats["patches"],
        stage_seconds={}, peak_device_memory_gib=None,
        notes=[*(f"{scene.path}: {n}" for n in sorted(stats["notes"])), *product.notes],
        finish_seconds=product.finish_seconds, class_stats=product.class_stats, files=product.files)
    return with_vector(summarise(prepared, execution, config, time.perf_counter() - started), vector,
                       config.overwrite)


def label_strip(job: StripJob, box: Box) -> dict[str, Any]:
    """One strip's labels on a worker (a dask task)."""
    from distributed import get_worker

    from geoseg.cluster.workers import relax_malloc
    from geoseg.engine.region import label_region
    from geoseg.engine.resident import RESIDENT
    from geoseg.io.scene import WindowReader, open_scene

    relax_malloc()
    config = job.config
    layout = job.grid.layout()
    predictor, lock = RESIDENT.predictor_for(job.model, config, layout.patch)
    scene = open_scene(job.path)
    reader = WindowReader(scene, job.bands)
    seconds = predictor.model_seconds
    readers = config.workers or max(1, get_worker().state.nthreads)
    made = label_region(layout, job.card, predictor, box, reader.read_into, scene.dtype, config.probabilities, lock,
                        readers=readers, block_shape=scene.block_shape, overview=True, uncertainty=config.uncertainty)
    return {"labels": made.labels, "probabilities": made.probabilities, "uncertainty": made.uncertainty,
            "patches": made.patches,
            "overview": made.overview, "counts": np.bincount(made.labels.ravel(), minlength=256),
            "model_seconds": predictor.model_seconds - seconds, "device": str(predictor.device),
            "precision": predictor.precision, "backend": predictor.backend, "batch": predictor.batch_size,
            "notes": list(predictor.notes)}
