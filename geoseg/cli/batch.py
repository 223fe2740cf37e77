"""``geoseg batch``: many scenes from paths, globs, folders, lists or YAML job files; resumable."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from geoseg.batch.jobs import DEFAULT_TEMPLATE, LOG_NAME, SUMMARY_NAME, Job, load_job_file
from geoseg.cli.errors import printable, user_errors
from geoseg.cli.options import cluster_options, json_option, with_run_settings
from geoseg.config import SETTINGS, RunConfig
from geoseg.errors import EXIT_SIGINT, EXIT_SIGTERM

if TYPE_CHECKING:
    from geoseg.batch.runner import SceneRunner
    from geoseg.batch.tasks import SceneResult
    from geoseg.cluster.workers import ClusterSpec


@with_run_settings
@cluster_options
def batch(
    ctx: typer.Context,
    inputs: list[str] = typer.Argument(None, help="Scenes: files, globs (quoted), folders, or @list.txt files.",
                                       show_default=False, metavar="SCENE..."),
    output_dir: Path | None = typer.Option(None, "-o", "--output-dir", help="Folder for the masks of SCENES "
                                           "[default: beside each scene, as run writes; the log and summary beside "
                                           "the first]", show_default=False),
    job: list[Path] = typer.Option([], "--job", "-j", help="YAML job file (repeatable); see workflows/README.md.",
                                   metavar="FILE"),
    name: str = typer.Option(DEFAULT_TEMPLATE, "--name", help="Mask file name; fields {stem} {name} {parent} {job}."),
    force: bool = typer.Option(False, help="Redo scenes that are already done."),
    parallel: int = typer.Option(2, min=1, help="Scenes in flight at once in this process (they share the model, GPU); "
                                                    "on a cluster, each worker runs one at a time."),
    log: Path | None = typer.Option(None, help=f"JSON-lines event log [default: OUTPUT_DIR/{LOG_NAME}]"),
    summary: Path | None = typer.Option(None, help=f"Final JSON summary [default: OUTPUT_DIR/{SUMMARY_NAME}]"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-scene lines on stderr."),
    as_json: bool = json_option(),
    *,
    settings: RunConfig,
    cluster: ClusterSpec | None,
) -> None:
    """Segment many scenes; skip those already done; report every failure; exit 0, 1, 2, 130 or 143."""
    from geoseg.batch.session import Stop, run_jobs

    stop = Stop()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.request(EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT)
        print(f"geoseg: {signal.Signals(signum).name}: stopping; running scenes stop at their next block",
              file=sys.stderr)

    if cluster is not None and cluster.service and not quiet:
        from geoseg.cli.run import service_notice

        print(service_notice(cluster), file=sys.stderr)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with user_errors(as_json):
            given = _settings_given(ctx)
            # Settings typed on the command line win over the job files' (--device cpu for a job file's jobs).
            jobs = [replace(j, config=replace(j.config, **{k: getattr(settings, k) for k in given}))
                    for path in job for j in load_job_file(path)]
            if inputs:
                jobs.append(Job(name="cli", inputs=tuple(inputs), output_dir=output_dir, name_template=name,
                                config=settings))
            result = run_jobs(jobs, home=output_dir, force=force, parallel=parallel, log=log, summary=summary,
                              stop=stop, report=None if quiet else _print_line,
                              connect=_connector(cluster) if cluster is not None else None)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    for note in result.notes:
        print(printable(f"geoseg: note: {note}"), file=sys.stderr)
    counts = ", ".join(f"{n} {kind}" for kind, n in result.counts.items())
    print(f"geoseg: batch finished: {counts} (exit {result.exit_code}); summary {printable(result.files['summary'])}",
          file=sys.stderr)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
    raise typer.Exit(result.exit_code)


def _connector(cluster: ClusterSpec) -> Callable[[ExitStack], SceneRunner]:
    """Scenes as tasks on a dask cluster's workers (geoseg.cluster.scenes), connected inside the batch's log."""

    def connect(stack: ExitStack) -> SceneRunner:
        from geoseg.cluster.scenes import DaskScenes
        from geoseg.cluster.workers import connect as connect_cluster

        return DaskScenes(stack.enter_context(connect_cluster(cluster)))

    return connect


def _settings_given(ctx: typer.Context) -> set[str]:
    """The run settings typed on this command line (not left at their defaults). Compared by name: typer may
    bring its own copy of click, whose enum is not click's."""
    return {name for name in SETTINGS if getattr(ctx.get_parameter_source(name), "name", None) == "COMMANDLINE"}


def _print_line(r: SceneResult, finished: int, total: int) -> None:
    error = (r.error or "").removeprefix(f"{r.input}: ")  # the path is said once, at the start of the line
    detail = {"done": f"{r.seconds:.1f} s", "skipped": r.reason or "already done", "cancelled": error,
              "failed": error}[r.status]
    from geoseg.io.names import remote_name, shown_source

    shown = shown_source(remote_name(r.input) or str(r.input))  # a URL as typed (a path object folds its "//")
    print(printable(f"[{finished}/{total}] {r.status:9} {shown}: {detail}"), file=sys.stderr, flush=True)
    for warning in r.warnings:  # input sanity and other notes, as `geoseg run` prints them
        print(printable(f"    warning: {warning}"), file=sys.stderr, flush=True)
