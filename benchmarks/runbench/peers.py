"""``--parts peers``: the model-bound path at the scene's own resolution (f = 1, issue 35): geoseg against the
network's floor for each model, and against a pytorch-toolbelt script (first model)."""

from __future__ import annotations

import argparse
from pathlib import Path

import rasterio

from benchmarks.runbench.children import spawn
from benchmarks.runbench.common import BATCH, fmt, patches_of, table
from benchmarks.runbench.floors import model_floor
from geoseg.io.scene import open_scene
from geoseg.models.card import ModelCard


def part_peers(scene: Path, models: list[Path], args: argparse.Namespace) -> None:
    """For each model: its floors (eager, CUDA graph) over the run's patches, geoseg warm and steady at f = 1 with
    the device thread's stages (and what the GPU did, with ``--profile-gpu``); the toolbelt script for the first
    model unless ``--no-toolbelt``."""
    info = open_scene(scene)
    head = ("scene", "model", "tool", "seconds", "steady s", "MP/s", "x model floor", "peak RSS GiB",
            "peak GPU GiB", "GPU busy")
    rows, details = [], []
    for n, model in enumerate(models):
        card = ModelCard.load(model / "config.json")
        patches = patches_of(scene, card, 1)
        floors = {how: model_floor(card, patches, args.device, how) for how in ("eager", "graph")}
        floor = min(floors.values())
        settings = {"device": args.device, "match_resolution": False, "profile": args.profile_gpu,
                    "device_stages": args.device_stages, "output_format": args.format}
        geo = spawn("geoseg", scene, args.workdir / f"peer-geoseg-{n}.tif", model, args.source, settings)
        row, best = geoseg_row([scene.name, card.encoder, "geoseg --no-match-resolution"], geo, info.megapixels, floor)
        rows.append(row)
        details.append(f"{card.encoder}: {patches} patches, floors eager {floors['eager']:.2f} s, graph "
                       f"{floors['graph']:.2f} s; batch {geo['batch']}; model s {geo['model s']:.2f} / steady "
                       f"{geo['steady']['model s']:.2f}; stages {geo['stages']}; steady stages "
                       f"{geo['steady']['stages']}" + (f"; GPU timeline {geo['timeline']}" if geo["timeline"] else "")
                       + (f"; device seconds by step {geo['device stages']}" if geo["device stages"] else ""))
        for first in args.first_row_variants or ():
            var = spawn("geoseg", scene, args.workdir / f"peer-geoseg-{n}-first{first}.tif", model, args.source,
                        {**settings, "profile": False, "device_stages": False, "first_row_patches": first})
            rows.append(geoseg_row([scene.name, card.encoder, f"geoseg, first row of {first} patch rows"], var,
                                   info.megapixels, floor)[0])
            details.append(f"{card.encoder}, first row of {first} patch rows: steady stages {var['steady']['stages']}")
        if n or args.no_toolbelt:
            continue
        peer = spawn("toolbelt", scene, args.workdir / "peer-toolbelt.tif", model, args.source,
                     {"device": args.device})
        with rasterio.open(args.workdir / "peer-geoseg-0.tif") as a, \
                rasterio.open(args.workdir / "peer-toolbelt.tif") as b:
            agreement = float((a.read(1) == b.read(1)).mean())
        rows.append([scene.name, card.encoder, "pytorch-toolbelt script", f"{peer['seconds']:.2f}", "",
                     f"{info.megapixels / peer['seconds']:.1f}", f"{peer['seconds'] / floor:.2f}",
                     f"{peer['rss']:.2f}", fmt(peer["gpu_gib"], ".2f"), fmt(peer["busy"], ".0%")])
        rows.append([scene.name, card.encoder, "toolbelt / geoseg", f"{peer['seconds'] / best:.2f}x", "", "", "",
                     f"{peer['rss'] / geo['rss']:.2f}x", "", ""])
        details.append(f"masks agree on {agreement:.2%} (blend windows differ)")
    table(f"peers (f=1, tile {card.tile_size} overlap {card.overlap}, bf16, batch {BATCH}, geoseg writes --format "
          f"{args.format} (the script: a tiled GeoTIFF); x model floor: the better of warm and steady against the "
          f"better floor)", head, rows)
    for line in details:
        print("-", line)


def geoseg_row(lead: list[str], run: dict, megapixels: float, floor: float) -> tuple[list[str], float]:
    """A geoseg child's table row after ``lead`` (scene, model, tool): warm and steady seconds, MP/s and x floor of the
    better of the two, memory and GPU busy; and that better time."""
    best = min(run["seconds"], run["steady"]["seconds"])
    return [*lead, f"{run['seconds']:.2f}", f"{run['steady']['seconds']:.2f}", f"{megapixels / best:.1f}",
            f"{best / floor:.2f}", f"{run['rss']:.2f}", fmt(run["gpu_gib"], ".2f"), fmt(run["busy"], ".0%")], best
