"""``geoseg serve``: the warm local service's life (start, status, stop, idle exit, a stale pidfile), its door
(127.0.0.1, TLS with the user's own credentials), and runs and batches through it equal to local ones, byte
for byte, a worker killed mid-scene included. Real processes throughout."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from geoseg.cli.app import app
from geoseg.errors import EXIT_NOT_RUNNING
from tests.helpers import smooth_image, stranger_connects, write_tif

distributed = pytest.importorskip("distributed")
runner = CliRunner()
NOTICE = "running on the geoseg service"


def _user(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Act as a user whose state and config folders are under ``folder``."""
    monkeypatch.setenv("XDG_STATE_HOME", str(folder / "state"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(folder / "config"))
    return folder


def _start(*args: str) -> dict:
    result = runner.invoke(app, ["serve", "start", "--cpu-workers", "1", "--threads", "2", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _status() -> tuple[int, dict]:
    result = runner.invoke(app, ["serve", "status", "--json"])
    return result.exit_code, json.loads(result.stdout)


@pytest.fixture(scope="module")
def service(tmp_path_factory, package):
    """This module's user, with a service running (the test package loaded on its worker at start)."""
    with pytest.MonkeyPatch.context() as mp:
        _user(tmp_path_factory.mktemp("user"), mp)
        info = _start("--idle-timeout", "900", "--model", str(package))
        try:
            yield info
        finally:
            runner.invoke(app, ["serve", "stop"])


def _scene(path: Path, size: int = 300, seed: int = 4) -> Path:
    return write_tif(path, smooth_image((3, size, size), seed=seed, dtype="uint16"))


def test_status_names_the_service_and_its_files_are_the_users_alone(service) -> None:
    code, status = _status()
    assert code == 0 and status["running"] and status["pid"] == service["pid"]
    assert status["address"].startswith("tls://127.0.0.1:") and status["workers"] == 1
    from geoseg.cluster.service import credentials_dir, state_dir

    for folder in (state_dir(), credentials_dir()):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for key in ("cert.pem", "key.pem"):
        assert stat.S_IMODE((credentials_dir() / key).stat().st_mode) == 0o600
    assert stat.S_IMODE((state_dir() / "service.pid").stat().st_mode) == 0o600
    door = Path(status["door"])  # the one-worker run's door: a socket only this user may open
    assert door.parent == state_dir() and stat.S_ISSOCK(door.stat().st_mode)
    assert stat.S_IMODE(door.stat().st_mode) == 0o600


@pytest.mark.parametrize("credentials", ["none", "its own"])
def test_a_client_without_the_users_credentials_is_refused(service, credentials) -> None:
    out = stranger_connects(service["address"], credentials == "its own")
    assert "REFUSED" in out and "CONNECTED" not in out, out


def test_a_run_through_the_service_equals_a_local_run(service, package, tmp_path) -> None:
    scene = _scene(tmp_path / "s.tif")
    (tmp_path / "svc").mkdir()
    (tmp_path / "here").mkdir()
    served = runner.invoke(app, ["run", str(scene), "-o", str(tmp_path / "svc" / "m.tif"), "--model", str(package),
                                 "--json"])
    assert served.exit_code == 0, served.output
    assert NOTICE in served.stderr and service["address"] in served.stderr
    summary = json.loads(served.stdout)  # paths as given, though the worker wrote them
    assert summary["output"] == str(tmp_path / "svc" / "m.tif") and summary["input"] == str(scene)
    assert summary["files"]["style"] == str(tmp_path / "svc" / "m.qml")
    local = runner.invoke(app, ["run", str(scene), "-o", str(tmp_path / "here" / "m.tif"), "--model", str(package),
                                "--local"])
    assert local.exit_code == 0, local.output
    assert NOTICE not in local.output
    for name in ("m.tif", "m.qml"):
        assert (tmp_path / "svc" / name).read_bytes() == (tmp_path / "here" / name).read_bytes(), name


def test_a_vector_layer_through_the_service_equals_a_local_one(service, package, tmp_path, monkeypatch) -> None:
    """--vector and its settings travel through the door (a relative layer path from the client's folder)."""
    scene = _scene(tmp_path / "s.tif", size=160)
    monkeypatch.chdir(tmp_path)
    for where, extra in (("svc", []), ("here", ["--local"])):
        (tmp_path / where).mkdir()
        result = runner.invoke(app, ["run", "s.tif", "-o", f"{where}/m.tif", "--model", str(package), "--vector",
                                     f"{where}/m.geojson", "--min-area", "2000", "--simplify", "5", "--json", *extra])
        assert result.exit_code == 0, result.output
        assert (NOTICE in result.stderr) == (where == "svc")
        assert json.loads(result.stdout)["vector"]["path"] == f"{where}/m.geojson"
    served, local = (json.loads((tmp_path / w / "m.geojson").read_text()) for w in ("svc", "here"))
    assert served["features"] and served["features"] == local["features"]
    assert scene.is_file()


def test_a_client_of_the_service_does_not_import_the_network_libraries(service, package, tmp_path) -> None:
    """The client submits the scene and shows the summary: torch, smp and timm stay on the worker (about 1 s of a
    cold process, benchmarks/RESULTS.md "Cold start"), and so does rasterio: the worker checks the inputs. A
    one-worker service takes the scene at its own door (geoseg.cluster.door), so not even dask is imported."""
    import os
    import subprocess
    import sys

    from tests.cli.test_startup import HEAVY, probe_script

    scene = _scene(tmp_path / "s.tif", size=96)
    done = subprocess.run([sys.executable, "-c", probe_script((*HEAVY, "rasterio", "dask", "distributed")), "run",
                           str(scene), "-o", str(tmp_path / "m.tif"), "--model", str(package)], capture_output=True,
                          text=True, timeout=300, env=os.environ)
    last = json.loads(done.stderr.strip().splitlines()[-1])
    assert last["code"] in (0, None), done.stderr
    assert NOTICE in done.stderr and (tmp_path / "m.tif").is_file()
    assert last["heavy"] == [], last


def test_mistakes_through_the_service_are_the_local_run_s(service, package, tmp_path, monkeypatch) -> None:
    """The worker checks the inputs: the same one-line errors and exit codes as a local run, nothing written."""
    scene = _scene(tmp_path / "s.tif", size=96)
    before = scene.read_bytes()
    monkeypatch.chdir(tmp_path)
    for args, code, words in ((["missing.tif"], 3, f"missing.tif: no such file; check the path (relative paths "
                                                   f"start at {tmp_path})"),
                              (["s.tif", "-o", "s.tif", "--overwrite"], 6, "the mask would overwrite it"),
                              (["s.tif", "--tile-size", "100"], 2, "tile")):
        for where in ([], ["--local"]):
            result = runner.invoke(app, ["run", *args, "--model", str(package), *where])
            assert result.exit_code == code, (where, result.output)
            assert words in result.output and "Traceback" not in result.output, result.output
    assert scene.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["s.tif"]


def test_a_remote_raster_through_the_service_lands_in_the_client_s_folder(service, package, tmp_path,
                                                                          monkeypatch) -> None:
    """A URL is read by the worker as given; its mask goes to the folder the command ran in, as locally."""
    from tests.helpers import RangeServer

    (tmp_path / "served").mkdir()
    _scene(tmp_path / "served" / "far.tif", size=96)
    (tmp_path / "svc").mkdir()
    (tmp_path / "here").mkdir()
    with RangeServer(tmp_path / "served") as server:
        for where, extra in (("svc", []), ("here", ["--local"])):
            monkeypatch.chdir(tmp_path / where)
            result = runner.invoke(app, ["run", server.url("far.tif"), "--model", str(package), *extra])
            assert result.exit_code == 0, result.output
            assert (NOTICE in result.output) == (where == "svc")
    import numpy as np
    import rasterio

    with rasterio.open(tmp_path / "svc" / "far.mask.tif") as a, rasterio.open(tmp_path / "here" / "far.mask.tif") as b:
        assert np.array_equal(a.read(), b.read()) and a.profile == b.profile  # (the tags name each folder's VRT)
    assert (tmp_path / "svc" / "far.bands.vrt").is_file() and (tmp_path / "svc" / "far.mask.json").is_file()


def test_a_batch_through_the_service_equals_a_local_batch(service, package, tmp_path) -> None:
    scenes = [str(_scene(tmp_path / f"s{i}.tif", 200, seed=i)) for i in range(2)]
    served = runner.invoke(app, ["batch", *scenes, "-o", str(tmp_path / "svc"), "--model", str(package)])
    assert served.exit_code == 0, served.output
    assert NOTICE in served.output
    local = runner.invoke(app, ["batch", *scenes, "-o", str(tmp_path / "here"), "--model", str(package), "--local"])
    assert local.exit_code == 0, local.output
    assert NOTICE not in local.output
    for i in range(2):
        name = f"s{i}.mask.tif"
        assert (tmp_path / "svc" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()


def test_a_worker_killed_mid_scene_gives_the_same_mask_and_no_partial_file(service, package, tmp_path) -> None:
    from geoseg.cluster.service import credentials_dir
    from geoseg.cluster.workers import folder_security

    scene = _scene(tmp_path / "big.tif", 1536, seed=9)
    (tmp_path / "svc").mkdir()
    out = tmp_path / "svc" / "m.tif"
    args = ["run", str(scene), "-o", str(out), "--model", str(package), "--quiet"]
    child = subprocess.Popen([sys.executable, "-m", "geoseg.cli", *args], stderr=subprocess.PIPE, text=True)
    killed = False
    with distributed.Client(service["address"], security=folder_security(credentials_dir()), timeout=30) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None and not killed:
            if any(client.processing().values()):
                time.sleep(1.0)  # well into the scene: its staging files exist
                for pid in client.run(os.getpid).values():
                    os.kill(pid, signal.SIGKILL)
                killed = True
            time.sleep(0.05)
    _, err = child.communicate(timeout=300)
    assert killed, "the scene finished before its worker could be killed; make it larger"
    assert child.returncode == 0, err
    local = runner.invoke(app, ["run", str(scene), "-o", str(tmp_path / "here.tif"), "--model", str(package),
                                "--local", "--quiet"])
    assert local.exit_code == 0, local.output
    assert out.read_bytes() == (tmp_path / "here.tif").read_bytes()
    assert sorted(p.name for p in out.parent.iterdir()) == ["m.json", "m.qml", "m.tif", "m.tif.aux.xml"]


def test_a_run_interrupted_at_the_door_stops_its_scene_and_leaves_nothing(service, package, tmp_path) -> None:
    """Ctrl-C in the client: the door sees it hang up, the worker stops the scene at its next block, the client
    exits 130 once it has, and neither the mask nor its staging is left; the service takes the next run."""
    from geoseg.cluster.service import credentials_dir
    from geoseg.cluster.workers import folder_security

    scene = _scene(tmp_path / "big.tif", 2560, seed=5)  # long enough on a warm worker to be stopped half way
    (tmp_path / "svc").mkdir()
    out = tmp_path / "svc" / "m.tif"
    # Ctrl-C reaches the client as a terminal's foreground job gets it: a test session started in the background of
    # a non-interactive shell (`.ci/run &`) has SIGINT ignored, its children inherit that, and Python then installs
    # no KeyboardInterrupt: the client ran its scene to the end and exited 0.
    child = subprocess.Popen([sys.executable, "-m", "geoseg.cli", "run", str(scene), "-o", str(out), "--model",
                              str(package), "--quiet"], stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    interrupted = False
    with distributed.Client(service["address"], security=folder_security(credentials_dir()), timeout=30) as client:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and child.poll() is None and not interrupted:
            if any(client.processing().values()):
                time.sleep(0.5)  # into the scene: its staging files exist
                child.send_signal(signal.SIGINT)
                interrupted = True
            time.sleep(0.05)
        _, err = child.communicate(timeout=120)
        assert interrupted, "the scene finished before it could be interrupted; make it larger"
        assert child.returncode == 130, err
        assert "interrupted" in err and "Traceback" not in err, err
        assert not any(client.processing().values())  # the scene stopped before the client left
    assert list(out.parent.iterdir()) == []
    again = runner.invoke(app, ["run", str(_scene(tmp_path / "s.tif", 96)), "-o", str(out), "--model", str(package)])
    assert again.exit_code == 0 and NOTICE in again.stderr, again.output


def test_a_model_named_at_start_is_run_once_before_the_first_scene(tmp_path, monkeypatch, package) -> None:
    """``--model`` (relative to where start was typed) loads the model and segments a synthetic scene with it on
    the worker (geoseg.cluster.warmup), which leaves no file; the first run is then as any other."""
    import re
    import tempfile

    from geoseg.cluster.service import state_dir

    _user(tmp_path, monkeypatch)
    monkeypatch.chdir(package.parent)
    _start("--model", package.name)
    try:
        log = (state_dir() / "service.log").read_text()
        done = re.search(rf"{re.escape(str(package))} warmed up on tls://127\.0\.0\.1:\d+: (\d+) patches of 64 px on "
                         rf"cpu", log)
        from geoseg.engine.predictor import MAX_AUTO_BATCH

        # more patches than one automatic batch: it runs at the automatic batch size, the shape later scenes use
        assert done is not None and int(done.group(1)) > MAX_AUTO_BATCH, log
        assert not list(Path(tempfile.gettempdir()).glob("geoseg-warm-up-*"))
        result = runner.invoke(app, ["run", str(_scene(tmp_path / "s.tif", 96)), "--model", str(package)])
        assert result.exit_code == 0 and NOTICE in result.stderr, result.output
    finally:
        runner.invoke(app, ["serve", "stop"])


def test_idle_exit_a_stale_pidfile_and_restart(tmp_path, monkeypatch) -> None:
    _user(tmp_path, monkeypatch)
    from geoseg.cluster.service import state_dir

    assert _status() == (EXIT_NOT_RUNNING, {"running": False})
    _start("--idle-timeout", "2")
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and _status()[0] == 0:
        time.sleep(0.5)
    assert _status()[0] == EXIT_NOT_RUNNING
    assert not (state_dir() / "service.pid").exists() and not (state_dir() / "service.json").exists()

    info = _start("--idle-timeout", "600")
    os.kill(info["pid"], signal.SIGKILL)  # the pidfile stays behind
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and Path(f"/proc/{info['pid']}/cmdline").exists() and \
                Path(f"/proc/{info['pid']}/cmdline").read_bytes():
            time.sleep(0.1)
        assert (state_dir() / "service.pid").exists()
        assert _status()[0] == EXIT_NOT_RUNNING  # recognised as stale, and cleared
        assert not (state_dir() / "service.pid").exists()
        stopped = runner.invoke(app, ["serve", "stop"])
        assert stopped.exit_code == 0 and "no service was running" in stopped.output
        again = _start("--idle-timeout", "600")
        assert again["pid"] != info["pid"] and _status()[0] == 0
    finally:
        runner.invoke(app, ["serve", "stop"])
        with contextlib.suppress(ProcessLookupError):  # the killed service's orphaned workers, if still there
            os.killpg(info["pid"], signal.SIGKILL)


def test_two_users_services_do_not_collide(tmp_path, monkeypatch) -> None:
    from geoseg.cluster.service import credentials_dir
    from geoseg.cluster.workers import folder_security

    users = {}
    try:
        for name in ("ada", "bob"):
            _user(tmp_path / name, monkeypatch)
            users[name] = (_start("--idle-timeout", "600"), credentials_dir())
        (ada, ada_keys), (bob, _) = users["ada"], users["bob"]
        assert ada["address"] != bob["address"] and ada["pid"] != bob["pid"]
        with pytest.raises((OSError, TimeoutError)):  # ada's credentials do not open bob's service
            distributed.Client(bob["address"], security=folder_security(ada_keys), timeout=5)
        _user(tmp_path / "ada", monkeypatch)
        assert _status()[1]["pid"] == ada["pid"]
    finally:
        for name in users:
            _user(tmp_path / name, monkeypatch)
            runner.invoke(app, ["serve", "stop"])
