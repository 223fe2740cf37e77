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
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from geoseg.batch.jobs import Job, expand_inputs
from geoseg.config import RunConfig
from geoseg.engine.device import DeviceSession
from geoseg.errors import EXIT_FAILED, EXIT_OK, Cancelled, ConfigError, GeosegError, OutputError
from geoseg.export.mosaic import write_vrt
from geoseg.export.stac import collection
from geoseg.io.record import RECORD_TAG, make_record, read_record, same_record
from geoseg.io.scene import open_scene
from geoseg.io.writing import PARTIAL_MARK
from geoseg.models import LoadedModel, load_model
from geoseg.models.registry import model_identity
from geoseg.prepare import choose_model
from geoseg.run import segment_scene


@dataclass(frozen=True)
class Task:
    """One scene of a batch."""

    job: str
    input: Path
    output: Path
    config: RunConfig


@dataclass
class SceneResult:
    job: str
    input: str
    output: str
    status: str  # done | skipped | failed | cancelled
    seconds: float = 0.0
    megapixels_per_second: float | None = None
    error: str | None = None
    error_kind: str | None = None  # the error class: SceneError, BandError, ... (exit code in `geoseg run`)
    warnings: list[str] = field(default_factory=list)


@dataclass
class BatchSummary:
    started: str
    finished: str
    seconds: float
    counts: dict[str, int]
    exit_code: int
    notes: list[str]
    scenes: list[SceneResult]
    catalogs: list[str] = field(default_factory=list)  # each output folder's STAC Collection and VRT mosaic

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_tasks(jobs: list[Job]) -> tuple[list[Task], list[str]]:
    """Every scene of every job with its output path; notes for inputs that matched nothing.

    Two scenes writing the same output is a configuration error, found before anything runs.
    """
    tasks, notes = [], []
    for job in jobs:
        scenes, empty = expand_inputs(job.inputs)
        notes += [f"job {job.name!r}: {n}" for n in empty]
        tasks += [Task(job.name, scene, job.output_for(scene), job.config) for scene in scenes]
    seen: dict[Path, Task] = {}
    for task in tasks:
        key = task.output.resolve()
        if key in seen:
            raise ConfigError(f"{seen[key].input} and {task.input} would both be written to {task.output}; "
                              f"use {{parent}} or {{job}} in the name template")
        seen[key] = task
    return tasks, notes


class EventLog:
    """JSON lines, one event each, flushed as they happen (``tail -f`` friendly); thread-safe."""

    def __init__(self, path: Path | None):
        self.path = path
        self._file: TextIO | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> EventLog:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()

    def emit(self, event: str, **fields: Any) -> None:
        if self._file is None:
            return
        line = json.dumps({"time": _now(), "event": event, **fields}, default=str)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()


def run_batch(tasks: list[Task], *, force: bool = False, parallel: int = 2, log: EventLog | None = None,
              cancel: threading.Event | None = None, report: Callable[[SceneResult, int, int], None] | None = None,
              notes: list[str] | None = None) -> BatchSummary:
    """Run ``tasks`` (see module docstring) and return the summary; never raises for one scene's failure."""
    started, clock = _now(), time.perf_counter()
    log = log or EventLog(None)
    cancel = cancel or threading.Event()
    notes = list(notes or [])
    for folder in sorted({t.output.parent for t in tasks}):
        notes += [f"removed leftover temporary file {p}" for p in clean_leftovers(folder)]
    log.emit("batch_start", scenes=len(tasks), parallel=parallel, force=force, notes=notes)

    loader = _SharedModels()
    session = DeviceSession()  # the scenes' shared network, its placement and its CUDA graphs
    if len(tasks) > 1:
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
        return run_task(task, force, loader, cancel, log, session)

    with ThreadPoolExecutor(max(1, parallel), thread_name_prefix="geoseg-scene") as pool:
        pending: dict[Future, int] = {pool.submit(one, i): i for i in range(len(tasks))}
        while pending:  # short waits, so signal handlers in the main thread run promptly
            done, _ = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            for future in done:
                i = pending.pop(future)
                results[i] = future.result()
                finished += 1
                if report is not None:
                    report(results[i], finished, len(tasks))

    scenes = [r for r in results if r is not None]
    counts = {s: sum(r.status == s for r in scenes) for s in ("done", "skipped", "failed", "cancelled")}
    code = EXIT_FAILED if counts["failed"] else EXIT_OK
    catalogs = []
    for folder in sorted({Path(r.output).parent for r in scenes if r.status in ("done", "skipped")}):
        try:
            catalogs += write_catalog(folder, [Path(r.output) for r in scenes
                                               if r.status in ("done", "skipped") and Path(r.output).parent == folder],
                                      notes)
        except (OSError, ValueError) as exc:  # a catalogue is extra: the masks are done either way
            notes.append(f"{folder}: its STAC Collection and mosaic could not be written ({exc})")
    summary = BatchSummary(started=started, finished=_now(), seconds=round(time.perf_counter() - clock, 3),
                           counts=counts, exit_code=code, notes=notes, scenes=scenes, catalogs=catalogs)
    log.emit("batch_end", counts=counts, seconds=summary.seconds)
    return summary


def run_task(task: Task, force: bool, loader: _SharedModels, cancel: threading.Event, log: EventLog,
             session: DeviceSession | None = None) -> SceneResult:
    base = {"job": task.job, "input": str(task.input), "output": str(task.output)}
    if cancel.is_set():
        log.emit("scene_cancelled", **base)
        return SceneResult(**base, status="cancelled", error="not started: the batch was stopped")
    started = time.perf_counter()
    try:
        scene = open_scene(task.input)
        name = choose_model(scene, task.config)
        record = make_record(scene.path, model_identity(name, task.config.trust_checkpoint), task.config)
        found = read_record(task.output) if task.output.exists() else None
        if not force and same_record(found, record):
            log.emit("scene_skipped", **base, reason="finished earlier with the same input, model and settings")
            return SceneResult(**base, status="skipped")
        if task.output.exists() and found is None and not force:
            raise OutputError(f"{task.output}: exists and was not written by geoseg (no {RECORD_TAG} tag); "
                              f"move it away or pass --force to replace it")
        log.emit("scene_start", **base, model=name)
        summary = segment_scene(task.input, task.output, replace(task.config, model=name, overwrite=True),
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
    log.emit("scene_done", **base, seconds=summary.seconds, megapixels_per_second=summary.megapixels_per_second,
             warnings=summary.warnings)
    return result


def _failed(base: dict[str, str], started: float, message: str, kind: str, log: EventLog) -> SceneResult:
    seconds = round(time.perf_counter() - started, 3)
    log.emit("scene_failed", **base, seconds=seconds, error=message, error_kind=kind)
    return SceneResult(**base, status="failed", seconds=seconds, error=message, error_kind=kind)


def clean_leftovers(folder: Path) -> list[Path]:
    """Remove ``.NAME.partial-PID`` files (and ``.NAME.partial-PID.ext``) in ``folder`` whose process is gone;
    return what was removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.glob(f".*{PARTIAL_MARK}*"):
        pid_text = path.name.rsplit(PARTIAL_MARK, 1)[1].split(".")[0]  # NAME.partial-PID[.ext]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _SharedModels:
    """Loads each model once for the whole batch, whichever scene thread asks first."""

    def __init__(self) -> None:
        self._models: dict[tuple[str, bool], LoadedModel] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, trust_checkpoint: bool) -> LoadedModel:
        with self._lock:
            key = (name, trust_checkpoint)
            if key not in self._models:
                self._models[key] = load_model(name, trust_checkpoint)
            return self._models[key]


#: Written into each output folder of a batch: the STAC Collection of its masks and their VRT mosaic.
COLLECTION_NAME, MOSAIC_NAME = "collection.json", "geoseg-mosaic.vrt"


def write_catalog(folder: Path, masks: list[Path], notes: list[str]) -> list[str]:
    """The STAC Collection (linking each mask's Item) and the VRT mosaic of the masks in ``folder``."""
    items = [json.loads(m.with_suffix(".json").read_text()) for m in masks if m.with_suffix(".json").is_file()]
    written = []
    if items:
        path = folder / COLLECTION_NAME
        tmp = path.with_name(f".{path.name}{PARTIAL_MARK}{os.getpid()}")
        tmp.write_text(json.dumps(collection(folder, items, folder.name or "geoseg"), indent=2) + "\n")
        os.replace(tmp, path)
        written.append(str(path))
    used, left_out = write_vrt([m for m in masks if m.is_file()], folder / MOSAIC_NAME)
    notes += left_out
    if used:
        written.append(str(folder / MOSAIC_NAME))
    return written


def write_summary(summary: BatchSummary, path: Path) -> None:
    """Write the summary JSON atomically (a reader never sees half of it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(summary.to_dict(), indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
