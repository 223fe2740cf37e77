"""The dask.distributed path against the direct engine, on the same scenes, in the same run.

    python benchmarks/bench_cluster.py SOURCE.tif --model MODEL_FOLDER --size 16384 --scenes 4 --rounds 2

* **batch**: ``run_batch`` in this process (one scene at a time, the engine's own threads) against
  ``run_batch`` with :class:`geoseg.cluster.scenes.DaskScenes` on a local cluster of one GPU worker
  (``--gpus 1``: a worker process pinned to GPU 0 with all cores), rounds interleaved, both warm
  (each has segmented a scene before the rounds). Target (issue 15): the cluster ≤ 1.10x the direct time.
* **split**: one scene through :func:`geoseg.cluster.split.segment_scene_on` (row strips, the region
  engine, one writer) on the same one-GPU cluster against ``segment_scene``: the cost of the band halos
  and of moving labels to the writer, which a second GPU would have to win back.

Scenes are built from a real one (benchmarks/make_scene.py) once; the batch's scenes are links to it
(the same bytes, so the page cache treats both paths alike). Masks of the two paths are compared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.make_scene import build_scene
from benchmarks.runbench.common import differing, ensure_weights
from geoseg.batch.jobs import Job
from geoseg.batch.runner import run_batch
from geoseg.batch.tasks import plan_tasks
from geoseg.cluster.scenes import DaskScenes
from geoseg.cluster.split import segment_scene_on
from geoseg.cluster.workers import ClusterSpec, connect
from geoseg.config import RunConfig
from geoseg.engine.device import DeviceSession
from geoseg.run import segment_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--scenes", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--cpu-workers", type=int, default=None, help="CPU workers instead (no GPU machine)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench-cluster"))
    parser.add_argument("--no-split", action="store_true")
    args = parser.parse_args()

    args.workdir.mkdir(parents=True, exist_ok=True)
    ensure_weights(args.model)
    base = build_scene(args.source, args.workdir / f"base-{args.size}.tif", args.size)
    warm = build_scene(args.source, args.workdir / "warm-2048.tif", 2048)
    scenes = args.workdir / "scenes"
    scenes.mkdir(exist_ok=True)
    for i in range(args.scenes):
        link = scenes / f"scene{i:02d}.tif"
        if not link.exists():
            link.symlink_to(base)
    DeviceSession.tune_for_many_scenes()
    spec = ClusterSpec(gpus=None if args.cpu_workers else args.gpus, workers=args.cpu_workers)
    rows: list[list[str]] = []
    split_rows: list[list[str]] = []
    with connect(spec) as client:
        client.wait_for_workers(spec.gpus or spec.workers or 1)
        runner = DaskScenes(client)
        warm_dir = args.workdir / "warm"
        warm_dir.mkdir(exist_ok=True)
        if not (warm_dir / warm.name).exists():
            (warm_dir / warm.name).symlink_to(warm)
        # Tuned first: --reproducible turns cuDNN's timing off for the rest of a process's life.
        for reproducible in (False, True):
            config = RunConfig(model=str(args.model), device=args.device, output_format="cog",
                               reproducible=reproducible, overwrite=True)
            mode = "reproducible" if reproducible else "tuned"

            def tasks(where: str, folder: Path = scenes, config: RunConfig = config) -> list:
                return plan_tasks([Job(where, (str(folder),), args.workdir / where, config=config)])[0]

            for where, how in (("warm-direct", None), ("warm-cluster", runner)):  # models loaded, cuDNN tuned
                run_batch(tasks(where, warm_dir), force=True, parallel=1, runner=how)
            walls: dict[str, list[float]] = {"direct": [], "cluster": []}
            scene_s: dict[str, list[float]] = {"direct": [], "cluster": []}
            for r in range(args.rounds):
                for name, how in (("direct", None), ("cluster", runner))[:: 1 if r % 2 == 0 else -1]:
                    started = time.perf_counter()
                    summary = run_batch(tasks(name), force=True, parallel=1, runner=how)
                    walls[name].append(time.perf_counter() - started)
                    scene_s[name] += [sc.seconds for sc in summary.scenes]
                    assert summary.counts["done"] == args.scenes, summary.counts
                    print(f"{mode} round {r} {name} batch: {walls[name][-1]:.2f} s", flush=True)
            differ = sum(differing(args.workdir / "direct" / f"scene{i:02d}.mask.tif",
                                   args.workdir / "cluster" / f"scene{i:02d}.mask.tif") for i in range(args.scenes))
            direct = statistics.median(walls["direct"])
            for name in ("direct", "cluster"):
                m = statistics.median(walls[name])
                rows.append([mode, f"{name} batch", f"{m:.2f}", f"{statistics.median(scene_s[name]):.2f}",
                             f"{m / direct:.3f}x", "" if name == "direct" else f"{differ / args.scenes:.2e}"])
            # Where a scene's seconds go, in this process and in the worker (the device thread's stages).
            here = segment_scene(base, args.workdir / "probe-here.tif", config)
            there = client.submit(probe_scene, base, args.workdir / "probe-worker.tif", config, pure=False).result()
            print(f"{mode} segment_scene here: {here.seconds:.2f} s {here.stage_seconds}", flush=True)
            print(f"{mode} segment_scene in the worker: {there[0]:.2f} s {there[1]}", flush=True)
            if args.no_split:
                continue
            segment_scene_on(client, warm, args.workdir / "warm-split.tif", config)
            one, spread = [], []
            for r in range(args.rounds):
                started = time.perf_counter()
                plain = segment_scene(base, args.workdir / "one.tif", config)
                one.append(time.perf_counter() - started)
                started = time.perf_counter()
                split = segment_scene_on(client, base, args.workdir / "split.tif", config)
                spread.append(time.perf_counter() - started)
                print(f"{mode} round {r} split: direct {one[-1]:.2f} s, bands {spread[-1]:.2f} s", flush=True)
            split_rows.append([mode, f"{statistics.median(one):.2f}", f"{statistics.median(spread):.2f}",
                               f"{statistics.median(spread) / statistics.median(one):.2f}x",
                               f"{plain.patches} / {split.patches}",
                               f"{differing(args.workdir / 'one.tif', args.workdir / 'split.tif'):.2e}"])

    workers = f"{args.gpus} GPU worker(s)" if not args.cpu_workers else f"{args.cpu_workers} CPU worker(s)"
    print(f"\n{args.scenes} scenes of {args.size}² ({os.cpu_count()} cores), {workers}, {args.rounds} rounds "
          f"interleaved; medians")
    print("| cuDNN | path | batch s | scene s | vs direct | pixels differing from direct |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    if split_rows:
        print(f"\none {args.size}² scene split into row strips on the same cluster (vs segment_scene in this process):")
        print("| cuDNN | direct s | bands s | ratio | patches direct / bands | pixels differing |")
        print("|---|---|---|---|---|---|")
        for row in split_rows:
            print("| " + " | ".join(row) + " |")


def probe_scene(scene: Path, out: Path, config: RunConfig) -> tuple[float, dict]:
    """``segment_scene`` on a worker with its resident model and session, as a batch's scene runs there."""
    from geoseg.engine.resident import RESIDENT, ModelRef

    summary = segment_scene(scene, out, config, loader=lambda name, trust: RESIDENT.model(ModelRef(name, trust)),
                            session=RESIDENT.session)
    return summary.seconds, summary.stage_seconds


if __name__ == "__main__":
    main()
