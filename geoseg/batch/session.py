"""``run_jobs``: a whole batch as one library call, what ``geoseg batch`` and a scheduler's script do.

It plans the jobs' scenes (:func:`~geoseg.batch.tasks.plan_tasks`), makes their output folders, opens the
JSON-lines log (:data:`LOG_NAME` in the first job's output folder, or beside the first mask where masks go
beside their scenes, unless told otherwise), runs the scenes in
this process or on the :class:`~geoseg.batch.runner.SceneRunner` that ``connect`` makes (a dask cluster: the
cluster layer lives above this one, so its caller connects), writes the summary (:data:`SUMMARY_NAME`) and
returns it with the batch's exit code: 0 all done or skipped, 1 some scenes failed, 130 / 143 when ``stop``
was set by SIGINT / SIGTERM. A cluster that cannot be reached is written into the log before the error is
raised, so a nightly job's log always says why nothing ran.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

from geoseg.batch.jobs import LOG_NAME, SUMMARY_NAME, Job
from geoseg.batch.log import EventLog
from geoseg.batch.runner import SceneRunner, run_batch, write_summary
from geoseg.batch.tasks import BatchSummary, SceneResult, plan_tasks
from geoseg.errors import ConfigError, GeosegError


class Stop(threading.Event):
    """A batch asked to stop (set it from a signal handler), with the exit code that says why."""

    code = 0

    def request(self, code: int) -> None:
        self.code = code
        self.set()


def run_jobs(jobs: list[Job], *, home: Path | None = None, force: bool = False, parallel: int = 2,
             log: Path | None = None, summary: Path | None = None, stop: Stop | None = None,
             report: Callable[[SceneResult, int, int], None] | None = None,
             connect: Callable[[ExitStack], SceneRunner] | None = None) -> BatchSummary:
    """Run ``jobs`` (see module docstring) and return the summary, written to ``summary`` or
    ``home / SUMMARY_NAME`` (``home``: the first job's output folder by default)."""
    if not jobs:
        raise ConfigError("nothing to do: give scenes and -o DIR, or --job FILE")
    tasks, notes = plan_tasks(jobs)
    home = home or jobs[0].output_dir or (tasks[0].output.parent if tasks else Path.cwd())
    for folder in sorted({t.output.parent for t in tasks} | {home}):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"{folder}: output folder cannot be created ({exc.strerror}); choose another") from None
    stop = stop or Stop()
    log_path, summary_path = log or home / LOG_NAME, summary or home / SUMMARY_NAME
    with EventLog(log_path) as events, ExitStack() as stack:
        runner = None
        if connect is not None:
            try:
                runner = connect(stack)
            except GeosegError as exc:
                events.emit("batch_failed", error=str(exc), error_kind=type(exc).__name__)
                raise
        result = run_batch(tasks, force=force, parallel=parallel, log=events, cancel=stop, report=report,
                           notes=notes, runner=runner)
    result = replace(result, exit_code=stop.code or result.exit_code,
                     files={"log": str(log_path), "summary": str(summary_path)})
    write_summary(result, summary_path)
    return result
