"""``geoseg serve start|stop|status``: the warm local service that ``run`` and ``batch`` use while it runs."""

from __future__ import annotations

import json
import time

import typer
from rich.console import Console
from rich.table import Table

from geoseg.cli.errors import user_errors
from geoseg.cli.options import json_option
from geoseg.cluster.service import DEFAULT_IDLE_TIMEOUT_S, ServiceInfo
from geoseg.errors import EXIT_NOT_RUNNING

serve = typer.Typer(help="A warm local service: models stay loaded between runs; run and batch use it while it "
                    "runs (--local bypasses it).", no_args_is_help=True)


@serve.command()
def start(
    gpus: int | None = typer.Option(None, "--gpus", min=1, help="One worker per GPU, GPUs 0..N-1 [default: every "
                                    "visible GPU, else one CPU worker].", show_default=False),
    cpu_workers: int | None = typer.Option(None, "--cpu-workers", min=1, help="CPU-only worker processes instead.",
                                           show_default=False),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Reader threads per worker [default: the "
                                       "cores shared out].", show_default=False),
    idle_timeout: float = typer.Option(DEFAULT_IDLE_TIMEOUT_S, "--idle-timeout", min=0, help="Exit after this many "
                                       "seconds without work (0: never)."),
    preload: list[str] = typer.Option([], "--model", help="Load this model on every worker now and run it once "
                                      "on a small synthetic scene (repeatable), so that the first run finds it warm.",
                                      metavar="NAME"),
    as_json: bool = json_option(),
) -> None:
    """Start the service in the background (127.0.0.1 only, TLS with credentials made for you)."""
    from geoseg.cluster import service
    from geoseg.cluster.workers import model_for_workers

    with user_errors(as_json):
        spec = service.ServiceSpec(gpus=gpus, cpu_workers=cpu_workers, threads=threads, idle_timeout_s=idle_timeout,
                                   preload=tuple(model_for_workers(m) for m in preload))
        info = service.start(spec)
    _report(info, as_json, "started")


@serve.command()
def stop(as_json: bool = json_option()) -> None:
    """Stop the service (its workers finish nothing further; running scenes leave no partial file)."""
    from geoseg.cluster import service

    with user_errors(as_json):
        info = service.stop()
    if as_json:
        print(json.dumps({"stopped": info is not None, **({"pid": info.pid} if info else {})}))
    elif info is None:
        print("geoseg: no service was running")
    else:
        print(f"geoseg: service stopped (pid {info.pid})")


@serve.command()
def status(as_json: bool = json_option()) -> None:
    """Say whether the service runs, where, with which workers; exit 8 when it does not run."""
    from geoseg.cluster import service

    with user_errors(as_json):
        info = service.running()
    if info is None:
        if as_json:
            print(json.dumps({"running": False}))
        else:
            print("geoseg: no service running (geoseg serve start starts one)")
        raise typer.Exit(EXIT_NOT_RUNNING)
    _report(info, as_json, "running")


def _report(info: ServiceInfo, as_json: bool, state: str) -> None:
    if as_json:
        print(json.dumps({"running": True, **info.to_dict()}, indent=2))
        return
    table = Table(title=f"geoseg service: {state}", show_header=False, title_justify="left")
    table.add_row("address", info.address)
    kind = "GPU" if info.gpus else "CPU"
    table.add_row("workers", f"{info.workers} {kind} worker(s), {info.threads} thread(s) each")
    table.add_row("pid", str(info.pid))
    table.add_row("since", f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info.started))} "
                           f"({info.uptime_s:.0f} s)")
    table.add_row("idle timeout", f"{info.idle_timeout_s:g} s" if info.idle_timeout_s else "none")
    table.add_row("log", info.log)
    Console().print(table)
