"""The service's door (``geoseg.cluster.door``): one JSON line each way over a Unix socket, the caller's user
checked, a worker's error raised by the caller as it was raised on the worker. A stand-in for the dask client
runs the submitted scene here; the real service's door is exercised in test_service.py."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from concurrent.futures import Future
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from geoseg.cluster.door import PROTOCOL, SOCKET_NAME, close_door, open_door, run_at_door
from geoseg.cluster.scenes import SceneTask, scene_task
from geoseg.config import RunConfig
from geoseg.errors import BandError, DeviceError, GeosegError, OutputError
from geoseg.prepare import VectorRequest
from geoseg.summary import RunSummary

SUMMARY = RunSummary(input="/in/s.tif", output="/in/s.mask.tif", model="m", device="cpu", backend="torch",
                     precision="fp32", batch_size=4, width=10, height=20, bands=(3, 2, 1), band_match="names",
                     factor=1, tile_size=64, overlap=16, blend="cosine", seconds=0.25, megapixels_per_second=0.1,
                     class_shares={"water": 0.5, "land": 0.5}, nodata_share=0.0, warnings=["a warning"],
                     files={"mask": "/in/s.mask.tif"}, seam_share=0.01)


class StandIn:
    """The part of a dask client the door uses: the scene's task runs ``outcome`` in a thread."""

    def __init__(self, outcome: Any):
        self.outcome = outcome
        self.received: list[tuple] = []

    def scheduler_info(self) -> dict:
        return {"workers": {"w": {"resources": {"scene": 1}}}}

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future:
        self.received.append(args)
        done: Future = Future()

        def work() -> None:
            try:
                done.set_result(self.outcome(*args))
            except BaseException as exc:
                done.set_exception(exc)

        threading.Thread(target=work, daemon=True).start()
        return done


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    out = tmp_path / "st"
    out.mkdir(mode=0o700)
    return out


def _door(folder: Path, outcome: Any) -> Any:
    stand_in = StandIn(outcome)
    door = open_door(folder, stand_in)
    assert door is not None
    return door, stand_in


def _task(tmp_path: Path) -> SceneTask:
    scene = tmp_path / "s.tif"
    scene.write_bytes(b"not read here")
    config = RunConfig(bands=(3, "red", 1), tile_size=64, scale=0.0001, blend="gaussian")
    return scene_task([scene], tmp_path / "out" / "m.tif", config, VectorRequest(tmp_path / "v.gpkg", 100.0, 2.5))


def test_a_scene_task_and_a_summary_survive_json(tmp_path) -> None:
    task = _task(tmp_path)
    assert SceneTask.from_json(json.loads(json.dumps(task.to_json()))) == task
    assert RunSummary.from_dict(json.loads(json.dumps(SUMMARY.to_dict()))) == SUMMARY
    remote = scene_task(["https://example.com/a.tif", "/vsis3/b/c.tif"], None, RunConfig())
    again = SceneTask.from_json(json.loads(json.dumps(remote.to_json())))
    assert again == remote and again.scenes == ("https://example.com/a.tif", "/vsis3/b/c.tif")


def test_the_door_runs_the_task_it_was_sent_and_answers_its_summary(tmp_path, folder) -> None:
    door, stand_in = _door(folder, lambda *args: SUMMARY)
    try:
        path = folder / SOCKET_NAME
        assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
        task = _task(tmp_path)
        assert run_at_door(path, task, 5) == SUMMARY
        scenes, output, config, vector, cancel_name, cwd = stand_in.received[0]
        assert (scenes, output, config, vector, cancel_name, cwd) == (list(task.scenes), task.output, task.config,
                                                                      task.vector, task.cancel_name, task.cwd)
    finally:
        close_door(door)
    assert not (folder / SOCKET_NAME).exists()


@pytest.mark.parametrize("raised", [BandError("s.tif: band 7 does not exist"), OutputError("m.tif: exists"),
                                    OSError(errno.ENOSPC, "No space left on device", "/out/m.tif")],
                         ids=["band", "output", "full disk"])
def test_a_worker_s_error_is_raised_by_the_caller_as_it_was_raised(tmp_path, folder, raised) -> None:
    def fail(*args: Any) -> RunSummary:
        raise raised

    door, _ = _door(folder, fail)
    try:
        with pytest.raises(type(raised)) as caught:
            run_at_door(folder / SOCKET_NAME, _task(tmp_path), 5)
    finally:
        close_door(door)
    assert str(caught.value) == str(raised)
    if isinstance(raised, GeosegError):
        assert caught.value.exit_code == raised.exit_code
    else:
        assert (caught.value.errno, caught.value.filename) == (errno.ENOSPC, "/out/m.tif")


def test_a_bug_on_the_worker_is_not_dressed_as_a_user_mistake(tmp_path, folder) -> None:
    def bug(*args: Any) -> RunSummary:
        raise ZeroDivisionError("division by zero")

    door, _ = _door(folder, bug)
    try:
        with pytest.raises(RuntimeError, match="ZeroDivisionError: division by zero") as caught:
            run_at_door(folder / SOCKET_NAME, _task(tmp_path), 5)
    finally:
        close_door(door)
    assert not isinstance(caught.value, GeosegError) and "Traceback" in str(caught.value)


def test_garbage_and_another_protocol_get_an_error_and_the_door_stays_open(tmp_path, folder) -> None:
    door, _ = _door(folder, lambda *args: SUMMARY)
    try:
        for line in (b"not json\n", json.dumps({"protocol": PROTOCOL + 1, "run": {}}).encode() + b"\n",
                     json.dumps({"protocol": PROTOCOL, "run": {"scenes": []}}).encode() + b"\n"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
                conn.connect(str(folder / SOCKET_NAME))
                conn.sendall(line)
                reply = json.loads(conn.makefile("rb").readline())
            assert reply["error"]["type"] == "DeviceError" and "summary" not in reply, reply
        assert run_at_door(folder / SOCKET_NAME, _task(tmp_path), 5) == SUMMARY
    finally:
        close_door(door)


def test_no_door_answering_is_a_one_line_device_error(tmp_path) -> None:
    with pytest.raises(DeviceError, match=r"does not answer at .*service\.sock.*--local"):
        run_at_door(tmp_path / SOCKET_NAME, _task(tmp_path), 5)


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() != 0, reason="needs root to act as another user")
def test_another_user_is_refused_at_the_door_even_where_the_socket_lets_them_in(tmp_path) -> None:
    """The socket's mode keeps other users out; past it (here: opened up on purpose, in a folder they can reach),
    the door checks the caller's user id itself and runs nothing."""
    import tempfile

    open_folder = Path(tempfile.mkdtemp(dir="/tmp"))
    folder = open_folder / "st"
    folder.mkdir()
    door, stand_in = _door(folder, lambda *args: SUMMARY)
    try:
        for opened in (open_folder, folder):
            os.chmod(opened, 0o755)
        os.chmod(folder / SOCKET_NAME, 0o777)
        request = json.dumps({"protocol": PROTOCOL, "run": _task(tmp_path).to_json()})
        probe = ("import os, socket, sys\nos.setgid(65534); os.setuid(65534)\n"
                 "s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM); s.connect(sys.argv[1])\n"
                 "s.sendall(sys.argv[2].encode() + b'\\n'); print(s.makefile('rb').readline().decode())\n")
        out = subprocess.run([sys.executable, "-c", probe, str(folder / SOCKET_NAME), request], capture_output=True,
                             text=True, timeout=60)
        reply = json.loads(out.stdout or "{}")
        assert reply.get("error", {}).get("type") == "DeviceError", (reply, out.stderr)
        assert "another user's geoseg service" in reply["error"]["message"] and stand_in.received == []
    finally:
        close_door(door)
        import shutil

        shutil.rmtree(open_folder)


def test_a_folder_too_deep_for_a_socket_opens_no_door(tmp_path) -> None:
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    deep.mkdir(parents=True)
    assert open_door(deep, StandIn(lambda *args: SUMMARY)) is None
    assert not (deep / SOCKET_NAME).exists()


def test_a_config_s_json_form_checks_its_values() -> None:
    data = RunConfig(bands=(1, 2, 3)).to_json()
    assert data["bands"] == [1, 2, 3] and RunConfig.from_json(data) == RunConfig(bands=(1, 2, 3))
    with pytest.raises(GeosegError, match="tile"):
        RunConfig.from_json({**data, "tile_size": 100})
    with pytest.raises(GeosegError, match="JSON form"):
        replace(RunConfig(), blend=lambda n: None).to_json()
