"""``geoseg batch``: many scenes from paths, globs, folders, lists or YAML job files; resumable."""

from __future__ import annotations

import json
import signal
import sys
import threading
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from geoseg.batch.jobs import DEFAULT_TEMPLATE, Job, load_job_file
from geoseg.cli.errors import printable, user_errors
from geoseg.cli.options import cluster_options, with_run_settings
from geoseg.config import SETTINGS, RunConfig
from geoseg.errors import EXIT_SIGINT, EXIT_SIGTERM, ConfigError, GeosegError

if TYPE_CHECKING:
    from geoseg.batch.runner import SceneResult
    from geoseg.cluster.workers import ClusterSpec

LOG_NAME, SUMMARY_NAME = "geoseg-batch.jsonl", "geoseg-batch-summary.json"


@with_run_settings
@cluster_options
def batch(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(None, help="Scenes: files, globs (quoted), folders, or @list.txt files.",
                                       show_default=False),
    output_dir: Path | None = typer.Option(None, "-o", "--output-dir", help="Folder for the masks of INPUTS."),
    job: list[Path] = typer.Option([], "--job", "-j", help="YAML job file (repeatable); see workflows/README.md."),
    name: str = typer.Option(DEFAULT_TEMPLATE, "--name", help="Mask file name; fields {stem} {name} {parent} {job}."),
    force: bool = typer.Option(False, help="Redo scenes that are already done."),
    parallel: int = typer.Option(2, min=1, help="Scenes in flight at once in this process (they share the model, GPU); "
                                                    "on a cluster, each worker runs one at a time."),
    log: Path | None = typer.Option(None, help=f"JSON-lines event log [default: OUTPUT_DIR/{LOG_NAME}]"),
    summary: Path | None = typer.Option(None, help=f"Final JSON summary [default: OUTPUT_DIR/{SUMMARY_NAME}]"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-scene lines on stderr."),
    *,
    settings: RunConfig,
    cluster: ClusterSpec | None,
) -> None:
    """Segment many scenes; skip those already done; report every failure; exit 0, 1, 2, 130 or 143."""
    with user_errors():
        given = _settings_given(ctx)
        # Settings typed on the command line win over the job files' (--device cpu for a job file's jobs).
        jobs = [replace(j, config=replace(j.config, **{k: getattr(settings, k) for k in given}))
                for path in job for j in load_job_file(path)]
        if inputs:
            if output_dir is None:
                raise ConfigError("scenes given without -o/--output-dir; say where their masks go")
            jobs.append(Job(name="cli", inputs=tuple(inputs), output_dir=output_dir, name_template=name,
                            config=settings))
        if not jobs:
            raise ConfigError("nothing to do: give scenes and -o DIR, or --job FILE")
        from geoseg.batch.runner import EventLog, plan_tasks, run_batch, write_summary

        tasks, notes = plan_tasks(jobs)
        home = output_dir or jobs[0].output_dir
        for folder in {t.output.parent for t in tasks} | {home}:
            _make_folder(folder)

    cancel, stop = threading.Event(), {"code": 0}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop["code"] = EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
        cancel.set()
        print(f"geoseg: {signal.Signals(signum).name}: stopping; running scenes stop at their next block",
              file=sys.stderr)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with user_errors(), EventLog(log or home / LOG_NAME) as events, ExitStack() as stack:
            runner = None
            if cluster is not None:  # scenes as tasks on a dask cluster's workers (geoseg.cluster.scenes)
                from geoseg.cluster.scenes import DaskScenes
                from geoseg.cluster.workers import connect

                try:
                    runner = DaskScenes(stack.enter_context(connect(cluster)))
                except GeosegError as exc:  # the nightly job's log says why nothing ran
                    events.emit("batch_failed", error=str(exc), error_kind=type(exc).__name__)
                    raise
            result = run_batch(tasks, force=force, parallel=parallel, log=events, cancel=cancel,
                               report=None if quiet else _print_line, notes=notes, runner=runner)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    code = stop["code"] or result.exit_code
    result.exit_code = code
    with user_errors():
        write_summary(result, summary or home / SUMMARY_NAME)
    for note in notes:
        print(printable(f"geoseg: note: {note}"), file=sys.stderr)
    print(json.dumps({"counts": result.counts, "exit_code": code, "summary": str(summary or home / SUMMARY_NAME)}),
          file=sys.stderr)
    raise typer.Exit(code)


def _settings_given(ctx: typer.Context) -> set[str]:
    """The run settings typed on this command line (not left at their defaults). Compared by name: typer may
    bring its own copy of click, whose enum is not click's."""
    return {name for name in SETTINGS if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}


def _print_line(r: SceneResult, finished: int, total: int) -> None:
    error = (r.error or "").removeprefix(f"{r.input}: ")  # the path is said once, at the start of the line
    detail = {"done": f"{r.seconds:.1f} s", "skipped": r.reason or "already done", "cancelled": error,
              "failed": error}[r.status]
    print(printable(f"[{finished}/{total}] {r.status:9} {r.input}: {detail}"), file=sys.stderr, flush=True)
    for warning in r.warnings:  # input sanity and other notes, as `geoseg run` prints them
        print(printable(f"    warning: {warning}"), file=sys.stderr, flush=True)


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{folder}: output folder cannot be created ({exc.strerror}); choose another") from None



