"""Many scenes: jobs (which scenes, where their masks go, with which settings) and the runner that
segments them, each isolated, resumable and reported."""

from geoseg.batch.jobs import Job, expand_inputs, load_job_file
from geoseg.batch.runner import BatchSummary, EventLog, SceneResult, Task, plan_tasks, run_batch, write_summary

__all__ = ["BatchSummary", "EventLog", "Job", "SceneResult", "Task", "expand_inputs", "load_job_file", "plan_tasks",
           "run_batch", "write_summary"]
