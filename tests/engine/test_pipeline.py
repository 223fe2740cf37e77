"""The pipeline's reader threads: kept across runs, and each run leaves them as it found them."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import rasterio

from geoseg import RunConfig, segment_scene
from geoseg.engine.pipeline import Tuning
from geoseg.errors import SceneError
from geoseg.io.threads import reader_threads
from tests.helpers import smooth_image


def _readers() -> set[int]:
    return {t.ident for t in threading.enumerate() if t.name.startswith("geoseg-read")}


def _open_handles(path: Path) -> int:
    """File descriptors of this process open on ``path`` (Linux)."""
    folder = Path("/proc/self/fd")
    found = 0
    for fd in os.listdir(folder):
        with contextlib.suppress(OSError):  # closed since it was listed
            found += os.path.realpath(folder / fd) == str(path.resolve())
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_runs_share_reader_threads_and_close_their_handles(make_tif, tmp_path, tiny_model) -> None:
    """A second run reads on the first run's threads (no thread is started per run), and neither leaves the
    scene open."""
    model = tiny_model()
    path = make_tif(smooth_image((3, 300, 260), seed=2), block=32)
    config = RunConfig(workers=3, block_size=64, device="cpu", precision="fp32", overwrite=True)
    first = segment_scene(path, tmp_path / "a.tif", config, model=model)
    threads = _readers()
    assert _open_handles(path) == 0
    second = segment_scene(path, tmp_path / "b.tif", config, model=model)
    assert _readers() == threads and len(threads) >= 3
    assert _open_handles(path) == 0
    assert first.patches == second.patches
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_a_failed_run_leaves_no_read_behind(tmp_path) -> None:
    """A run's reads are cancelled or waited for when it stops: the shared threads are free for the next run."""
    readers = reader_threads(2)
    started, release = threading.Event(), threading.Event()

    def slow() -> None:
        started.set()
        release.wait(5)

    running = readers.submit(slow)
    queued = [readers.submit(slow) for _ in range(4)]
    started.wait(5)
    threading.Timer(0.2, release.set).start()
    readers.finish()
    assert running.done() and all(f.done() for f in queued)
    assert sum(f.cancelled() for f in queued) >= 2  # two threads: at most two started
    assert reader_threads(2).submit(lambda: 7).result(timeout=5) == 7


def test_a_damaged_scene_fails_and_the_next_run_reads(make_tif, tmp_path, tiny_model) -> None:
    """A read error fails its run with the scene's error; the threads go on to read the next run's scene."""
    model = tiny_model()
    good = make_tif(smooth_image((3, 200, 200), seed=4), block=32)
    bad = tmp_path / "bad.tif"
    data = bytearray(good.read_bytes())
    data[len(data) // 2 :] = bytes(len(data) - len(data) // 2)  # tiles' bytes zeroed: they do not inflate
    bad.write_bytes(bytes(data))
    config = RunConfig(workers=2, block_size=64, device="cpu", precision="fp32", overwrite=True)
    with pytest.raises(SceneError, match=r"pixels at rows .* cannot be read"):
        segment_scene(bad, tmp_path / "bad-mask.tif", config, model=model)
    assert not (tmp_path / "bad-mask.tif").exists()
    summary = segment_scene(good, tmp_path / "good-mask.tif", config, model=model)
    assert summary.patches > 0


def test_a_run_with_threads_of_its_own_ends_them(make_tif, tmp_path, tiny_model) -> None:
    """Tuning.keep_readers=False (the benchmark's A/B): the run's threads end with it; the mask is the same."""
    model = tiny_model()
    path = make_tif(smooth_image((3, 150, 170), seed=6), block=32)
    config = RunConfig(workers=2, block_size=64, device="cpu", precision="fp32", overwrite=True)
    segment_scene(path, tmp_path / "kept.tif", config, model=model)
    before = _readers()
    segment_scene(path, tmp_path / "own.tif", config, model=model, tuning=Tuning(keep_readers=False))
    assert _readers() == before
    with rasterio.open(tmp_path / "kept.tif") as a, rasterio.open(tmp_path / "own.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_reads_on_threads_of_its_own() -> None:
    """A process forked after a run (a multiprocessing pool, a DataLoader's workers) has the parent's pools but
    none of their threads: its reads start threads of its own instead of waiting for ever."""
    assert reader_threads(2).submit(lambda: 1).result(timeout=10) == 1  # the parent's pool, with its threads
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if its reads run
        code = 1
        try:
            readers = reader_threads(2)
            code = 0 if [readers.submit(lambda k=k: k).result(timeout=10) for k in range(4)] == [0, 1, 2, 3] else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_waits_traced_and_garbage_collection_paused_leave_the_mask_and_the_collector_as_they_were(
        make_tif, tmp_path, tiny_model) -> None:
    """``Tuning.trace_waits`` lists the reads waited for and the collector's pauses; ``collect_garbage=False``
    pauses the collector during the run only. Neither changes a pixel."""
    import gc

    model = tiny_model()
    scene = make_tif(smooth_image((3, 300, 260), seed=8))
    config = RunConfig(device="cpu", precision="fp32", block_size=64, batch_size=3, output_format="gtiff")
    plain = segment_scene(scene, tmp_path / "plain.tif", config, model=model)
    seen = []
    gc.callbacks.append(lambda phase, info: seen.append(gc.isenabled()) if phase == "start" else None)
    try:
        traced = segment_scene(scene, tmp_path / "traced.tif", config, model=model,
                               tuning=Tuning(collect_garbage=False, trace_waits=True))
        gc.collect()
    finally:
        gc.callbacks.pop()
    assert gc.isenabled() and seen  # on again after the run
    marks = traced.stage_seconds
    assert marks["gc pauses"] >= 0 and marks["gc s"] >= 0 and "gc s" not in plain.stage_seconds
    # waits over 1 ms only, rounded to the ms as every stage's seconds are (a 1.2 ms wait reads 0.001)
    assert all(v >= 1e-3 for k, v in marks.items() if k.startswith(("read wait row", "write wait row")))
    with rasterio.open(tmp_path / "plain.tif") as a, rasterio.open(tmp_path / "traced.tif") as b:
        assert np.array_equal(a.read(), b.read())
