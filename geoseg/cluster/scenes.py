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
from concurrent.futures import Future
from dataclasses import replace
from typing import Any

from geoseg.batch.claims import Owner
from geoseg.batch.runner import EventLog, SceneResult, Task, run_task
from geoseg.cluster.workers import scene_resources

#: How often a running scene asks the scheduler whether the batch was cancelled (seconds).
CANCEL_POLL_S = 0.5


class DaskScenes:
    """Submits scenes to a ``distributed.Client`` (see module docstring)."""

    def __init__(self, client: Any):
        self.client = client
        self.resources = scene_resources(client)
        self.cancel_name = f"geoseg-cancel-{uuid.uuid4().hex[:12]}"
        self._futures: list[Any] = []  # held: a released dask future forgets its task

    def submit(self, task: Task, force: bool, owner: Owner) -> Future:
        # Workers may run elsewhere: absolute paths there; the batch reports the paths as given.
        where = replace(task, input=task.input.absolute(), output=task.output.absolute())
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
    from distributed import Event, get_worker

    from geoseg.cluster.workers import relax_malloc
    from geoseg.engine.resident import RESIDENT, ModelRef

    relax_malloc()
    worker = get_worker()
    if task.config.workers is None:  # reader threads: the worker's cores (it runs one scene at a time)
        task = replace(task, config=replace(task.config, workers=max(1, worker.state.nthreads)))
    log = EventLog(None, record=True)
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
        result = run_task(task, force, lambda name, trust: RESIDENT.model(ModelRef(name, trust)), cancel, log,
                          RESIDENT.session, owner)
    finally:
        finished.set()
    return result, log.events or []
