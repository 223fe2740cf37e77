"""The geoseg service's front door: ``geoseg run`` of one scene without dask in the calling process.

A client of the service through dask pays for importing dask and distributed, a TLS handshake and the
client's registration with the scheduler: about half a second of a served run's wall on a slow host, more
than the service's own run of a small scene (benchmarks/RESULTS.md, "Cold start"). The service process
already holds a dask client of its own cluster, so it takes a one-worker ``geoseg run`` at a door of its own
instead: a Unix socket, ``service.sock`` in the service's state folder, that speaks one line of JSON each
way. The request is a :class:`geoseg.cluster.scenes.SceneTask` (paths, settings, the client's folder); the
reply is the run's summary, or the error the worker raised (its class, message and exit code), so the caller
reports it as a local run would. Only data crosses the door, never code.

Who may knock: the socket lives in the state folder (0700) and is itself 0600, and the service checks each
caller's user id (``SO_PEERCRED``) against its own, so another local user cannot submit work; a socket file
is not reachable from another host. A caller that hangs up (Ctrl-C, killed) cancels its scene, which stops at
its next block and leaves no output; the door answers the interrupted caller once the scene has stopped.
"""

from __future__ import annotations

import json
import os
import select
import socket
import socketserver
import struct
import threading
import traceback
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geoseg.errors import DeviceError, GeosegError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from geoseg.cluster.scenes import SceneTask
    from geoseg.config import RunConfig
    from geoseg.prepare import VectorRequest
    from geoseg.summary import RunSummary

#: The door's file name in the service's state folder.
SOCKET_NAME = "service.sock"
#: What a request and its reply say they speak; a door that speaks another answers with an error.
PROTOCOL = 1
#: The longest request line the door reads (a scene's paths and settings take a few kB).
MAX_REQUEST = 1 << 20
#: The longest path a Unix socket may have (``sun_path`` is 108 bytes on Linux, less elsewhere).
MAX_SOCKET_PATH = 100
#: How often the door looks whether its caller has hung up while the scene runs (seconds).
HANGUP_POLL_S = 0.1


class Door(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The service's door at ``path``, running scenes on ``client``'s cluster (see module docstring);
    ``serve_forever`` in a thread, ``shutdown`` and ``server_close`` to close it."""

    daemon_threads = True

    def __init__(self, path: Path, client: Any):
        self.client = client
        self.path = path
        path.unlink(missing_ok=True)  # a door left by a killed service
        old = os.umask(0o177)
        try:
            super().__init__(str(path), _Knock)
        finally:
            os.umask(old)

    def server_close(self) -> None:
        super().server_close()
        self.path.unlink(missing_ok=True)


def open_door(folder: Path, client: Any) -> Door | None:
    """The door in ``folder``, serving in a thread; None where a socket cannot live there (a path too long for
    one): clients then go through dask, as before there was a door."""
    path = folder / SOCKET_NAME
    if len(os.fsencode(path)) > MAX_SOCKET_PATH or not hasattr(socket, "AF_UNIX"):
        print(f"geoseg service: no door at {path} (too long a path for a socket); clients use dask", flush=True)
        return None
    door = Door(path, client)
    threading.Thread(target=door.serve_forever, kwargs={"poll_interval": 0.2}, name="geoseg-door",
                     daemon=True).start()
    return door


def close_door(door: Door | None) -> None:
    if door is not None:
        door.shutdown()
        door.server_close()


def peer_uid(conn: socket.socket) -> int | None:
    """The user id of the process at the other end of ``conn`` (Linux's ``SO_PEERCRED``), None where the
    system does not say."""
    if not hasattr(socket, "SO_PEERCRED"):
        return None
    _pid, uid, _gid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                         struct.calcsize("3i")))
    return uid


class _Knock(socketserver.StreamRequestHandler):
    """One caller: its user checked, one request read, its scene run, one reply written."""

    server: Door

    def handle(self) -> None:
        uid = peer_uid(self.connection)
        if uid is not None and uid != os.getuid():
            self._reply({"error": _error(DeviceError(f"user {uid} may not use another user's geoseg service"))})
            return
        try:
            request = json.loads(self.rfile.readline(MAX_REQUEST))
            if request.get("protocol") != PROTOCOL:
                raise DeviceError(f"the geoseg service speaks door protocol {PROTOCOL}, the caller "
                                  f"{request.get('protocol')}; run the same geoseg version, or restart the service")
            from geoseg.cluster.scenes import SceneTask

            task = SceneTask.from_json(request["run"])
        except (ValueError, KeyError, TypeError, AttributeError, GeosegError) as exc:
            self._reply({"error": _error(exc if isinstance(exc, GeosegError) else
                                         DeviceError(f"the geoseg service could not read the request ({exc})"))})
            return
        try:
            self._reply(self._run(task))
        except Exception as exc:  # the cluster failed the submission itself: said to the caller, not only logged
            self._reply({"error": _error(exc)})

    def _run(self, task: SceneTask) -> dict[str, Any]:
        from geoseg.cluster.scenes import cancel_scene, submit_scene

        client = self.server.client
        finished = threading.Event()
        remote = submit_scene(client, task)
        remote.add_done_callback(lambda _: finished.set())
        while not finished.wait(HANGUP_POLL_S):
            if self._hung_up():
                cancel_scene(client, task, remote)
                return {"cancelled": True}
        try:
            return {"summary": remote.result().to_dict()}
        except BaseException as exc:  # the worker's error, sent as the caller raises it
            return {"error": _error(exc)}

    def _hung_up(self) -> bool:
        readable, _, _ = select.select([self.connection], [], [], 0)
        try:
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _reply(self, reply: dict[str, Any]) -> None:
        with suppress(OSError):  # the caller has gone
            self.wfile.write(json.dumps({"protocol": PROTOCOL, **reply}).encode() + b"\n")


def _error(exc: BaseException) -> dict[str, Any]:
    """``exc`` as the caller re-raises it: a geoseg error by class and message, an ``OSError`` with its errno
    (a full disk keeps its exit code), anything else as a failure of the service with its traceback."""
    out: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, GeosegError):
        out.update(geoseg=True, exit_code=exc.exit_code)
    elif isinstance(exc, OSError):
        out.update(errno=exc.errno, strerror=exc.strerror, filename=exc.filename)
    else:
        out["traceback"] = "".join(traceback.format_exception(exc))
    return out


# -- the caller's side ---------------------------------------------------------------------------
def segment_scene_at_door(path: Path, scenes: Sequence[str | Path], output: str | Path | None, config: RunConfig,
                          vector: VectorRequest | None = None) -> RunSummary:
    """:func:`geoseg.cluster.scenes.segment_scene_as_task` through the service's door at ``path``: the same task
    on the same worker, the same summary, without dask in this process."""
    from geoseg.cluster.scenes import CANCEL_WAIT_S, as_given, scene_task

    return as_given(run_at_door(path, scene_task(scenes, output, config, vector), CANCEL_WAIT_S), scenes, output,
                    vector)


def run_at_door(path: Path, task: SceneTask, wait_on_cancel_s: float) -> RunSummary:
    """``task`` run by the service whose door is ``path``; its summary, or the worker's error raised here.
    Interrupted (Ctrl-C), the scene is cancelled and this waits up to ``wait_on_cancel_s`` for it to stop."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        try:
            conn.connect(str(path))
        except OSError as exc:
            raise DeviceError(f"the geoseg service does not answer at {path} ({exc.strerror or exc}); restart it "
                              f"(geoseg serve stop; geoseg serve start) or use --local") from None
        conn.sendall(json.dumps({"protocol": PROTOCOL, "run": task.to_json()}).encode() + b"\n")
        answer = conn.makefile("rb")
        try:
            line = answer.readline()
        except BaseException:
            conn.shutdown(socket.SHUT_WR)  # the door sees the hang-up, cancels the scene, then answers
            conn.settimeout(wait_on_cancel_s)
            with suppress(OSError):
                answer.readline()
            raise
    if not line:
        raise DeviceError(f"the geoseg service closed its door at {path} without an answer; see its log "
                          f"(geoseg serve status)")
    reply = json.loads(line)
    if "summary" in reply:
        from geoseg.summary import RunSummary

        return RunSummary.from_dict(reply["summary"])
    raise _raised(reply.get("error") or {"type": "RuntimeError", "message": f"unexpected reply {reply!r}"})


def _raised(error: dict[str, Any]) -> BaseException:
    import geoseg.errors

    kind = getattr(geoseg.errors, error["type"], None)
    if error.get("geoseg"):
        if isinstance(kind, type) and issubclass(kind, GeosegError):
            return kind(error["message"])
        unknown = GeosegError(error["message"])  # a class this version lacks: its message and exit code
        unknown.exit_code = int(error.get("exit_code", GeosegError.exit_code))
        return unknown
    if "errno" in error:
        return OSError(error["errno"], error["strerror"], error["filename"])
    return RuntimeError(f"the geoseg service's run failed: {error['type']}: {error['message']}\n"
                        f"{error.get('traceback', '')}")
