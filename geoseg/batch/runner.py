"""``run_batch``: many scenes, each isolated, resumable, reported; the library call behind ``geoseg batch``.

* **Resume**: a scene whose mask already exists with the record a run would write
  (:mod:`geoseg.io.record`) is skipped; ``force`` redoes it. A mask that exists without a geoseg
  record is not ours: that scene fails rather than overwrite it.
* **Isolation**: any error in one scene (bad file, bad bands, a read error half-way, a full disk)
  is recorded for that scene and the batch goes on.
* **Cancellation**: setting ``cancel`` (the CLI does on SIGINT/SIGTERM) stops running scenes at
  their next block; their temporary files are removed, scenes not started are reported as such.
* **Leftovers**: temporary masks (``.NAME.partial-PID``) of processes that no longer exist, such
  as a batch killed with SIGKILL, are removed from the output folders before starting.
* **Reports**: an event per line in a JSON-lines log, and a final JSON summary.
* **Catalogue**: each output folder gets a STAC Collection of its masks' Items (``collection.json``)
  and a VRT mosaic of them (``geoseg-mosaic.vrt``), rewritten after every batch.
* **Report**: and a self-contained ``report.html`` (:mod:`geoseg.batch.report`): quicklooks, classes, times,
  warnings and failures of the batch's scenes there.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from geoseg.batch.claims import Claims, Owner, claim, release
from geoseg.batch.log import EventLog, now
from geoseg.batch.report import ReportScene, write_report
from geoseg.batch.tasks import BatchSummary, SceneResult, Task
from geoseg.engine.device import DeviceSession
from geoseg.errors import EXIT_FAILED, EXIT_OK, Cancelled, GeosegError, OutputError
from geoseg.export.mosaic import write_vrt
from geoseg.export.stac import collection
from geoseg.io.integrity import publish_text
from geoseg.io.publish import clean_leftovers
from geoseg.io.record import RECORD_TAG, make_record, read_record, same_record
from geoseg.io.scene import open_scene
from geoseg.io.sources import ITEM_ID_TAG, UPDATED_TAG
from geoseg.io.stack import stack_input
from geoseg.models import LoadedModel, load_model
from geoseg.models.registry import model_identity
from geoseg.prepare import choose_model
from geoseg.run import segment_scene


class SceneRunner(Protocol):
    """Runs scenes somewhere else (dask workers: :class:`geoseg.cluster.scenes.DaskScenes`): ``submit``
    returns a future of the scene's :class:`SceneResult` and its events; ``cancel`` stops what is left."""

    def submit(self, task: Task, force: bool, owner: Owner) -> Future: ...

    def cancel(self) -> None: ...


def run_batch(tasks: list[Task], *, force: bool = False, parallel: int = 2, log: EventLog | None = None,
              cancel: threading.Event | None = None, report: Callable[[SceneResult, int, int], None] | None = None,
              notes: list[str] | None = None, runner: SceneRunner | None = None,
              owner: Owner | None = None) -> BatchSummary:
    """Run ``tasks`` (see module docstring) and return the summary; never raises for one scene's failure.

    ``runner`` runs the scenes on a dask cluster instead of this process's threads (``parallel`` is then
    the cluster's affair); ``owner`` names this batch in its scene claims (:mod:`geoseg.batch.claims`)."""
    started, clock = now(), time.perf_counter()
    log = log or EventLog(None)
    cancel = cancel or threading.Event()
    notes = list(notes or [])
    for folder in sorted({t.output.parent for t in tasks}):
        notes += [f"removed leftover temporary file {p}" for p in clean_leftovers(folder)]
    claims = Claims(owner)
    log.emit("batch_start", scenes=len(tasks), parallel=parallel, force=force, notes=notes, batch=claims.owner.batch,
             host=claims.owner.host, pid=claims.owner.pid, cluster=runner is not None)

    loader = _SharedModels()
    session = DeviceSession()  # the scenes' shared network, its placement and its CUDA graphs
    if len(tasks) > 1 and not any(t.config.reproducible for t in tasks):
        session.tune_for_many_scenes()  # seconds once; each later scene's model calls are faster
    cpus = os.cpu_count() or 1
    results: list[SceneResult | None] = [None] * len(tasks)
    finished = 0

    def one(i: int) -> SceneResult:
        task = tasks[i]
        if task.config.workers is None:
            task = replace(task, config=replace(task.config, workers=max(1, cpus // parallel)))
        if task.config.cuda_graphs is None and parallel > 1:
            # Scenes in flight share the GPU, and a CUDA graph is captured only by a run alone in the
            # session (DeviceSession.run_in_flight): eager, unless asked for.
            task = replace(task, config=replace(task.config, cuda_graphs=False))
        return run_task(task, force, loader, cancel, log, session, claims.owner)

    def remote(i: int) -> Future:
        future = runner.submit(tasks[i], force, claims.owner)  # type: ignore[union-attr]
        claims.watch([tasks[i].output])
        return future

    with ThreadPoolExecutor(max(1, parallel), thread_name_prefix="geoseg-scene") as pool, claims:
        pending: dict[Future, int] = {(pool.submit(one, i) if runner is None else remote(i)): i
                                      for i in range(len(tasks))}
        cancelled = False
        while pending:  # short waits, so signal handlers in the main thread run promptly
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            if runner is not None and cancel.is_set() and not cancelled:
                runner.cancel()
                cancelled = True
            for future in done:
                i = pending.pop(future)
                results[i] = _remote_result(future, tasks[i], log) if runner is not None else future.result()
                finished += 1
                if report is not None:
                    report(results[i], finished, len(tasks))

    for folder in sorted({t.output.parent for t in tasks}):  # a dask worker killed mid-scene left its temporary files
        notes += [f"removed temporary file {p} of a process that died" for p in clean_leftovers(folder)]
    scenes = [r for r in results if r is not None]
    counts = {s: sum(r.status == s for r in scenes) for s in ("done", "skipped", "failed", "cancelled")}
    code = EXIT_FAILED if counts["failed"] else EXIT_OK
    catalogs, reports = write_folder_files(scenes, notes)
    summary = BatchSummary(started=started, finished=now(), seconds=round(time.perf_counter() - clock, 3),
                           counts=counts, exit_code=code, notes=notes, scenes=scenes, catalogs=catalogs,
                           reports=reports)
    log.emit("batch_end", counts=counts, seconds=summary.seconds)
    return summary


def write_folder_files(scenes: list[SceneResult], notes: list[str]) -> tuple[list[str], list[str]]:
    """Each output folder's STAC Collection and VRT mosaic of its masks (:func:`write_catalog`) and its
    ``report.html``: the paths written. Both are extra, so a failure is a note in ``notes``, never the batch's."""
    catalogs: list[str] = []
    for folder in sorted({Path(r.output).parent for r in scenes if r.status in ("done", "skipped")}):
        try:
            catalogs += write_catalog(folder, [Path(r.output) for r in scenes
                                               if r.status in ("done", "skipped") and Path(r.output).parent == folder],
                                      notes)
        except (OSError, ValueError) as exc:  # the masks are done either way
            notes.append(f"{folder}: its STAC Collection and mosaic could not be written ({exc})")
    reports: list[str] = []
    for folder in sorted({Path(r.output).parent for r in scenes}):
        if folder.is_dir():
            try:
                reports.append(str(write_report(folder, [report_scene(r) for r in scenes])))
            except (GeosegError, OSError, ValueError) as exc:
                notes.append(f"{folder}: its report could not be written ({exc})")
    return catalogs, reports


def report_scene(result: SceneResult) -> ReportScene:
    """A scene's outcome as the batch report shows it."""
    return ReportScene(input=result.input, output=result.output, status=result.status, seconds=result.seconds,
                       warnings=list(result.warnings), error=result.error, reason=result.reason)


def _remote_result(future: Future, task: Task, log: EventLog) -> SceneResult:
    """A scene's result from a dask worker, its events written to this batch's log."""
    base = {"job": task.job, "input": str(task.input), "output": str(task.output)}
    try:
        result, events = future.result()
    except Exception as exc:  # the task itself failed (its workers kept dying, the cluster went away)
        gone = "CancelledError" in type(exc).__name__  # dropped by the cluster (distributed's FutureCancelledError)
        message = "stopped: the batch was cancelled" if gone else (
            f"{task.input}: the cluster could not run it ({type(exc).__name__}: {exc})")
        status = "cancelled" if gone else "failed"
        log.emit(f"scene_{status}", **base, error=message)
        return SceneResult(**base, status=status, error=message, error_kind=None if status == "cancelled"
                           else "ClusterError")
    for event in events:
        log.write(event)
    return result


def run_task(task: Task, force: bool, loader: Callable[[str, bool], LoadedModel], cancel: threading.Event,
             log: EventLog, session: DeviceSession | None = None, owner: Owner | None = None) -> SceneResult:
    """One scene: claimed (when ``owner`` is given), skipped if done, else segmented; never raises."""
    base = {"job": task.job, "input": str(task.input), "output": str(task.output)}
    if cancel.is_set():
        log.emit("scene_cancelled", **base)
        return SceneResult(**base, status="cancelled", error="not started: the batch was stopped")
    if task.problem is not None:
        return _failed(base, time.perf_counter(), task.problem, "SceneError", log)
    if owner is not None:
        try:
            holder = claim(task.output, owner)
        except OSError as exc:
            return _failed(base, time.perf_counter(), f"{task.output}: cannot be claimed in its folder "
                           f"({exc.strerror}); check that the folder is writable", "OutputError", log)
        if holder is not None:
            reason = f"being segmented by another {holder}"
            log.emit("scene_skipped", **base, reason=reason)
            return SceneResult(**base, status="skipped", reason=reason)
        try:
            return run_task(task, force, loader, cancel, log, session)
        finally:
            release(task.output, owner)
    started = time.perf_counter()
    try:
        # a STAC Item: its per-band assets, through the stack VRT beside the mask (geoseg.io.stack); else as it is
        source, _ = stack_input([task.input], task.output, overwrite=True)
        scene = open_scene(source)
        # an Item's scenes are keyed in the log by its id and the updated times it carries, beside the paths
        keys = {key: scene.tags[tag] for key, tag in (("item", ITEM_ID_TAG), ("item_updated", UPDATED_TAG))
                if tag in scene.tags}
        name = choose_model(scene, task.config)
        record = make_record(scene.path, model_identity(name, task.config.trust_checkpoint), task.config)
        found = read_record(task.output) if task.output.exists() else None
        if not force and same_record(found, record):
            reason = "finished earlier with the same input, model and settings"
            log.emit("scene_skipped", **base, **keys, reason=reason)
            return SceneResult(**base, status="skipped", reason=reason)
        if task.output.exists() and found is None and not force:
            raise OutputError(f"{task.output}: exists and was not written by geoseg (no {RECORD_TAG} tag); "
                              f"move it away or pass --force to replace it")
        log.emit("scene_start", **base, **keys, model=name)
        summary = segment_scene(source, task.output, replace(task.config, model=name, overwrite=True),
                                loader=loader, cancel=cancel, session=session)
    except Cancelled:
        log.emit("scene_cancelled", **base, seconds=round(time.perf_counter() - started, 3))
        return SceneResult(**base, status="cancelled", seconds=round(time.perf_counter() - started, 3),
                           error="stopped by a signal; no output was left")
    except GeosegError as exc:
        return _failed(base, started, str(exc), type(exc).__name__, log)
    except Exception as exc:  # isolation: a bug or an unforeseen error in one scene never stops the batch
        return _failed(base, started, f"{task.input}: internal error {type(exc).__name__}: {exc}", "InternalError",
                       log)
    result = SceneResult(**base, status="done", seconds=summary.seconds,
                         megapixels_per_second=summary.megapixels_per_second, warnings=summary.warnings)
    log.emit("scene_done", **base, **keys, seconds=summary.seconds,
             megapixels_per_second=summary.megapixels_per_second, warnings=summary.warnings)
    return result


def _failed(base: dict[str, str], started: float, message: str, kind: str, log: EventLog) -> SceneResult:
    seconds = round(time.perf_counter() - started, 3)
    log.emit("scene_failed", **base, seconds=seconds, error=message, error_kind=kind)
    return SceneResult(**base, status="failed", seconds=seconds, error=message, error_kind=kind)


class _SharedModels:
    """Loads each model once for the whole batch, whichever scene thread asks first.

    Deferred: on the CPU with a cached ONNX export, the network is never built (see :func:`load_model`).
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, bool], LoadedModel] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, trust_checkpoint: bool) -> LoadedModel:
        with self._lock:
            key = (name, trust_checkpoint)
            if key not in self._models:
                self._models[key] = load_model(name, trust_checkpoint, deferred=True)
            return self._models[key]


#: Written into each output folder of a batch: the STAC Collection of its masks and their VRT mosaic.
COLLECTION_NAME, MOSAIC_NAME = "collection.json", "geoseg-mosaic.vrt"


def write_catalog(folder: Path, masks: list[Path], notes: list[str]) -> list[str]:
    """The STAC Collection (linking each mask's Item) and the VRT mosaic of the masks in ``folder``."""
    items = [json.loads(m.with_suffix(".json").read_text()) for m in masks if m.with_suffix(".json").is_file()]
    written = []
    if items:
        path = folder / COLLECTION_NAME
        publish_text(path, json.dumps(collection(folder, items, folder.name or "geoseg"), indent=2) + "\n",
                     "the batch's STAC Collection ")
        written.append(str(path))
    used, left_out = write_vrt([m for m in masks if m.is_file()], folder / MOSAIC_NAME)
    notes += left_out
    if used:
        written.append(str(folder / MOSAIC_NAME))
    return written


def write_summary(summary: BatchSummary, path: Path) -> None:
    """Write the summary JSON atomically (a reader never sees half of it)."""
    fix = "choose a writable folder with --summary PATH"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{path}: the batch's summary cannot be written ({exc.strerror}); {fix}") from None
    publish_text(path, json.dumps(summary.to_dict(), indent=2, default=str) + "\n", "the batch's summary ", fix)
