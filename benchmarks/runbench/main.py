"""``--parts main``: floors and geoseg end to end (cold, warm, steady)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.runbench.children import run_cli, spawn
from benchmarks.runbench.common import fmt, patches_of, table
from benchmarks.runbench.floors import model_floor, read_floor, write_floor
from geoseg.engine.resample import resolution_factor
from geoseg.io.scene import open_scene
from geoseg.io.threads import default_workers
from geoseg.models.card import ModelCard


def part_main(scenes: list[Path], models: list[Path], more: list[Path], args: argparse.Namespace) -> None:
    threads = default_workers()  # what geoseg uses: the read floor is timed with the same count
    runs = [(s, models[0]) for s in scenes] + [(scenes[min(1, len(scenes) - 1)], m) for m in more]
    head = ("scene", "encoder", "f", "patches", "read floor s (own / dask)", "model floor s (eager / graph)",
            "write floor s", "geoseg cold s", "geoseg warm s", "geoseg steady s", "MP/s steady",
            "warm / largest floor", "steady / largest floor", "cold / largest floor", "model stage / model floor",
            "peak RSS GiB", "peak GPU GiB", "GPU busy",
            "device thread s: wait reads / take in / blocks / labels / wait writes")
    rows = []
    for scene, model in runs:
        card = ModelCard.load(model / "config.json")
        info = open_scene(scene)
        factor = resolution_factor(info.pixel_size_m, card.resolution_m)
        patches = patches_of(scene, card, factor)
        reads = read_floor(scene, factor, card, threads)
        eager = model_floor(card, patches, args.device, "eager")
        graph = model_floor(card, patches, args.device, "graph")
        out = args.workdir / "mask.tif"
        cold = run_cli(scene, out, model, args.device, args.format)
        warm = spawn("geoseg", scene, out, model, args.source, {"device": args.device, "output_format": args.format})
        write = write_floor(out, args.workdir / "rewrite.tif")
        read = min(reads.values())
        floor = max(read, min(eager, graph), write)
        model_rate = warm["patches"] / warm["model s"] / (patches / min(eager, graph))
        steady = warm["steady"]["seconds"]
        rows.append([scene.name, card.encoder, str(factor), str(patches),
                     f"{reads['read own s']:.2f} / {reads['read dask s']:.2f}", f"{eager:.2f} / {graph:.2f}",
                     f"{write:.2f}", f"{cold:.2f}", f"{warm['seconds']:.2f}", f"{steady:.2f}",
                     f"{info.megapixels / steady:.1f}", f"{warm['seconds'] / floor:.2f}",
                     f"{steady / floor:.2f}", f"{cold / floor:.2f}", f"{model_rate:.0%}",
                     f"{warm['rss']:.2f}", fmt(warm["gpu_gib"], ".2f"), fmt(warm["busy"], ".0%"),
                     " / ".join(f"{v:.2f}" for v in warm["stages"].values())])
        print(f"done {scene.name} {card.encoder}: cold {cold:.1f} s, warm {warm['seconds']:.1f} s",
              file=sys.stderr, flush=True)
        print(json.dumps({"row": rows[-1], "warm": warm, "reads": reads, "eager": eager, "graph": graph}),
              file=sys.stderr, flush=True)
    table("main: floors and geoseg end to end", head, rows)
