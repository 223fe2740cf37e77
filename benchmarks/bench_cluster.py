"""The dask.distributed path against the direct engine, on the same scenes, in the same run.

    python benchmarks/bench_cluster.py SOURCE.tif --model MODEL_FOLDER --size 16384 --scenes 4 --rounds 2

* **batch**: ``run_batch`` in this process (one scene at a time, the engine's own threads) against
  ``run_batch`` with :class:`geoseg.cluster.scenes.DaskScenes` on a local cluster of one GPU worker
  (``--gpus 1``: a worker process pinned to GPU 0 with all cores), rounds interleaved, both warm
  (each has segmented a scene before the rounds). Target (issue 15): the cluster ≤ 1.10x the direct time.
* **split**: one scene through :func:`geoseg.cluster.split.segment_scene_on` (row bands, the region
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
from benchmarks.bench_run import ensure_weights
from benchmarks.make_scene import build_scene
from geoseg.batch.jobs import Job
from geoseg.batch.runner import plan_tasks, run_batch
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
    config = RunConfig(model=str(args.model), device=args.device, output_format="cog")
    DeviceSession.tune_for_many_scenes()

    def tasks(where: str, folder: Path = scenes) -> list:
        return plan_tasks([Job(where, (str(folder),), args.workdir / where, config=config)])[0]

    spec = ClusterSpec(gpus=None if args.cpu_workers else args.gpus, workers=args.cpu_workers)
    results: dict[str, list[float]] = {"direct batch": [], "cluster batch": []}
    with connect(spec) as client:
        client.wait_for_workers(spec.gpus or spec.workers or 1)
        runner = DaskScenes(client)
        warm_dir = args.workdir / "warm"
        warm_dir.mkdir(exist_ok=True)
        if not (warm_dir / warm.name).exists():
            (warm_dir / warm.name).symlink_to(warm)
        for where, how in (("warm-direct", None), ("warm-cluster", runner)):  # models loaded, cuDNN tuned
            run_batch(tasks(where, warm_dir), force=True, parallel=1, runner=how)
        for r in range(args.rounds):
            for name, how in (("direct batch", None), ("cluster batch", runner))[:: 1 if r % 2 == 0 else -1]:
                started = time.perf_counter()
                summary = run_batch(tasks(name.split()[0]), force=True, parallel=1, runner=how)
                results[name].append(time.perf_counter() - started)
                assert summary.counts["done"] == args.scenes, summary.counts
                print(f"round {r} {name}: {results[name][-1]:.2f} s", flush=True)
        same = all((args.workdir / "direct" / f"scene{i:02d}.mask.tif").read_bytes()
                   == (args.workdir / "cluster" / f"scene{i:02d}.mask.tif").read_bytes() for i in range(args.scenes))
        split_rows = []
        if not args.no_split:
            segment_scene_on(client, warm, args.workdir / "warm-split.tif", replace_overwrite(config))
            for r in range(args.rounds):
                started = time.perf_counter()
                direct = segment_scene(base, args.workdir / "one.tif", replace_overwrite(config))
                one = time.perf_counter() - started
                started = time.perf_counter()
                split = segment_scene_on(client, base, args.workdir / "split.tif", replace_overwrite(config))
                spread = time.perf_counter() - started
                split_rows.append((one, spread, direct.patches, split.patches))
                print(f"round {r} split: direct {one:.2f} s, split {spread:.2f} s", flush=True)
            split_same = (args.workdir / "one.tif").read_bytes() == (args.workdir / "split.tif").read_bytes()

    workers = f"{args.gpus} GPU worker(s)" if not args.cpu_workers else f"{args.cpu_workers} CPU worker(s)"
    print(f"\n{args.scenes} scenes of {args.size}² ({os.cpu_count()} cores), {workers}, {args.rounds} rounds "
          f"interleaved; medians")
    print("| path | batch s | per scene s | vs direct |")
    print("|---|---|---|---|")
    direct = statistics.median(results["direct batch"])
    for name, times in results.items():
        m = statistics.median(times)
        print(f"| {name} | {m:.2f} | {m / args.scenes:.2f} | {m / direct:.3f}x |")
    print(f"masks identical: {same}")
    if split_rows:
        one = statistics.median(r[0] for r in split_rows)
        spread = statistics.median(r[1] for r in split_rows)
        print(f"\none {args.size}² scene split into row bands on the same cluster:")
        print("| path | s | patches |")
        print("|---|---|---|")
        print(f"| segment_scene (direct) | {one:.2f} | {split_rows[0][2]} |")
        print(f"| segment_scene_on (bands) | {spread:.2f} ({spread / one:.2f}x) | {split_rows[0][3]} |")
        print(f"masks identical: {split_same}")


def replace_overwrite(config: RunConfig) -> RunConfig:
    from dataclasses import replace

    return replace(config, overwrite=True)


if __name__ == "__main__":
    main()
