"""Scene claims (geoseg/batch/claims.py): overlapping batches over one folder never do a scene twice."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

from geoseg.batch.claims import STALE_S, Owner, claim, claim_path, release
from geoseg.io.publish import clean_leftovers
from tests.helpers import small_scenes as scenes


def _write_claim(output: Path, owner: Owner, age_s: float = 0.0) -> Path:
    path = claim_path(output)
    path.write_text(json.dumps(asdict(owner)))
    if age_s:
        then = time.time() - age_s
        os.utime(path, (then, then))
    return path


def test_a_live_claim_is_respected_and_a_dead_or_stale_one_taken_over(tmp_path) -> None:
    out = tmp_path / "a.mask.tif"
    me = Owner()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        other = Owner(pid=sleeper.pid)
        _write_claim(out, other)
        assert claim(out, me) == other  # a live process on this host holds it
    finally:
        sleeper.kill()
        sleeper.wait()
    assert claim(out, me) is None  # its process is gone: taken over
    assert json.loads(claim_path(out).read_text())["batch"] == me.batch

    elsewhere = Owner(host="another-host", pid=1)
    _write_claim(out, elsewhere)
    assert claim(out, me) == elsewhere  # refreshed recently by its owner on another machine
    _write_claim(out, elsewhere, age_s=STALE_S + 5)
    assert claim(out, me) is None  # not refreshed for too long: its owner is gone

    retry = Owner(host=me.host, pid=me.pid + 1, batch=me.batch)
    assert claim(out, retry) is None  # the same batch (a dask task run again) takes its own claim
    release(out, Owner())  # another batch's release leaves the claim alone
    assert claim_path(out).exists()
    release(out, me)
    assert not claim_path(out).exists()


def test_a_scene_claimed_by_a_live_batch_is_skipped_with_the_reason(tmp_path, model_folder) -> None:
    from tests.helpers import run_batch_cli as batch

    scenes(tmp_path / "in", 2)
    (tmp_path / "out").mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_claim(tmp_path / "out" / "s00.mask.tif", Owner(pid=sleeper.pid, batch="nightly-1"))
        code, summary = batch(str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", str(model_folder),
                              "--device", "cpu")
    finally:
        sleeper.kill()
        sleeper.wait()
    assert code == 0
    by_name = {Path(s["input"]).name: s for s in summary["scenes"]}
    assert by_name["s00.tif"]["status"] == "skipped"
    assert "being segmented by another batch nightly-1" in by_name["s00.tif"]["reason"]
    assert by_name["s01.tif"]["status"] == "done"
    assert not (tmp_path / "out" / "s00.mask.tif").exists()


def test_two_batches_started_together_do_each_scene_once(tmp_path, model_folder) -> None:
    """The cron overlap: two `geoseg batch` processes over the same scenes and output folder at once."""
    scenes(tmp_path / "in", 6, size=400)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "geoseg.cli", "batch", str(tmp_path / "in"), "-o", str(out), "--model",
               str(model_folder), "--device", "cpu", "--parallel", "1", "--quiet"]
    procs = [subprocess.Popen(command, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    events = [json.loads(line) for line in (out / "geoseg-batch.jsonl").read_text().splitlines()]  # every line whole
    done = [e["input"] for e in events if e["event"] == "scene_done"]
    assert sorted(done) == sorted({str(p) for p in (tmp_path / "in").glob("*.tif")})  # each scene exactly once
    assert sum(e["event"] == "batch_end" for e in events) == 2
    json.loads((out / "geoseg-batch-summary.json").read_text())  # whole (written atomically)
    assert not list(out.glob(".*.claim")) and not list(out.glob(".*partial*"))


def test_leftovers_of_another_host_are_left_alone(tmp_path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    here = socket.gethostname().split(".")[0]
    ours = tmp_path / f".a.mask.tif.partial-{dead.pid}~{here}"
    theirs = tmp_path / f".b.mask.tif.partial-{dead.pid}~another-host"
    ours.write_bytes(b"x")
    theirs.write_bytes(b"x")
    assert clean_leftovers(tmp_path) == [ours]
    assert theirs.exists()
