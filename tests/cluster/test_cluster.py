"""dask.distributed (geoseg/cluster/): on a CPU LocalCluster of 2 workers, everything equals the local run."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import rasterio

from geoseg import RunConfig, segment_array, segment_scene
from geoseg.batch.jobs import Job
from geoseg.batch.log import EventLog
from geoseg.batch.runner import run_batch
from geoseg.batch.tasks import plan_tasks
from geoseg.errors import ModelError
from tests.helpers import smooth_image, write_tif

FP32 = {"device": "cpu", "precision": "fp32", "backend": "torch"}


def _config(package) -> RunConfig:
    return RunConfig(model=str(package), **FP32)


def _scenes(folder, count=3, shape=(3, 230, 260)):
    folder.mkdir()
    paths = []
    for i in range(count):
        image = smooth_image(shape, seed=20 + i, dtype="uint16")
        image[:, :12, :30] = 0
        paths.append(write_tif(folder / f"s{i}.tif", image, nodata=0))
    return paths


def _pixels(path) -> np.ndarray:
    with rasterio.open(path) as ds:
        return ds.read()


def test_a_distributed_batch_equals_a_local_batch_byte_for_byte(client, package, tmp_path) -> None:
    from geoseg.cluster.scenes import DaskScenes

    _scenes(tmp_path / "in")
    summaries = {}
    for where, runner in (("local", None), ("cluster", DaskScenes(client))):
        tasks, _ = plan_tasks([Job("j", (str(tmp_path / "in"),), tmp_path / where, config=_config(package))])
        with EventLog(tmp_path / where / "log.jsonl") as log:
            summaries[where] = run_batch(tasks, log=log, runner=runner)
    assert summaries["local"].counts == summaries["cluster"].counts == {"done": 3, "skipped": 0, "failed": 0,
                                                                        "cancelled": 0}
    for i in range(3):
        local = (tmp_path / "local" / f"s{i}.mask.tif").read_bytes()
        assert (tmp_path / "cluster" / f"s{i}.mask.tif").read_bytes() == local
    assert len(np.unique(_pixels(tmp_path / "local" / "s0.mask.tif"))) >= 3
    events = [line for line in (tmp_path / "cluster" / "log.jsonl").read_text().splitlines()]
    kinds = [__import__("json").loads(e)["event"] for e in events]
    assert kinds.count("scene_start") == kinds.count("scene_done") == 3  # the workers' events, in the batch's log
    # each worker ran its scenes on its one device thread (its cuDNN plans stay warm), not on dask's threads
    ran = client.run(lambda: [t.name for t in threading.enumerate() if t.name.startswith("geoseg-device")])
    assert any(ran.values()) and all(len(names) <= 1 for names in ran.values())
    # a rerun on the cluster skips every scene (resume records), as a local rerun does
    tasks, _ = plan_tasks([Job("j", (str(tmp_path / "in"),), tmp_path / "cluster", config=_config(package))])
    again = run_batch(tasks, runner=DaskScenes(client))
    assert again.counts["skipped"] == 3


def test_one_scene_split_over_two_workers_equals_the_one_process_mask(client, package, tmp_path) -> None:
    from geoseg.cluster.split import segment_scene_on

    (path,) = _scenes(tmp_path / "in", count=1, shape=(3, 1300, 420))
    config = replace(_config(package), probabilities="top", uncertainty="margin")
    one = segment_scene(path, tmp_path / "one.tif", config)
    split = segment_scene_on(client, path, tmp_path / "split.tif", config, rows=512)  # 3 bands
    np.testing.assert_array_equal(_pixels(tmp_path / "split.tif"), _pixels(tmp_path / "one.tif"))
    np.testing.assert_array_equal(_pixels(tmp_path / "split.probs.tif"), _pixels(tmp_path / "one.probs.tif"))
    np.testing.assert_array_equal(_pixels(tmp_path / "split.uncertainty.tif"),
                                  _pixels(tmp_path / "one.uncertainty.tif"))
    assert one.seam_share is not None and split.seam_share is None  # regions blended apart have no seam figure
    assert (tmp_path / "split.tif").read_bytes() == (tmp_path / "one.tif").read_bytes()  # overviews too
    assert split.class_shares == one.class_shares and split.nodata_share == one.nodata_share
    assert split.patches > one.patches  # the patch rows two bands share are predicted twice


def _kill_a_busy_worker(client, deadline_s: float = 60.0) -> int:
    """SIGKILL the process of a worker that is running a task; its pid."""
    pids = client.run(os.getpid)
    start = time.monotonic()
    while time.monotonic() - start < deadline_s:
        busy = [w for w, tasks in client.processing().items() if tasks and w in pids]
        if busy:
            time.sleep(0.5)  # into the task
            os.kill(pids[busy[0]], signal.SIGKILL)
            return pids[busy[0]]
        time.sleep(0.05)
    raise AssertionError("no worker became busy")


def test_a_worker_killed_mid_run_and_the_scene_still_comes_out_whole(own_client, package, tmp_path) -> None:
    from geoseg.cluster.split import segment_scene_on

    client = own_client

    (path,) = _scenes(tmp_path / "in", count=1, shape=(3, 1300, 420))
    config = _config(package)
    segment_scene(path, tmp_path / "one.tif", config)
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(s=segment_scene_on(client, path, tmp_path / "split.tif",
                                                                            config, rows=512)))
    thread.start()
    killed = _kill_a_busy_worker(client)
    thread.join(timeout=300)
    assert "s" in done, "the run did not finish after a worker was killed"
    assert (tmp_path / "split.tif").read_bytes() == (tmp_path / "one.tif").read_bytes()
    assert killed not in client.run(os.getpid).values()


def test_a_worker_killed_mid_batch_leaves_no_partial_mask(own_client, package, tmp_path) -> None:
    from geoseg.cluster.scenes import DaskScenes

    client = own_client

    _scenes(tmp_path / "in", count=2, shape=(3, 700, 400))
    tasks, _ = plan_tasks([Job("j", (str(tmp_path / "in"),), tmp_path / "local", config=_config(package))])
    run_batch(tasks)
    tasks, _ = plan_tasks([Job("j", (str(tmp_path / "in"),), tmp_path / "cluster", config=_config(package))])
    done: dict = {}
    thread = threading.Thread(target=lambda: done.update(s=run_batch(tasks, runner=DaskScenes(client))))
    thread.start()
    _kill_a_busy_worker(client)
    thread.join(timeout=300)
    assert done["s"].counts["done"] == 2
    for i in range(2):
        assert (tmp_path / "cluster" / f"s{i}.mask.tif").read_bytes() == \
            (tmp_path / "local" / f"s{i}.mask.tif").read_bytes()
    assert not list((tmp_path / "cluster").glob(".*partial*"))  # the dead worker's temporary files were removed


def test_a_cancelled_distributed_batch_stops_its_running_scene_and_drops_the_rest(client, package, tmp_path) -> None:
    from geoseg.cluster.scenes import DaskScenes

    _scenes(tmp_path / "in", count=4, shape=(3, 900, 500))
    tasks, _ = plan_tasks([Job("j", (str(tmp_path / "in"),), tmp_path / "out", config=_config(package))])
    cancel, done = threading.Event(), {}
    thread = threading.Thread(target=lambda: done.update(s=run_batch(tasks, runner=DaskScenes(client),
                                                                      cancel=cancel)))
    thread.start()
    deadline = time.monotonic() + 120
    while not any(client.processing().values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # into the scenes
    cancel.set()
    thread.join(timeout=120)
    counts = done["s"].counts
    assert counts["cancelled"] >= 2 and counts["done"] + counts["cancelled"] == 4
    finished = {p.name for p in (tmp_path / "out").glob("*.mask.tif")}
    assert finished == {f"s{i}.mask.tif" for i, r in enumerate(done["s"].scenes) if r.status == "done"}
    assert not list((tmp_path / "out").glob(".*partial*")) and not list((tmp_path / "out").glob(".*.claim"))


def test_segment_array_on_the_cluster_loads_the_model_on_each_worker(client, package, tmp_path) -> None:
    rioxarray = pytest.importorskip("rioxarray")
    (path,) = _scenes(tmp_path / "in", count=1)
    segment_scene(path, tmp_path / "ref.tif", _config(package))
    pixels = rioxarray.open_rasterio(path, chunks={"band": -1, "y": 100, "x": 100})
    labels = segment_array(pixels, str(package), **FP32)
    np.testing.assert_array_equal(client.compute(labels.data).result(), _pixels(tmp_path / "ref.tif")[0])


def test_a_network_held_in_memory_cannot_go_to_workers(client, tiny_model) -> None:
    labels = segment_array(np.zeros((3, 64, 64), np.float32), tiny_model(), **FP32)
    with pytest.raises(ModelError, match="save it as a model package"):
        client.compute(labels).result()


def test_local_workers_start_without_dasks_tiny_malloc_trim_threshold(client) -> None:
    env = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert set(env.values()) == {None}
