"""``--parts peers``: the model-bound path at the scene's own resolution (f = 1, issue 35): geoseg against the
network's floor for each model, and against a pytorch-toolbelt script (first model)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.runbench.children import beyond, printable, spawn
from benchmarks.runbench.common import BATCH, differing, fmt, patches_of, table
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
    rows: list[list[str]] = []
    details: list[str] = []

    def add(row: list[str]) -> None:  # each row as it is measured too: a run cut short keeps what it measured
        rows.append(row)
        print("row:", " | ".join(row), file=sys.stderr, flush=True)

    def note(line: str) -> None:
        details.append(line)
        print("detail:", line, file=sys.stderr, flush=True)

    for n, model in enumerate(models):
        card = ModelCard.load(model / "config.json")
        patches = patches_of(scene, card, 1)
        floor_profile: dict = {}
        floors = {how: model_floor(card, patches, args.device, how, floor_profile if how == "graph" and
                                   args.profile_gpu else None) for how in ("eager", "graph")}
        floor = min(floors.values())
        settings = {"device": args.device, "match_resolution": False, "profile": args.profile_gpu,
                    "device_stages": args.device_stages, "output_format": args.format,
                    "steady_runs": args.steady_runs}
        geo = spawn("geoseg", scene, args.workdir / f"peer-geoseg-{n}.tif", model, args.source, settings)
        row, best = geoseg_row([scene.name, card.encoder, "geoseg --no-match-resolution"], geo, info.megapixels, floor)
        add(row)
        note(f"{card.encoder}: {patches} patches, floors eager {floors['eager']:.2f} s, graph "
             f"{floors['graph']:.2f} s; batch {geo['batch']}; model s {geo['model s']:.2f} / steady "
             f"{geo['steady']['model s']:.2f}; steady runs s {geo['steady']['all s']}; stages {geo['stages']}; "
             f"steady stages {geo['steady']['stages']}{diagnostics(geo)}")
        if geo["timeline"] and floor_profile:
            note(f"{card.encoder}: the graph floor's GPU timeline {printable(floor_profile)}; the run's kernels beyond "
                 f"the floor's (s more) {beyond(geo['timeline'], floor_profile)}")
        for k, spec in enumerate(args.variants):
            changes = parse_variant(spec)
            compiled = bool(changes.get("compile"))
            if compiled and n:
                continue  # compiling takes a minute a model: the first model only
            if compiled and "compile" not in floors:
                floors["compile"] = model_floor(card, patches, args.device, "compile")
                note(f"{card.encoder}: compiled floor {floors['compile']:.2f} s")
            out = args.workdir / f"peer-geoseg-{n}-v{k}.tif"
            var = spawn("geoseg", scene, out, model, args.source,
                        {**settings, "profile": False, "device_stages": False, **changes})
            against = floors["compile"] if compiled else floor
            add(geoseg_row([scene.name, card.encoder, f"geoseg, {spec}"], var, info.megapixels, against)[0])
            changed = differing(args.workdir / f"peer-geoseg-{n}.tif", out)
            note(f"{card.encoder}, {spec}: pixels changed {changed:.4%}; warm-up {var['warmup s']:.1f} s; "
                 f"steady runs s {var['steady']['all s']}; "
                 f"steady stages {var['steady']['stages']}{diagnostics(var)}")
        if n or args.no_toolbelt:
            continue
        peer = spawn("toolbelt", scene, args.workdir / "peer-toolbelt.tif", model, args.source,
                     {"device": args.device})
        agreement = 1 - differing(args.workdir / "peer-geoseg-0.tif", args.workdir / "peer-toolbelt.tif")
        add([scene.name, card.encoder, "pytorch-toolbelt script", f"{peer['seconds']:.2f}", "",
             f"{info.megapixels / peer['seconds']:.1f}", f"{peer['seconds'] / floor:.2f}",
             f"{peer['rss']:.2f}", fmt(peer["gpu_gib"], ".2f"), fmt(peer["busy"], ".0%")])
        add([scene.name, card.encoder, "toolbelt / geoseg", f"{peer['seconds'] / best:.2f}x", "", "", "",
             f"{peer['rss'] / geo['rss']:.2f}x", "", ""])
        note(f"masks agree on {agreement:.2%} (blend windows differ)")
    table(f"peers (f=1, tile {card.tile_size} overlap {card.overlap}, bf16, batch {BATCH}, geoseg writes --format "
          f"{args.format} (the script: a tiled GeoTIFF); x model floor: the better of warm and steady against the "
          f"better floor)", head, rows)
    for line in details:
        print("-", line)


def diagnostics(run: dict) -> str:
    """A geoseg child's GPU timeline and device seconds by step, where it was asked for them."""
    return ((f"; GPU timeline {printable(run['timeline'])}" if run["timeline"] else "")
            + (f"; device seconds by step {run['device stages']}" if run["device stages"] else ""))


def parse_variant(spec: str) -> dict:
    """``key=value,key=value`` as settings: true/false as booleans, numbers as integers or floats, the rest as
    text."""
    def value(text: str) -> object:
        lowered = text.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
        return text

    pairs = [item.split("=", 1) for item in spec.split(",") if item]
    if any(len(pair) != 2 for pair in pairs):
        raise SystemExit(f"--variants {spec!r}: write KEY=VALUE[,KEY=VALUE]")
    return {key: value(text) for key, text in pairs}


def geoseg_row(lead: list[str], run: dict, megapixels: float, floor: float) -> tuple[list[str], float]:
    """A geoseg child's table row after ``lead`` (scene, model, tool): warm and steady seconds, MP/s and x floor of the
    better of the two, memory and GPU busy; and that better time."""
    best = min(run["seconds"], run["steady"]["seconds"])
    return [*lead, f"{run['seconds']:.2f}", f"{run['steady']['seconds']:.2f}", f"{megapixels / best:.1f}",
            f"{best / floor:.2f}", f"{run['rss']:.2f}", fmt(run["gpu_gib"], ".2f"), fmt(run["busy"], ".0%")], best
