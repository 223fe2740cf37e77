"""The run settings as command-line options, derived from :class:`geoseg.config.RunConfig`.

:func:`with_run_settings` gives a command one option per setting (flags, help, defaults and
bounds from the field's :class:`geoseg.config.Setting`) and hands the command a single
``settings: RunConfig``. So ``geoseg run`` and ``geoseg batch`` take exactly the same settings, and a
new field in RunConfig is a new option of both.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any, TypeVar

import typer

from geoseg.config import SETTINGS, RunConfig, Setting, value_type
from geoseg.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])


def json_option() -> Any:
    """``--json``, the same for every command: the result (or the error) as JSON on stdout, for scripts."""
    return typer.Option(False, "--json", help="Print the result as JSON on stdout (an error as {\"error\", "
                        "\"exit_code\"}).")

def with_run_settings(command: F) -> F:
    """Add every setting of RunConfig to ``command``'s options; it receives them as ``settings``."""
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.name != "settings"]
    defaults = {f.name: f.default for f in fields(RunConfig)}
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=_option(name, meta, defaults[name]),
                               annotation=_cli_type(name, meta))
             for name, meta in SETTINGS.items()]

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        try:  # RunConfig checks every value itself: the same one line as a job file or the Python API get
            settings = RunConfig(**{name: values.pop(name) for name in SETTINGS})
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from None
        return command(**values, settings=settings)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
    return wrapper  # type: ignore[return-value]


def _cli_type(name: str, meta: Setting) -> Any:
    """The type the command line parses for a setting: text where the setting parses text."""
    if meta.parse is not None:
        return str | None
    kind = value_type(name)
    return kind if RunConfig.__dataclass_fields__[name].default is not None else kind | None


def _option(name: str, meta: Setting, default: Any) -> Any:
    help_text = meta.help + (f" [default: {meta.default_text}]" if meta.default_text else "")
    extra: dict[str, Any] = {}
    if meta.default_text:
        extra["show_default"] = False
    if meta.parse is not None:
        extra["callback"] = _parser(meta.parse)
    return typer.Option(default, *meta.flags, help=help_text, **extra)


def _parser(parse: Callable[[str | None], Any]) -> Callable[[Any], Any]:
    """A typer callback turning a setting's text form into its value (checked by RunConfig afterwards)."""

    def convert(value: Any) -> Any:
        if value is None:  # an optional setting left out
            return value
        try:
            return parse(value)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc)) from None

    return convert


def cluster_options(command: F) -> F:
    """Add ``--scheduler``, ``--cluster``, ``--gpus`` and ``--cpu-workers`` to ``command``; it receives them
    as one ``cluster: ClusterSpec | None`` (None: run in this process)."""
    signature = inspect.signature(command)
    own = [p for p in signature.parameters.values() if p.name != "cluster"]
    added = [
        inspect.Parameter("scheduler", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=typer.Option(
            None, "--scheduler", help="Run on the dask.distributed cluster whose scheduler is at this address "
            "(tcp://host:8786); see workflows/README.md.", show_default=False)),
        inspect.Parameter("cluster_kind", inspect.Parameter.KEYWORD_ONLY, annotation=str | None, default=typer.Option(
            None, "--cluster", help="local: start a dask cluster on this machine (with --gpus or --cpu-workers).",
            show_default=False)),
        inspect.Parameter("gpus", inspect.Parameter.KEYWORD_ONLY, annotation=int | None, default=typer.Option(
            None, "--gpus", min=1, help="A local cluster with one worker per GPU (GPUs 0..N-1); implies --cluster "
            "local.", show_default=False)),
        inspect.Parameter("cpu_workers", inspect.Parameter.KEYWORD_ONLY, annotation=int | None, default=typer.Option(
            None, "--cpu-workers", min=1, help="A local cluster of N CPU-only worker processes; implies --cluster "
            "local.", show_default=False)),
        *[inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Path | None, default=typer.Option(
            None, flag, help=text, show_default=False)) for name, flag, text in (
            ("tls_ca_file", "--tls-ca-file", "With --scheduler tls://: the CA certificate that signed the cluster's."),
            ("tls_cert", "--tls-cert", "With --scheduler tls://: this client's certificate."),
            ("tls_key", "--tls-key", "With --scheduler tls://: this client's private key."))],
        inspect.Parameter("dashboard", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            False, "--dashboard", help="A local cluster's dask dashboard, on 127.0.0.1 (its link is printed).")),
        inspect.Parameter("local", inspect.Parameter.KEYWORD_ONLY, annotation=bool, default=typer.Option(
            False, "--local", help="Run in this process even while a geoseg service (geoseg serve) is running.")),
    ]

    @functools.wraps(command)
    def wrapper(**values: Any) -> Any:
        spec = cluster_spec(values.pop("scheduler"), values.pop("cluster_kind"), values.pop("gpus"),
                            values.pop("cpu_workers"), tls=(values.pop("tls_ca_file"), values.pop("tls_cert"),
                                                            values.pop("tls_key")), dashboard=values.pop("dashboard"),
                            local=values.pop("local"))
        return command(**values, cluster=spec)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
    return wrapper  # type: ignore[return-value]


def cluster_spec(scheduler: str | None, kind: str | None, gpus: int | None, cpu_workers: int | None,
                 tls: tuple[Path | None, ...] = (None, None, None), dashboard: bool = False,
                 local: bool = False) -> Any:
    """The :class:`geoseg.cluster.workers.ClusterSpec` the options ask for, or None for this process: with
    none of them (and no ``--local``), this user's running ``geoseg serve`` if there is one."""
    if scheduler is None and kind is None and gpus is None and cpu_workers is None:
        if any(tls) or dashboard:
            raise typer.BadParameter("--tls-* and --dashboard are for a cluster: add --scheduler ADDRESS, --gpus N or "
                                     "--cpu-workers N")
        return None if local else service_spec()
    if local:
        raise typer.BadParameter("--local runs in this process; drop it, or drop --scheduler/--cluster/--gpus/"
                                 "--cpu-workers")
    if kind not in (None, "local"):
        raise typer.BadParameter(f"--cluster {kind!r}: the only kind geoseg starts itself is 'local'; for another "
                                 f"cluster start its scheduler and pass --scheduler ADDRESS")
    from geoseg.cluster.workers import ClusterSpec

    try:
        return ClusterSpec(scheduler=scheduler, gpus=gpus, workers=cpu_workers, tls_ca_file=tls[0], tls_cert=tls[1],
                           tls_key=tls[2], dashboard=dashboard)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


def service_spec() -> Any:
    """A :class:`geoseg.cluster.workers.ClusterSpec` for this user's running service, or None."""
    from geoseg.cluster.service import running

    info = running()
    if info is None:
        return None
    from geoseg.cluster.service import credentials_dir
    from geoseg.cluster.workers import ClusterSpec

    door = Path(info.door) if info.door is not None else None  # a one-worker service's
    return ClusterSpec(scheduler=info.address, service_credentials=credentials_dir(), service_door=door)
