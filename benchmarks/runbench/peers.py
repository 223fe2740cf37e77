"""``--parts peers``: geoseg against a pytorch-toolbelt script, at the scene's own resolution."""

from __future__ import annotations

import argparse
from pathlib import Path

import rasterio

from benchmarks.runbench.children import spawn
from benchmarks.runbench.common import BATCH, fmt, patches_of, table
from benchmarks.runbench.floors import model_floor
from geoseg.io.scene import open_scene
from geoseg.models.card import ModelCard


def part_peers(scene: Path, model: Path, args: argparse.Namespace) -> None:
    card = ModelCard.load(model / "config.json")
    info = open_scene(scene)
    patches = patches_of(scene, card, 1)
    floor = min(model_floor(card, patches, args.device, how) for how in ("eager", "graph"))
    geo = spawn("geoseg", scene, args.workdir / "peer-geoseg.tif", model, args.source,
                {"device": args.device, "match_resolution": False})
    peer = spawn("toolbelt", scene, args.workdir / "peer-toolbelt.tif", model, args.source, {"device": args.device})
    with rasterio.open(args.workdir / "peer-geoseg.tif") as a, rasterio.open(args.workdir / "peer-toolbelt.tif") as b:
        agreement = float((a.read(1) == b.read(1)).mean())
    head = ("scene", "tool", "seconds", "MP/s", "x model floor", "peak RSS GiB", "peak GPU GiB", "GPU busy")
    rows = [[scene.name, name, f"{r['seconds']:.2f}", f"{info.megapixels / r['seconds']:.1f}",
             f"{r['seconds'] / floor:.2f}", f"{r['rss']:.2f}", fmt(r["gpu_gib"], ".2f"), fmt(r["busy"], ".0%")]
            for name, r in (("geoseg --no-match-resolution", geo), ("pytorch-toolbelt script", peer))]
    rows.append([scene.name, "toolbelt / geoseg", f"{peer['seconds'] / geo['seconds']:.2f}x", "", "",
                 f"{peer['rss'] / geo['rss']:.2f}x", "", ""])
    table(f"peers ({card.encoder}, f=1, {patches} patches, tile {card.tile_size} overlap {card.overlap}, bf16, "
          f"batch {BATCH}; model floor {floor:.2f} s; masks agree on {agreement:.2%} (blend windows differ))",
          head, rows)
