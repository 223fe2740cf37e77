"""Scene claims: two batches over one output folder never segment the same scene twice.

A cron job that overlaps the previous night's, two schedulers, or a local and a distributed batch
may run over the same scenes at once. Before a scene starts, its batch *claims* it: a small JSON file
beside the mask (``.NAME.claim``) naming the owner (host, process id, batch id). It is created
atomically (``O_EXCL``), under a lock of the folder (``.geoseg-claims.lock``, ``flock``) so that
checking an old claim and taking it over is one step. A claim is the owner's while it lives:

* on the owner's host, while its process exists;
* from another host, while the owner refreshes it (:meth:`Claims.refresh`, every
  :data:`HEARTBEAT_S`); one untouched for :data:`STALE_S` is taken over;
* a claim of the same batch (a dask task retried after its worker died) is the batch's own.

A scene claimed by a live owner is skipped with a reason; the claim is removed when the scene ends.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path

#: The owner of a claim refreshes it this often (seconds) ...
HEARTBEAT_S = 60.0
#: ... and a claim from another host untouched for this long is taken over.
STALE_S = 600.0
CLAIM_SUFFIX = ".claim"
LOCK_NAME = ".geoseg-claims.lock"


@dataclass(frozen=True)
class Owner:
    """Who claims: a batch process."""

    host: str = field(default_factory=lambda: socket.gethostname())
    pid: int = field(default_factory=os.getpid)
    batch: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def __str__(self) -> str:
        return f"batch {self.batch} (process {self.pid} on {self.host})"


def claim_path(output: Path) -> Path:
    return output.with_name(f".{output.name}{CLAIM_SUFFIX}")


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    with open(folder / LOCK_NAME, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _holder(path: Path) -> Owner | None:
    try:
        return Owner(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None  # gone, or half-written by a process that died: not a live claim


def _alive(owner: Owner, path: Path, me: Owner) -> bool:
    if owner.batch == me.batch:
        return False  # our own batch's claim (a retried task): ours to take
    if owner.host == me.host:
        try:
            os.kill(owner.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    try:
        return time.time() - path.stat().st_mtime < STALE_S
    except OSError:
        return False


def claim(output: Path, owner: Owner) -> Owner | None:
    """Claim the scene written to ``output`` for ``owner``; return None when claimed, else the live owner
    that holds it."""
    path = claim_path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with _folder_lock(output.parent):
        held = _holder(path) if path.exists() else None
        if held is not None and _alive(held, path, owner):
            return held
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(owner)))
        os.replace(tmp, path)  # the lock makes check-and-take one step
    return None


def release(output: Path, owner: Owner) -> None:
    """Remove ``owner``'s claim of ``output`` (another batch's claim is left alone)."""
    path = claim_path(output)
    with _folder_lock(output.parent):
        held = _holder(path)
        if held is not None and held.batch == owner.batch:
            path.unlink(missing_ok=True)


class Claims:
    """A batch's claims, refreshed on a thread while it runs (for owners on other hosts)."""

    def __init__(self, owner: Owner | None = None):
        self.owner = owner or Owner()
        self._outputs: set[Path] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Claims:
        self._thread = threading.Thread(target=self._beat, name="geoseg-claims", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def watch(self, outputs: list[Path]) -> None:
        """Refresh the claims of ``outputs`` this batch holds (also those its dask workers took)."""
        with self._lock:
            self._outputs.update(outputs)

    def refresh(self) -> None:
        with self._lock:
            outputs = list(self._outputs)
        for output in outputs:
            path = claim_path(output)
            held = _holder(path)
            if held is not None and held.batch == self.owner.batch:
                with suppress(OSError):  # gone meanwhile: nothing to refresh
                    os.utime(path)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            self.refresh()
