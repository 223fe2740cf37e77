"""The cluster a run or batch uses: an existing dask scheduler, or a local one made for it.

``--scheduler ADDRESS`` connects to a running cluster (SLURM through dask-jobqueue, Kubernetes through
dask-kubernetes or the dask Helm chart; see workflows/README.md). ``--cluster local`` starts one here:
with ``--gpus N``, one worker process per GPU, each seeing only its own
(``CUDA_VISIBLE_DEVICES``), so ``--device auto`` / ``cuda`` on a worker is that worker's GPU; with
``--workers N``, CPU-only workers (tests, machines without a GPU). Each local worker offers one
``scene`` resource, so it runs one scene or row strip at a time with all its cores as reader threads;
workers of an external cluster get the same when they are started with ``--resources scene=1``.

dask runs pickled code sent to it, so a cluster is a door into the machine. A local cluster listens on
127.0.0.1 only, speaks TLS with a certificate made for it alone (``Security.temporary()``: only this
process holds the key, so nothing else can connect), and has no dashboard unless ``dashboard`` asks for
one (then on 127.0.0.1 too). An external ``tls://`` scheduler takes the CA, certificate and key from
``--tls-ca-file/--tls-cert/--tls-key`` or from dask's own configuration (``distributed.comm.tls``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from geoseg.errors import ConfigError

#: The resource a local worker offers once: one scene (or row strip) at a time per worker.
SCENE_RESOURCE = "scene"
#: How long to wait for an external scheduler before giving up (seconds).
CONNECT_TIMEOUT_S = 30


@dataclass(frozen=True)
class ClusterSpec:
    """Where the work goes: ``scheduler`` (an address), or a local cluster of ``gpus`` GPU workers or
    ``workers`` CPU workers with ``threads`` threads each (default: the cores shared out)."""

    scheduler: str | None = None
    gpus: int | None = None
    workers: int | None = None
    threads: int | None = None
    #: TLS files for a ``tls://`` scheduler: the CA that signed the cluster's certificates, and this client's.
    tls_ca_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: A local cluster's dashboard, on 127.0.0.1 (off by default).
    dashboard: bool = False
    #: ``scheduler`` is this user's running ``geoseg serve`` (:mod:`geoseg.cluster.service`), reached with
    #: the credentials it made, in this folder (:func:`folder_security`).
    service_credentials: Path | None = None
    #: The service's own door (:mod:`geoseg.cluster.door`), where it has one worker: ``geoseg run`` of one
    #: scene goes there, without dask in the calling process.
    service_door: Path | None = None

    @property
    def service(self) -> bool:
        return self.service_credentials is not None

    def __post_init__(self) -> None:
        tls = [f for f in (self.tls_ca_file, self.tls_cert, self.tls_key) if f is not None]
        if tls and self.scheduler is None:
            raise ConfigError("--tls-ca-file/--tls-cert/--tls-key are for --scheduler tls://...; a local cluster "
                              "makes its own certificate")
        if tls and not str(self.scheduler).startswith("tls://"):
            raise ConfigError(f"--tls-* given but --scheduler {self.scheduler} is not a tls:// address; use "
                              f"tls://HOST:PORT")
        if tls and len(tls) != 3:
            raise ConfigError("a tls:// scheduler needs all three of --tls-ca-file, --tls-cert and --tls-key")
        for f in tls:
            if not f.is_file():
                raise ConfigError(f"{f}: no such TLS file; check the path given to --tls-ca-file/--tls-cert/--tls-key")
        if self.scheduler is not None and (self.gpus or self.workers):
            raise ConfigError("--scheduler connects to an existing cluster; --gpus/--workers make a local one: "
                              "give one or the other")
        if self.scheduler is None and not (self.gpus or self.workers):
            raise ConfigError("--cluster local needs --gpus N (one worker per GPU) or --workers N (CPU workers)")
        if self.gpus and self.workers:
            raise ConfigError("give --gpus N (one worker per GPU) or --workers N (CPU workers), not both")
        for name in ("gpus", "workers", "threads"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name} {value} must be at least 1")


#: Where a local cluster's scheduler, workers and nannies listen: this machine only.
LOOPBACK = "127.0.0.1"


def local_workers(spec: ClusterSpec, security: object | None = None) -> dict[str, dict]:
    """The worker specs of a local cluster (see module docstring): on loopback, over TLS with ``security``."""
    from distributed import Nanny

    count = spec.gpus or spec.workers or 1
    threads = spec.threads or max(1, (os.cpu_count() or 1) // count)
    workers = {}
    for i in range(count):
        env = {"CUDA_VISIBLE_DEVICES": str(i)} if spec.gpus else {}
        workers[f"geoseg-{i}"] = {"cls": Nanny, "options": {
            "nthreads": threads, "env": env, "resources": {SCENE_RESOURCE: 1}, "name": f"geoseg-{i}",
            "memory_limit": 0, "silence_logs": 40, "host": LOOPBACK,
            **({"security": security, "protocol": "tls://"} if security is not None else {})}}
    return workers


def local_security() -> object:
    """TLS for a local cluster: a certificate and key made now, held by this process only."""
    from distributed.security import Security

    try:
        return Security.temporary()
    except ImportError:
        raise ConfigError("a local dask cluster needs the 'cryptography' package for its TLS certificate; "
                          "pip install cryptography") from None


def external_security(spec: ClusterSpec) -> object | None:
    """TLS for an external scheduler: the files given, else dask's configuration (None for tcp://)."""
    from distributed.security import Security

    if spec.tls_ca_file is not None:
        return Security(tls_ca_file=str(spec.tls_ca_file), tls_client_cert=str(spec.tls_cert),
                        tls_client_key=str(spec.tls_key), require_encryption=True)
    if not str(spec.scheduler).startswith("tls://"):
        return None
    security = Security()  # dask's configuration: distributed.comm.tls.ca-file, .client.cert, .client.key
    if not security.tls_ca_file or not security.tls_client_cert:
        raise ConfigError(f"--scheduler {spec.scheduler} speaks TLS: give --tls-ca-file, --tls-cert and --tls-key "
                          f"(or set distributed.comm.tls.ca-file, .client.cert and .client.key in dask's config)")
    return security


def folder_security(folder: Path) -> object:
    """TLS from a folder holding ``cert.pem`` and ``key.pem``, a self-signed certificate that is its own CA
    (``geoseg serve``'s credentials), for every role, encryption required."""
    from distributed.security import Security

    cert, key = folder / "cert.pem", folder / "key.pem"
    if not cert.is_file() or not key.is_file():
        raise ConfigError(f"{folder}: the service's credentials are missing; restart it with geoseg serve stop "
                          f"and geoseg serve start")
    files = {"tls_ca_file": str(cert)}
    for role in ("client", "scheduler", "worker"):
        files[f"tls_{role}_cert"], files[f"tls_{role}_key"] = str(cert), str(key)
    return Security(require_encryption=True, **files)


@contextmanager
def connect(spec: ClusterSpec) -> Iterator[object]:
    """A ``distributed.Client`` for ``spec``; a local cluster is shut down on leaving."""
    from distributed import Client, Scheduler, SpecCluster

    if spec.scheduler is not None:
        security = (folder_security(spec.service_credentials) if spec.service_credentials is not None else
                    external_security(spec))
        try:
            client = Client(spec.scheduler, timeout=CONNECT_TIMEOUT_S, security=security)
        except (OSError, TimeoutError, ValueError, TypeError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise ConfigError(f"no dask scheduler answers at {spec.scheduler} ({first}); start one (dask scheduler, "
                              f"dask-jobqueue, the dask Helm chart), check its address and TLS files, or use "
                              f"--cluster local") from None
        try:
            yield client
        finally:
            client.close()
        return
    if spec.gpus:
        import torch

        found = torch.cuda.device_count()
        if found < spec.gpus:
            from geoseg.errors import DeviceError

            raise DeviceError(f"--gpus {spec.gpus} asked for, but this machine has {found} CUDA GPU(s); use --gpus "
                              f"{found}" if found else f"--gpus {spec.gpus} asked for, but no CUDA GPU is visible; "
                              f"use --cpu-workers N")
    import dask

    threads = spec.threads or max(1, (os.cpu_count() or 1) // (spec.gpus or spec.workers or 1))
    security = local_security()
    scheduler = {"host": LOOPBACK, "protocol": "tls://", "security": security, "dashboard": spec.dashboard,
                 **({"dashboard_address": f"{LOOPBACK}:0"} if spec.dashboard else {})}
    # dask's HTTP servers start whatever the dashboard setting: with no dashboard they serve nothing at all.
    quiet_http = {} if spec.dashboard else {"distributed.scheduler.http.routes": [],
                                            "distributed.worker.http.routes": []}
    with dask.config.set({**worker_environment(threads), **quiet_http}):
        cluster = SpecCluster(workers=local_workers(spec, security),
                              scheduler={"cls": Scheduler, "options": scheduler},
                              silence_logs=40, security=security)
        try:
            with Client(cluster, security=security) as client:
                if spec.dashboard:
                    import sys

                    print(f"geoseg: dask dashboard at {client.dashboard_link}", file=sys.stderr)
                yield client
        finally:
            cluster.close()


def worker_environment(threads: int) -> dict[str, object]:
    """dask config for the environment a local worker process starts with (set before it spawns):

    * ``MALLOC_TRIM_THRESHOLD_`` unset: dask's nanny sets it to 64 KiB, which also turns off glibc's
      adaptive mmap threshold, so every large numpy buffer (a decoded chunk, a label strip, an overview
      level) is mapped and unmapped page by page (a scene 8 % slower in such a CPU worker here);
      :func:`relax_malloc` undoes it in workers of clusters geoseg did not start;
    * ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``: the CPU backends' threads, the worker's share of the cores
      (dask's default, 1, would leave a CPU worker's network on one core). Workers of other clusters get
      them from their own environment (``OMP_NUM_THREADS=16`` in the pod or job script wins over dask's)."""
    key = "distributed.nanny.pre-spawn-environ"
    return {f"{key}.MALLOC_TRIM_THRESHOLD_": None, f"{key}.OMP_NUM_THREADS": threads,
            f"{key}.MKL_NUM_THREADS": threads}


def model_for_workers(model: str) -> str:
    """``model`` as a worker must name it: a model folder as an absolute path (workers start elsewhere);
    a built-in name as it is."""
    path = Path(model)
    return str(path.absolute()) if path.exists() else model


def scene_resources(client: object) -> dict[str, int] | None:
    """``{"scene": 1}`` when every worker offers the scene resource (then each runs one task at a time),
    else None: a task that asks for a resource no worker has would wait for ever."""
    workers = client.scheduler_info()["workers"].values()  # type: ignore[attr-defined]
    if workers and all(SCENE_RESOURCE in (w.get("resources") or {}) for w in workers):
        return {SCENE_RESOURCE: 1}
    return None


#: glibc's mallopt parameters, and the values glibc's adaptive thresholds would reach on their own.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 2**20
_relaxed = False


def relax_malloc() -> None:
    """In a dask worker started with dask's ``MALLOC_TRIM_THRESHOLD_`` (64 KiB), give glibc back the
    thresholds it would have grown to itself: buffers under 32 MiB reused from the heap instead of mapped
    and unmapped on every use. Once per process; nothing where the variable is not set or not glibc."""
    global _relaxed
    if _relaxed or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    _relaxed = True
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD)
    except (OSError, AttributeError):  # not glibc: its allocator has no such knobs
        pass
