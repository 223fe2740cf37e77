"""``--parts options``: run settings against the default run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import rasterio

from benchmarks.runbench.children import spawn
from benchmarks.runbench.common import fmt, patches_of, table
from benchmarks.runbench.floors import model_floor
from geoseg.engine.resample import resolution_factor
from geoseg.io.scene import open_scene
from geoseg.models.card import ModelCard

#: The settings ``--parts options`` compares, by the name ``--options`` selects them with.
OPTIONS = {
    "default": ("bf16 (default)", {}),
    "eager": ("--no-cuda-graphs", {"cuda_graphs": False}),
    "compile": ("--compile", {"compile": True}),
    "fp32": ("fp32", {"precision": "fp32"}),
    "auto": ("batch size auto", {"batch_size": None}),
    "oom": ("--batch-size 2048 (out-of-memory back-off)", {"batch_size": 2048}),
    "zlevel6": ("mask deflate level 6 (GDAL's default)", {"zlevel": 6}),
    "readers": ("one reader per core", {"workers": os.cpu_count() or 1}),
    "blocks": ("--block-size 1024 (the mask should not change)", {"block_size": 1024}),
    "chunk32": ("read chunks of 32 MiB", {"chunk_bytes": 32 * 2**20}),
    "chunk8": ("read chunks of 8 MiB", {"chunk_bytes": 8 * 2**20}),
    "hostregister": ("pinned memory page-locked by 8 threads (cudaHostRegister)",
                     {"env": {"PYTORCH_CUDA_ALLOC_CONF": "pinned_use_cuda_host_register:True,"
                                                        "pinned_num_register_threads:8"}}),
}


def part_options(scenes: list[Path], model: Path, args: argparse.Namespace) -> None:
    card = ModelCard.load(model / "config.json")
    head = ("scene", "settings", "warm-up s (incl. compile)", "geoseg s", "steady s", "model stage s",
            "patches/s in model",
            "x default run", "pixels changed vs default", "batch used", "peak RSS GiB", "peak GPU GiB",
            "device thread s: wait reads / take in / blocks / labels / wait writes")
    chosen = ["default", *(k for k in args.options if k != "default")]
    for scene in scenes:
        info = open_scene(scene)
        factor = resolution_factor(info.pixel_size_m, card.resolution_m)
        patches = patches_of(scene, card, factor)
        floors = {how: model_floor(card, patches, args.device, how)
                  for how in ("eager", "graph", "compile") if how != "compile" or "compile" in chosen}
        rows, masks, base = [], {}, None
        for key in chosen:
            name, settings = OPTIONS[key]
            out = args.workdir / f"opt-{key}.tif"
            r = spawn("geoseg", scene, out, model, args.source, {"device": args.device, **settings})
            with rasterio.open(out) as ds:
                masks[key] = ds.read(1)
            base = base or r["seconds"]
            changed = float((masks[key] != masks["default"]).mean())
            rows.append([scene.name, name, f"{r['warmup s']:.1f}", f"{r['seconds']:.2f}",
                         f"{r['steady']['seconds']:.2f}", f"{r['model s']:.2f}",
                         f"{r['patches'] / r['model s']:.0f}", f"{r['seconds'] / base:.2f}", f"{changed:.4%}",
                         str(r["batch"]), f"{r['rss']:.2f}", fmt(r["gpu_gib"], ".2f"),
                         " / ".join(f"{v:.2f}" for v in r["stages"].values())])
            print(json.dumps({"row": rows[-1], "run": r}), file=sys.stderr, flush=True)
        table(f"options ({card.encoder}, f={factor}, {info.width}x{info.height}; model floors for {patches} "
              "patches: " + ", ".join(f"{k} {v:.2f} s" for k, v in floors.items()) + ")", head, rows)
