"""``--parts decode`` and ``decode-floors``: who decodes the compressed tiles."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import rasterio

from benchmarks.runbench.children import printable, spawn
from benchmarks.runbench.common import fmt, patches_of, table
from benchmarks.runbench.floors import decode_floors, model_floor, write_floor
from geoseg.engine.pipeline import Tuning
from geoseg.engine.resample import resolution_factor
from geoseg.io.scene import open_scene
from geoseg.io.threads import default_workers
from geoseg.models.card import ModelCard


def part_decode(scenes: list[Path], model: Path, args: argparse.Namespace) -> None:
    threads = default_workers()
    card = ModelCard.load(model / "config.json")
    head = ("scene", "codec", "compressed GB", "I/O floor s", "decode floor s: CPU / GPU / hybrid",
            "device share (hybrid floor)", "model floor s", "write floor s",
            "geoseg steady s: cpu / gpu / hybrid", "gpu / max(floors)", "hybrid / max(floors)",
            "of which finishing the mask s (gpu)", "GPU busy: cpu / gpu / hybrid",
            "device share (run)", "pixels differing gpu / hybrid", "device decode busy s (hybrid)")
    rows, threads_rows = [], []
    for scene in scenes:
        info = open_scene(scene)
        factor = resolution_factor(info.pixel_size_m, card.resolution_m)
        patches = patches_of(scene, card, factor)
        floors = decode_floors(scene, factor, card, threads, args.device)
        model_s = min(model_floor(card, patches, args.device, how) for how in ("eager", "graph"))
        runs, masks = {}, {}
        modes = {"cpu": {}, "gpu": {}, "hybrid": {}}
        if args.priority_ab:  # the network's stream ahead of the decoder's: what the priority buys
            modes["gpu, high priority"] = {"network_priority": -1}
        if args.overview_ab:  # only the COG's first overview level on the device, the writer making the rest
            modes["gpu, one device level"] = {"device_overview_levels": 1}
        for n in args.stream_variants:
            modes[f"gpu, {n} streams"] = {"decode_streams": n}
            modes[f"hybrid, {n} streams"] = {"decode_streams": n}
        for variant in args.hybrid_variants:  # SHARE:READERS, e.g. 0.25:8
            share, _, workers = variant.partition(":")
            modes[f"hybrid, share {share}, {workers or threads} readers"] = {
                "hybrid_share": float(share), "workers": int(workers or threads)}
        for name, extra in modes.items():
            out = args.workdir / f"mask-{name.replace(', ', '-').replace(' ', '-')}.tif"
            runs[name] = spawn("geoseg", scene, out, model, args.source,
                               {"device": args.device, "decode": name.split(",")[0],
                                "reproducible": not args.tuned, "output_format": args.format,
                                "profile": args.profile_gpu, **extra})
            with rasterio.open(out) as ds:
                masks[name] = ds.read(1)
        for name in [n for n in runs if n.startswith("hybrid, share") or n.endswith(" streams")]:
            steady = runs[name]["steady"]
            print(f"variant {scene.name} {name}: steady {steady['seconds']:.2f} s (gpu "
                  f"{runs['gpu']['steady']['seconds']:.2f}, hybrid {runs['hybrid']['steady']['seconds']:.2f}); "
                  f"finishing {steady['finish s']:.2f} s; stages {steady['stages']}; pixels differing from cpu "
                  f"{int((masks[name] != masks['cpu']).sum())}", flush=True)
        for name, run in runs.items():
            if run.get("timeline"):
                print(f"GPU timeline {scene.name} {name} (a third run, profiled; steady run "
                      f"{run['steady']['seconds']:.2f} s): {json.dumps(printable(run['timeline']))}", flush=True)
        if args.overview_ab:
            one = runs["gpu, one device level"]["steady"]
            differ = int((masks["gpu, one device level"] != masks["gpu"]).sum())
            print(f"overview A/B {scene.name}: gpu steady {runs['gpu']['steady']['seconds']:.2f} s (levels on the "
                  f"device: {Tuning().device_overview_levels}) vs {one['seconds']:.2f} s (1); stages "
                  f"{runs['gpu']['steady']['stages']} vs {one['stages']}; pixels differing {differ}", flush=True)
        if args.priority_ab:
            high = runs["gpu, high priority"]["steady"]
            print(f"priority A/B {scene.name}: gpu steady {runs['gpu']['steady']['seconds']:.2f} s "
                  f"(network stream priority {Tuning().network_priority}) vs {high['seconds']:.2f} s (priority -1); "
                  f"stages {runs['gpu']['steady']['stages']} vs {high['stages']}; pixels differing "
                  f"{int((masks['gpu, high priority'] != masks['gpu']).sum())}", flush=True)
        write = write_floor(args.workdir / "mask-cpu.tif", args.workdir / "rewrite.tif")
        floor = max(model_s, floors["io s"], min(floors["gpu decode s"], floors["hybrid decode s"]), write)
        stages = runs["hybrid"]["steady"]["stages"]
        share = stages.get("device decode chunks", 0) / max(1, stages.get("device decode chunks", 0)
                                                            + stages.get("reader chunks", 0))
        steady = {m: r["steady"]["seconds"] for m, r in runs.items()}
        rows.append([scene.name, "zstd" if "zstd" in scene.name else "deflate", f"{floors['compressed GB']:.2f}",
                     f"{floors['io s']:.2f}",
                     f"{floors['cpu decode s']:.2f} / {floors['gpu decode s']:.2f} / {floors['hybrid decode s']:.2f}",
                     f"{floors['hybrid device share']:.0%}", f"{model_s:.2f}", f"{write:.2f}",
                     " / ".join(f"{steady[m]:.2f}" for m in ("cpu", "gpu", "hybrid")),
                     f"{steady['gpu'] / floor:.2f}", f"{steady['hybrid'] / floor:.2f}",
                     f"{runs['gpu']['steady']['finish s']:.2f}",
                     " / ".join(fmt(runs[m]["busy"], ".0%") for m in ("cpu", "gpu", "hybrid")), f"{share:.0%}",
                     " / ".join(f"{int((masks[m] != masks['cpu']).sum())}" for m in ("gpu", "hybrid")),
                     f"{stages.get('device decode busy', 0):.2f}"])
        print(json.dumps({"row": rows[-1], "floors": floors, "runs": runs}), file=sys.stderr, flush=True)
        threads_rows.append([scene.name, *(
            f"{floors.get(f'{m} reader chunks', 0)} / {floors.get(f'{m} reader gdal ms per chunk', 0):.1f} / "
            f"{floors.get(f'{m} reader rest ms per chunk', 0):.1f} / {floors.get(f'{m} device batches', 0)} / "
            f"{floors.get(f'{m} device busy s', 0):.2f} / {floors.get(f'{m} device fetch s', 0):.2f}"
            for m in ("cpu", "gpu", "hybrid"))])
    table(f"decode: who decodes the tiles (steady runs, {'tuned' if args.tuned else '--reproducible'}, "
          f"--format {args.format}; "
          "max(floors) = max(model, I/O, the faster device decode, write))", head, rows)
    table("decode floors, by thread (the second pass of each mode): reader chunks / GDAL ms per chunk / the rest "
          "of a chunk's load ms (staging, copies, GIL waits) / device batches / device busy s / device fetch s",
          ("scene", "cpu", "gpu", "hybrid"), threads_rows)


def part_decode_floors(scenes: list[Path], model: Path, args: argparse.Namespace) -> None:
    """The decode floors alone (no geoseg runs: a lease's quick loop), for each ``--reader-threads`` and
    ``--hybrid-shares``: whether fewer reader threads, or a larger share for the decoder, let hybrid
    decoding beat the GPU alone; and where the GPU-only decoder's thread spends its time."""
    card = ModelCard.load(model / "config.json")
    shares = tuple(args.hybrid_shares or ())
    names = ("hybrid", *(f"hybrid {s:g}" for s in shares))
    bindings = ("gpu bindings", "hybrid bindings", "gpu 1 stream") if args.device == "cuda" else ()
    rows = []
    for scene in scenes:
        factor = resolution_factor(open_scene(scene).pixel_size_m, card.resolution_m)
        for threads in args.reader_threads or [default_workers()]:
            floors = decode_floors(scene, factor, card, threads, args.device, shares)
            print(json.dumps({"scene": scene.name, "threads": threads, "floors": floors}), file=sys.stderr, flush=True)
            rows.append([scene.name, str(threads), f"{floors['io s']:.2f}", *(
                f"{floors[f'{m} decode s']:.2f}" for m in ("cpu", "gpu")), *(
                f"{floors[f'{m} decode s']:.2f} ({floors[f'{m} device share']:.0%})" for m in names), *(
                f"{floors[f'{m} decode s']:.2f} ({floors[f'{m} device share']:.0%})" for m in bindings),
                *(" / ".join(f"{floors[f'{m} device {k}']:.3f}" for k in ("fetch s", "inflate s", "place s", "busy s"))
                  + f" / {floors[f'{m} device batches']}" for m in ("gpu", *bindings[:1])), *(
                f"{floors[f'{m} reader gdal ms per chunk']:.1f} / {floors[f'{m} reader rest ms per chunk']:.1f}"
                for m in ("cpu", "hybrid", *bindings[1:2]))])
    table(f"decode floors by reader threads (the second pass of each mode; GIL switch interval "
          f"{sys.getswitchinterval() * 1e3:g} ms)",
          ("scene", "reader threads", "I/O floor s", "CPU decode s", "GPU decode s",
           *(f"{m} decode s (device share)" for m in (*names, *bindings)),
           *(f"{m}: decoder thread s, fetch / inflate call / predictor+place launch / busy / batches"
             for m in ("gpu", *bindings[:1])),
           "readers ms per chunk, GDAL / rest: cpu", "hybrid", *bindings[1:2]), rows)
