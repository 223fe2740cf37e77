"""A warm local service: ``geoseg serve start|stop|status``.

A cold ``geoseg run`` pays for Python's imports, the CUDA context, the network's build and its first
kernels before it does a scene's work. The service pays them once: a background process runs a dask
scheduler on this machine with one worker per GPU (or ``--cpu-workers N``), whose models, placed
networks and CUDA graphs stay resident between runs (:data:`geoseg.engine.resident.RESIDENT`). While it
runs, ``geoseg run`` and ``geoseg batch`` send their scenes to it (``--local`` runs in the calling process
instead); a single scene on a one-worker service runs the file engine on the worker as one task, which
writes the output there (as a batch's scene does), and only several workers share one scene in row strips.

Where it keeps its files (one user's, never shared):

* ``$XDG_STATE_HOME/geoseg/service/`` (default ``~/.local/state/geoseg/service/``): ``service.pid``,
  ``service.json`` (address, workers, idle timeout, written once the cluster is up) and ``service.log``;
* ``$XDG_CONFIG_HOME/geoseg/service/`` (default ``~/.config/geoseg/service/``): the TLS credentials.

dask runs the pickled code it is sent, so the service is a door into the user's account. It listens on
127.0.0.1 only and speaks TLS with mutual authentication: at each start a key and a self-signed
certificate are made for the user (folder 0700, files 0600), and the scheduler and workers accept only a
peer that presents that certificate. Another local user cannot read the key, a remote host cannot reach
the port, and dask's HTTP servers serve nothing. After ``idle_timeout`` seconds without a task, the
scheduler closes (dask's ``idle_timeout``) and the service exits, removing its files; ``kill -9`` leaves a
stale pidfile, which every command recognises (the process is gone) and clears.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, DeviceError, OutputError

#: Seconds without a task after which the service exits (``geoseg serve start --idle-timeout``).
DEFAULT_IDLE_TIMEOUT_S = 3600
#: How long ``start`` waits for the cluster to come up (the workers import torch and smp).
START_TIMEOUT_S = 180
#: How long ``stop`` waits for the service to close its workers before it kills them.
STOP_TIMEOUT_S = 30
#: A worker whose scheduler is gone (the service killed) exits after this many seconds.
WORKER_DEATH_TIMEOUT_S = 15
#: The module the service process runs; also how ``running`` tells the service from a reused pid.
SERVICE_MODULE = "geoseg.cluster.service"


def _user_folder(variable: str, fallback: str) -> Path:
    base = os.environ.get(variable) or str(Path.home() / fallback)
    return Path(base) / "geoseg" / "service"


def state_dir() -> Path:
    """The service's pidfile, address file and log: ``$XDG_STATE_HOME/geoseg/service``."""
    return _user_folder("XDG_STATE_HOME", ".local/state")


def credentials_dir() -> Path:
    """The service's TLS key and certificate: ``$XDG_CONFIG_HOME/geoseg/service``."""
    return _user_folder("XDG_CONFIG_HOME", ".config")


def _private_folder(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    return folder


@dataclass(frozen=True)
class ServiceInfo:
    """What ``service.json`` holds about a running service."""

    pid: int
    address: str
    workers: int
    gpus: bool
    threads: int
    idle_timeout_s: float
    started: float
    version: str
    log: str
    #: The service's own door for a one-worker ``geoseg run`` (:mod:`geoseg.cluster.door`), or None.
    door: str | None = None

    @property
    def uptime_s(self) -> float:
        return time.time() - self.started

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "uptime_s": round(self.uptime_s, 1)}


def _paths() -> tuple[Path, Path, Path]:
    folder = state_dir()
    return folder / "service.pid", folder / "service.json", folder / "service.log"


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a running geoseg service process (not a pid reused by another program)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: not this user's service
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (not Linux): trust the signal
    return SERVICE_MODULE.encode() in cmdline  # a zombie's command line is empty


def _read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().strip())
    except (OSError, ValueError):  # none, or half written
        return None


def running() -> ServiceInfo | None:
    """The running service, or None; a stale pidfile or address file (its process gone) is removed."""
    pid_file, info_file, _ = _paths()
    if not pid_file.exists() and not info_file.exists():
        return None
    pid = _read_pid(pid_file)
    if pid is None or not _alive(pid):
        _clear(pid_file, info_file)
        return None
    try:
        return ServiceInfo(**json.loads(info_file.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # starting: the address is not written yet


def _clear(pid_file: Path, info_file: Path) -> None:
    """Remove what a service whose process is gone left: its pidfile, address file and door (a killed service
    removes none of them)."""
    from geoseg.cluster.door import SOCKET_NAME

    for f in (pid_file, info_file, pid_file.parent / SOCKET_NAME):
        f.unlink(missing_ok=True)


def security() -> Any:
    """The service's TLS settings from this user's credential files."""
    from geoseg.cluster.workers import folder_security

    return folder_security(credentials_dir())


def make_credentials(folder: Path | None = None) -> Path:
    """A new key and self-signed certificate for this user's service, files 0600 in a 0700 folder."""
    from geoseg.cluster.workers import local_security

    folder = _private_folder(folder or credentials_dir())
    made = local_security()  # dask's Security.temporary(): the PEM texts in memory
    for name, text in (("cert.pem", made.tls_ca_file), ("key.pem", made.tls_client_key)):
        path = folder / name
        path.unlink(missing_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(text)
    return folder


@dataclass(frozen=True)
class ServiceSpec:
    """What ``geoseg serve start`` asks for: ``gpus`` GPU workers, or ``cpu_workers`` CPU workers (default:
    one per GPU where there are GPUs, else one CPU worker), ``threads`` each, and the idle timeout."""

    gpus: int | None = None
    cpu_workers: int | None = None
    threads: int | None = None
    idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S
    #: Models loaded and run once on every worker at start (:mod:`geoseg.cluster.warmup`), so that the first
    #: run finds them warm; a model folder is named absolute (the service runs in ``/``).
    preload: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.gpus and self.cpu_workers:
            raise ConfigError("give --gpus N (one worker per GPU) or --cpu-workers N, not both")
        if self.idle_timeout_s < 0:
            raise ConfigError(f"--idle-timeout {self.idle_timeout_s:g} must be >= 0 (0: never)")
        for name in ("gpus", "cpu_workers", "threads"):
            value = getattr(self, name)
            if value is not None and not 1 <= value <= 1024:
                raise ConfigError(f"--{name.replace('_', '-')} {value} must be between 1 and 1024")

    def args(self) -> list[str]:
        out = ["--idle-timeout", str(self.idle_timeout_s)]
        for name in ("gpus", "cpu_workers", "threads"):
            if getattr(self, name) is not None:
                out += [f"--{name.replace('_', '-')}", str(getattr(self, name))]
        for model in self.preload:
            out += ["--preload", model]
        return out


def start(spec: ServiceSpec, wait_s: float = START_TIMEOUT_S) -> ServiceInfo:
    """Start the service in the background and return once it accepts work (see module docstring)."""
    found = running()
    if found is not None:
        raise ConfigError(f"a geoseg service is already running (pid {found.pid}, {found.address}); stop it with "
                          f"geoseg serve stop first")
    pid_file, _, log_file = _paths()
    if pid_file.exists():
        raise ConfigError(f"a geoseg service is starting (pid file {pid_file}); wait, or geoseg serve stop")
    try:
        _private_folder(state_dir())
        make_credentials()
        with open(log_file, "ab") as log:
            os.chmod(log_file, 0o600)
            child = subprocess.Popen([sys.executable, "-m", SERVICE_MODULE, *spec.args()], stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd="/",
                                     env={**os.environ, "PYTHONPATH": _python_path()})
    except OSError as exc:
        raise OutputError(f"{exc.filename or state_dir()}: the service's files cannot be written ({exc.strerror}); "
                          f"check $XDG_STATE_HOME and $XDG_CONFIG_HOME and their permissions") from None
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise DeviceError(f"the geoseg service exited at start ({_last_line(log_file)}); see {log_file}")
        info = running()
        if info is not None and info.pid == child.pid:
            return info
        time.sleep(0.2)
    _terminate(child.pid)
    raise DeviceError(f"the geoseg service did not come up within {wait_s:g} s; see {log_file}")


def _python_path() -> str:
    """The calling process's import path for the service (a source checkout runs as it was imported)."""
    here = str(Path(__file__).resolve().parents[2])
    return os.pathsep.join([here, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])


def _last_line(log_file: Path) -> str:
    try:
        lines = [line for line in log_file.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def stop(wait_s: float = STOP_TIMEOUT_S) -> ServiceInfo | None:
    """Stop the running service (SIGTERM, then SIGKILL after ``wait_s``); None when none was running."""
    pid_file, info_file, _ = _paths()
    info = running()
    pid = _read_pid(pid_file)
    if pid is None or (info is None and not _alive(pid)):
        return None
    _terminate(pid, wait_s)
    _clear(pid_file, info_file)
    return info


def _terminate(pid: int, wait_s: float = STOP_TIMEOUT_S) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)  # the service leads its session: its workers go with it


@contextmanager
def client(info: ServiceInfo) -> Iterator[Any]:
    """A ``distributed.Client`` of the running service ``info``."""
    from distributed import Client

    try:
        connected = Client(info.address, security=security(), timeout=30)
    except (OSError, TimeoutError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise DeviceError(f"the geoseg service (pid {info.pid}) does not answer at {info.address} ({first}); "
                          f"restart it (geoseg serve stop; geoseg serve start) or use --local") from None
    try:
        yield connected
    finally:
        connected.close()


# -- the service process ---------------------------------------------------------------------------
def serve(spec: ServiceSpec) -> int:
    """The service process's life: pidfile, cluster, address file, wait, clean-up (see module docstring)."""
    import dask
    from distributed import Client, Nanny, Scheduler, SpecCluster

    from geoseg.cluster.door import close_door, open_door
    from geoseg.cluster.warmup import warm_up
    from geoseg.cluster.workers import LOOPBACK, SCENE_RESOURCE, worker_environment
    from geoseg.io.integrity import write_text
    from geoseg.version import __version__

    pid_file, info_file, log_file = _paths()
    fd = os.open(pid_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"{os.getpid()}\n")
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    try:
        gpus = spec.gpus
        if gpus is None and spec.cpu_workers is None:
            gpus = _visible_gpus() or None
        count = gpus or spec.cpu_workers or 1
        threads = spec.threads or max(1, (os.cpu_count() or 1) // count)
        sec = security()
        workers = {f"geoseg-{i}": {"cls": Nanny, "options": {
            "nthreads": threads, "env": {"CUDA_VISIBLE_DEVICES": str(i)} if gpus else {},
            "resources": {SCENE_RESOURCE: 1}, "name": f"geoseg-{i}", "memory_limit": 0, "silence_logs": 40,
            "host": LOOPBACK, "security": sec, "protocol": "tls://", "death_timeout": WORKER_DEATH_TIMEOUT_S}}
            for i in range(count)}
        scheduler = {"host": LOOPBACK, "protocol": "tls://", "security": sec, "dashboard": False,
                     "idle_timeout": spec.idle_timeout_s or None}
        quiet_http = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}
        with dask.config.set({**worker_environment(threads), **quiet_http}):
            cluster = SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": scheduler},
                                  silence_logs=40, security=sec)
        door = connected = None
        try:
            connected = Client(cluster, security=sec)  # the preloads', then the door's (geoseg.cluster.door)
            for model in spec.preload:  # loaded and run once on every worker (geoseg.cluster.warmup)
                for worker, done in connected.run(warm_up, model).items():
                    print(f"geoseg service: {model} warmed up on {worker}: {done}", flush=True)
            door = open_door(pid_file.parent, connected) if count == 1 else None  # several share a scene in strips
            info = ServiceInfo(pid=os.getpid(), address=cluster.scheduler_address, workers=count, gpus=bool(gpus),
                               threads=threads, idle_timeout_s=spec.idle_timeout_s, started=time.time(),
                               version=__version__, log=str(log_file), door=None if door is None else str(door.path))
            cluster.scheduler.idle_since = time.time()  # idle from now: the workers' start is no idle time
            partial = info_file.with_name(f".{info_file.name}.{os.getpid()}")
            write_text(partial, json.dumps(asdict(info)), info_file)
            os.replace(partial, info_file)  # whole or absent: clients read it while it is written
            print(f"geoseg service: {count} worker(s) at {info.address}", flush=True)
            while not stopping.wait(0.5):
                if cluster.scheduler.status.name in ("closing", "closed", "failed"):
                    print("geoseg service: idle timeout reached; exiting", flush=True)
                    break
        finally:
            close_door(door)
            if connected is not None:
                connected.close()
            cluster.close(timeout=STOP_TIMEOUT_S)
    finally:
        info_file.unlink(missing_ok=True)
        pid_file.unlink(missing_ok=True)
    return 0


def _visible_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {SERVICE_MODULE}", description="geoseg's service process "
                                     "(start it with geoseg serve start)")
    parser.add_argument("--gpus", type=int)
    parser.add_argument("--cpu-workers", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_TIMEOUT_S)
    parser.add_argument("--preload", action="append", default=[])
    args = parser.parse_args(argv)
    spec = ServiceSpec(gpus=args.gpus, cpu_workers=args.cpu_workers, threads=args.threads,
                       idle_timeout_s=args.idle_timeout, preload=tuple(args.preload))
    return serve(spec)


if __name__ == "__main__":
    sys.exit(main())
