"""A batch's scenes as dask tasks: :class:`DaskScenes` is the :class:`geoseg.batch.runner.SceneRunner`
behind ``geoseg batch --scheduler/--cluster``.

Each task is :func:`run_remote`: :func:`geoseg.batch.runner.run_task` on a worker, with the worker's
resident models and device session (:data:`geoseg.engine.resident.RESIDENT`), the batch's claim owner
(the batch process, which refreshes the claims) and its events recorded and handed back, so the batch
writes one log and one summary exactly as a local batch does. Masks are written by the worker, into
the output folder (a shared file system on a multi-machine cluster), atomically as always. A worker
that dies mid-scene (killed, out of memory) leaves only a temporary file; dask runs the task again on
another worker, which claims the scene as the same batch's and writes the mask whole.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.cluster.workers import model_for_workers, scene_resources
from geoseg.errors import no_such_file
from geoseg.io.names import remote_name

if TYPE_CHECKING:  # the batch's runner imports torch: a client of the service (segment_scene_as_task) never needs it
    from geoseg.batch.claims import Owner
    from geoseg.batch.tasks import SceneResult, Task
    from geoseg.config import RunConfig
    from geoseg.prepare import VectorRequest
    from geoseg.summary import RunSummary

#: How often a running scene asks the scheduler whether the batch was cancelled (seconds).
CANCEL_POLL_S = 0.5
#: How long an interrupted client waits for its cancelled scene to end on the worker (seconds).
CANCEL_WAIT_S = 30


class DaskScenes:
    """Submits scenes to a ``distributed.Client`` (see module docstring)."""

    def __init__(self, client: Any):
        self.client = client
        self.resources = scene_resources(client)
        self.cancel_name = f"geoseg-cancel-{uuid.uuid4().hex[:12]}"
        self._futures: list[Any] = []  # held: a released dask future forgets its task

    def submit(self, task: Task, force: bool, owner: Owner) -> Future:
        # Workers may run elsewhere: absolute paths there; the batch reports the paths as given.
        where = replace(task, input=task.input.absolute(), output=task.output.absolute(),
                        config=replace(task.config, model=model_for_workers(task.config.model)))
        remote = self.client.submit(run_remote, where, force, owner, self.cancel_name, pure=False,
                                    resources=self.resources, key=f"geoseg-scene-{uuid.uuid4().hex}")
        self._futures.append(remote)
        local: Future = Future()

        def settle(done: Any) -> None:
            try:
                result, events = done.result()
                given = {"input": str(task.input), "output": str(task.output)}
                local.set_result((replace(result, **given), [{**e, **given} if "input" in e else e for e in events]))
            except BaseException as exc:  # handed to the batch, which records it for the scene
                local.set_exception(exc)

        remote.add_done_callback(settle)
        return local

    def cancel(self) -> None:
        """Running scenes stop at their next block (they poll the batch's cancel event); scenes not started
        return at once as cancelled. Each still reports back, with its events, and releases its claim."""
        from distributed import Event

        Event(self.cancel_name, client=self.client).set()


def run_remote(task: Task, force: bool, owner: Owner, cancel_name: str) -> tuple[SceneResult, list[dict]]:
    """One scene on a dask worker (see module docstring)."""
    from distributed import get_worker

    from geoseg.batch.log import EventLog
    from geoseg.batch.runner import run_task
    from geoseg.cluster.workers import relax_malloc
    from geoseg.engine.resident import RESIDENT, ModelRef

    relax_malloc()
    worker = get_worker()
    if task.config.workers is None:  # reader threads: the worker's cores (it runs one scene at a time)
        task = replace(task, config=replace(task.config, workers=max(1, worker.state.nthreads)))
    log = EventLog(None, record=True)
    with cancel_watch(cancel_name) as cancel:  # on the worker's device thread: its cuDNN plans are warm
        result = RESIDENT.on_device_thread(lambda: run_task(
            task, force, lambda name, trust: RESIDENT.model(ModelRef(name, trust)), cancel, log, RESIDENT.session,
            owner))
    return result, log.events or []


@contextmanager
def cancel_watch(cancel_name: str) -> Iterator[threading.Event]:
    """On a worker: an event set once the dask ``Event`` named ``cancel_name`` is (polled every
    :data:`CANCEL_POLL_S`), for the engine's ``cancel``."""
    from distributed import Event

    cancel, finished = threading.Event(), threading.Event()
    flag = Event(cancel_name)

    def watch() -> None:
        while not finished.wait(CANCEL_POLL_S):
            try:
                if flag.is_set():
                    cancel.set()
                    return
            except Exception:  # the scheduler went away: the scene goes on
                return

    if flag.is_set():  # cancelled before it started
        cancel.set()
    watcher = threading.Thread(target=watch, name="geoseg-cancel", daemon=True)
    watcher.start()
    try:
        yield cancel
    finally:
        finished.set()


@dataclass(frozen=True)
class SceneTask:
    """``geoseg run``'s scene as a worker receives it (:func:`scene_task`): local paths absolute, URLs as given,
    the model named as workers find it, the client's folder (where a URL's mask lands) and the name of the dask
    event that cancels it. Plain values only, so that it travels as JSON (:mod:`geoseg.cluster.door`)."""

    scenes: tuple[Path | str, ...]
    output: Path | None
    config: RunConfig
    vector: VectorRequest | None
    cwd: Path
    cancel_name: str

    def to_json(self) -> dict[str, Any]:
        return {"scenes": [str(s) for s in self.scenes], "output": None if self.output is None else str(self.output),
                "config": self.config.to_json(), "cwd": str(self.cwd), "cancel_name": self.cancel_name,
                "vector": None if self.vector is None else {**asdict(self.vector), "path": str(self.vector.path)}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SceneTask:
        from geoseg.config import RunConfig
        from geoseg.prepare import VectorRequest

        vector = data["vector"]
        return cls(scenes=tuple(s if _far(s) else Path(s) for s in data["scenes"]),
                   output=None if data["output"] is None else Path(data["output"]),
                   config=RunConfig.from_json(data["config"]), cwd=Path(data["cwd"]),
                   cancel_name=str(data["cancel_name"]),
                   vector=None if vector is None else VectorRequest(**{**vector, "path": Path(vector["path"])}))


def _far(scene: str | Path) -> bool:
    """Whether the worker reads ``scene`` as given (a URL, a GDAL virtual path) rather than as a file here."""
    return remote_name(scene) is not None or str(scene).startswith("/vsi")


def scene_task(scenes: Sequence[str | Path], output: str | Path | None, config: RunConfig,
               vector: VectorRequest | None = None) -> SceneTask:
    """The :class:`SceneTask` for ``geoseg run``'s ``scenes`` (one raster, a STAC Item, a product folder or one
    file per band): the one check made in the calling process is a mistyped path, named as typed; the worker
    checks the rest and reports a mistake as a local run would, so the caller never opens a raster."""
    for given in scenes:
        if not _far(given) and not Path(given).exists():
            raise no_such_file(given)
    return SceneTask(scenes=tuple(str(s) if _far(s) else Path(s).absolute() for s in scenes),
                     output=None if output is None else Path(output).absolute(), config=replace(
                         config, model=model_for_workers(config.model)),
                     vector=None if vector is None else replace(vector, path=vector.path.absolute()),
                     cwd=Path.cwd(), cancel_name=f"geoseg-cancel-{uuid.uuid4().hex[:12]}")


def submit_scene(client: Any, task: SceneTask) -> Any:
    """``task`` as one dask task (:func:`segment_remote`) on a worker that runs one scene at a time."""
    return client.submit(segment_remote, list(task.scenes), task.output, task.config, task.vector,
                         task.cancel_name, task.cwd, pure=False, resources=scene_resources(client),
                         key=f"geoseg-scene-{uuid.uuid4().hex}")


def cancel_scene(client: Any, task: SceneTask, remote: Any) -> None:
    """Stop ``task`` at its next block and wait (up to :data:`CANCEL_WAIT_S`) until its staging is removed."""
    from distributed import Event

    Event(task.cancel_name, client=client).set()
    with suppress(BaseException):
        remote.result(timeout=CANCEL_WAIT_S)


def as_given(summary: RunSummary, scenes: Sequence[str | Path], output: str | Path | None,
             vector: VectorRequest | None = None) -> RunSummary:
    """``summary`` (the worker's, with absolute paths) naming its files as the caller gave them: the product lies
    beside the output asked for (or the first input; a URL's in the current folder), the polygon layer where
    ``vector`` named it."""
    here = Path(output).parent if output is not None else Path(".") if _far(scenes[0]) else Path(scenes[0]).parent
    written = here.absolute()

    def shown(path: str) -> str:
        return str(here / Path(path).relative_to(written)) if Path(path).is_relative_to(written) else path

    layer = summary.vector if summary.vector is None or vector is None else {**summary.vector, "path": str(vector.path)}
    return replace(summary, input=shown(summary.input), output=shown(summary.output),
                   device=f"1 dask worker(s): {summary.device}", vector=layer,
                   files={kind: shown(path) for kind, path in summary.files.items()})


def segment_scene_as_task(client: Any, scenes: Sequence[str | Path], output: str | Path | None, config: RunConfig,
                          vector: VectorRequest | None = None) -> RunSummary:
    """One scene as one task on a worker, which runs the file engine with its resident model and writes the
    product (a one-worker cluster or ``geoseg serve``: no row strips to share out); see :func:`scene_task`.
    Interrupted here, the task is cancelled at its next block and leaves no output."""
    task = scene_task(scenes, output, config, vector)
    remote = submit_scene(client, task)
    try:
        summary = remote.result()
    except BaseException:
        cancel_scene(client, task, remote)
        raise
    return as_given(summary, scenes, output, vector)


def segment_remote(scenes: list[Path | str], output: Path | None, config: RunConfig, vector: VectorRequest | None,
                   cancel_name: str, cwd: Path | None = None) -> RunSummary:
    """On a worker: ``geoseg run``'s inputs stacked where needed (:func:`geoseg.io.stack.stack_input`), then
    :func:`geoseg.run.segment_scene` with the worker's resident models and device session."""
    from distributed import get_worker

    from geoseg.cluster.workers import relax_malloc
    from geoseg.engine.resident import RESIDENT, ModelRef
    from geoseg.io.stack import stack_input
    from geoseg.run import segment_scene

    relax_malloc()
    scene, output = stack_input(scenes, output, config.overwrite, cwd)  # cwd: the client's, for a URL's mask
    if config.workers is None:  # reader threads: the worker's cores (it runs one scene at a time)
        config = replace(config, workers=max(1, get_worker().state.nthreads))
    with cancel_watch(cancel_name) as cancel:  # on the worker's device thread: its cuDNN plans are warm
        return RESIDENT.on_device_thread(lambda: segment_scene(
            scene, output, config, loader=lambda name, trust: RESIDENT.model(ModelRef(name, trust)), cancel=cancel,
            session=RESIDENT.session, vector=vector))
