"""Many scenes: jobs (which scenes, where their masks go, with which settings) and the runner that
segments them, each isolated, resumable and reported. Names are imported on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from geoseg.batch.jobs import Job, expand_inputs, load_job_file
    from geoseg.batch.log import EventLog
    from geoseg.batch.runner import run_batch, write_summary
    from geoseg.batch.session import Stop, run_jobs
    from geoseg.batch.tasks import BatchSummary, SceneResult, Task, plan_tasks

_LAZY = {**dict.fromkeys(("Job", "expand_inputs", "load_job_file"), "geoseg.batch.jobs"),
         **dict.fromkeys(("BatchSummary", "SceneResult", "Task", "plan_tasks"), "geoseg.batch.tasks"),
         "EventLog": "geoseg.batch.log",
         **dict.fromkeys(("run_batch", "write_summary"), "geoseg.batch.runner"),
         **dict.fromkeys(("Stop", "run_jobs"), "geoseg.batch.session")}

__all__ = ["BatchSummary", "EventLog", "Job", "SceneResult", "Stop", "Task", "expand_inputs", "load_job_file",
           "plan_tasks", "run_batch", "run_jobs", "write_summary"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geoseg.batch' has no attribute {name!r}")
