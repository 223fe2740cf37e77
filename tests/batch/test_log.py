"""The batch's JSON-lines log on a full disk: one line naming the log (exit 6), and the next run's events on
lines of their own after the cut one."""

from __future__ import annotations

import json
from pathlib import Path

from geoseg.batch.log import EventLog
from tests.helpers import geoseg_process, smooth_image, write_tif


def test_events_after_a_cut_line_start_a_line_of_their_own(tmp_path) -> None:
    log = tmp_path / "geoseg-batch.jsonl"
    log.write_bytes(b'{"time": "2026-12-07T01:00:00+00:00", "event": "sce')  # a run stopped mid-line
    with EventLog(log) as events:
        events.emit("start", scenes=2)
    first, second = log.read_text().splitlines()
    assert first.endswith('"sce') and json.loads(second)["event"] == "start"
    with EventLog(log) as events:  # a whole last line: nothing added before the next event
        events.emit("end")
    assert len(log.read_text().splitlines()) == 3


def test_a_full_disk_at_the_log_is_one_line_and_the_batch_goes_on_later(tmp_path, model_folder) -> None:
    scenes = tmp_path / "in"
    scenes.mkdir()
    for i in range(2):
        write_tif(scenes / f"s{i}.tif", smooth_image((3, 96, 80), seed=i, dtype="uint16"),
                  descriptions=("b1", "b2", "b3"))
    out = tmp_path / "out"
    args = ["batch", str(scenes), "-o", str(out), "--model", str(model_folder), "--device", "cpu", "--quiet"]
    code, stderr, _ = geoseg_process(args, file_limit=100)  # the log's first event is longer than 100 bytes
    assert code == 6 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("geoseg: error: ") and "geoseg-batch.jsonl: the batch's log cannot be written" in stderr
    assert not list(out.glob("*.mask.tif"))
    code, stderr, _ = geoseg_process(args)
    assert code == 0, stderr
    assert sorted(p.name for p in out.glob("*.mask.tif")) == ["s0.mask.tif", "s1.mask.tif"]
    lines = (out / "geoseg-batch.jsonl").read_text().splitlines()
    assert len(lines[0]) == 100  # the cut line, alone
    events = [json.loads(line)["event"] for line in lines[1:]]
    assert events.count("scene_done") == 2, events




def test_a_log_on_a_pipe_or_a_device_is_written_as_before(tmp_path) -> None:
    """``--log /dev/stderr`` or a FIFO: no end to look at, events written as they come."""
    import os
    import threading

    fifo = tmp_path / "log.fifo"
    os.mkfifo(fifo)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()))
    reader.start()
    with EventLog(fifo) as events:
        events.emit("start")
    reader.join(10)
    assert json.loads(got[0])["event"] == "start"
    with EventLog(Path(os.devnull)) as events:
        events.emit("start")
