"""geoseg against ukis-csmask as shipped, on this machine's CPU, same weights, same scene, same cores.

The peer is what its README asks of a user: read the scene at 30 m (rasterio, average resampling),
scale to reflectance, ``CSmask(img, band_order, product_level="l1c")`` (its own 256 px tiling with
20 % overlap, ONNX Runtime on every core), write the mask with rasterio. geoseg is ``segment_scene``
with its built-in model (the same ONNX weights, converted): its default (OpenVINO, in bf16 on a CPU with
bf16 instructions, in fp32 on other x86 CPUs), ONNX Runtime in fp32, and the PyTorch backend in its
default precision (bf16 on a CPU with bf16 instructions) and in fp32. Each runs in its own child
process, timed from start to exit, in ``--rounds`` interleaved rounds (the median counts); peak RSS is
the child's own. The scene is a full Sentinel-2 tile's size (10980 x 10980 at 10 m) mirrored and repeated
from the real one.

It also measures **model floors** in the same run: the network alone (batches ready in memory, every
core) over the patches each tool runs, in ONNX Runtime (ukis-csmask's own session) and in PyTorch
(geoseg's, fp32 and bf16). They bound what any pipeline around the same network can reach here.

    python benchmarks/cpu_peers.py SOURCE.tif --size 10980 --rounds 3 --workdir /tmp/geoseg-cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.make_scene import build_scene, peak_rss_gib

BAND_ORDER = ["blue", "green", "red", "nir", "swir16", "swir22"]  # the scene's bands B02 B03 B04 B08 B11 B12
FACTOR = 3  # 10 m scene, 30 m model


def csmask_script(scene: Path, out: Path) -> None:
    """A user's ukis-csmask script: read at 30 m, CSmask, write the mask (runs in the child)."""
    from rasterio.enums import Resampling
    from ukis_csmask.mask import CSmask

    with rasterio.open(scene) as src:
        height, width = -(-src.height // FACTOR), -(-src.width // FACTOR)
        img = src.read(out_shape=(src.count, height, width), resampling=Resampling.average).astype(np.float32)
        profile = src.profile
        transform = src.transform * src.transform.scale(src.width / width, src.height / height)
    img = np.moveaxis(img * np.float32(1e-4), 0, -1)
    csm = CSmask(img, BAND_ORDER, product_level="l1c").csm[..., 0]
    profile.update(count=1, dtype="uint8", width=width, height=height, transform=transform, nodata=255,
                   predictor=1)
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(csm, 1)


MODEL = "csmask-6b-l1c"
#: geoseg's runs by child name: (backend, precision).
GEOSEG_CHILDREN = {"geoseg": ("auto", "auto"), "geoseg-ort": ("onnxruntime", "auto"),
                   "geoseg-torch": ("torch", "auto"), "geoseg-fp32": ("torch", "fp32")}
GEOSEG_BATCH = 4  # geoseg's CPU batch for PyTorch (geoseg.engine.predictor.CPU_BATCH)


def model_floors(height: int, width: int, repeats: int = 5) -> dict[str, float]:
    """Seconds the network alone takes here for each tool's patches of a ``height x width`` 30 m grid.

    Per-call times are the best of ``repeats`` calls after a warm-up call, times the number of calls.
    """
    import onnxruntime
    import torch
    from ukis_csmask.utils import tile_array

    from geoseg.engine.backends import EXPORTED_BATCH, exported_network, onnx_file
    from geoseg.engine.device import DeviceSession, cpu_has_bf16
    from geoseg.engine.plan import plan_layout
    from geoseg.engine.predictor import CPU_BATCH
    from geoseg.models import get_card, load_model

    assert CPU_BATCH == GEOSEG_BATCH
    card = get_card(MODEL)
    layout = plan_layout(height, width, 1, card.tile_size, card.overlap)
    ours = layout.rows.count * layout.cols.count
    theirs = tile_array(np.zeros((height, width, 1), np.float32), 256, 256, 0.2).shape[0]  # CSmask's tiling

    session = onnxruntime.InferenceSession(str(Path(__import__("ukis_csmask").__file__).parent / "model_6b_l1c.onnx"),
                                           providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    tile = np.random.default_rng(0).standard_normal((1, 6, 256, 256), dtype=np.float32)
    network = DeviceSession.default().place(load_model(MODEL).network, torch.device("cpu"))
    path = onnx_file(network, 6, card.tile_size)  # one export (and one pass over the weights) for every runtime
    exported = exported_network("onnxruntime", None, 6, card.tile_size, exported=path)
    # The same export in a session whose idle threads spin (ONNX Runtime's default; geoseg turns it off so
    # that the readers and the writer get the cores between calls): what the setting costs the network alone.
    spinning = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    precisions = ["fp32", "bf16"] if cpu_has_bf16() else ["fp32"]
    openvino = {p: exported_network("openvino", None, 6, card.tile_size, p, exported=path) for p in precisions}
    batch = torch.randn((GEOSEG_BATCH, 6, card.tile_size, card.tile_size)).contiguous(memory_format=torch.channels_last)

    def torch_call(dtype: torch.dtype | None) -> None:
        with torch.inference_mode(), torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            network(batch)

    plain = batch[:EXPORTED_BATCH].contiguous()  # the exported backends' own batch
    kinds = {"onnx": lambda: session.run(None, {name: tile}), "geoseg onnx": lambda: exported(plain),
             "geoseg onnx, spinning": lambda: spinning.run(None, {"x": plain.numpy()}),
             "fp32": lambda: torch_call(None),
             "bf16": lambda: torch_call(torch.bfloat16),
             **{f"openvino {p}": (lambda run=run: run(plain)) for p, run in openvino.items()}}
    best = dict.fromkeys(kinds, float("inf"))
    for call in kinds.values():  # warm-up
        call()
    for _ in range(repeats):  # interleaved, so a slow minute of a shared machine hits every kind alike
        for kind, call in kinds.items():
            start = time.perf_counter()
            call()
            best[kind] = min(best[kind], time.perf_counter() - start)
    calls = -(-ours // GEOSEG_BATCH)
    per_patch_tiles = (card.tile_size // 256) ** 2  # 256-px tiles in one of geoseg's patches
    return {
        "patches (geoseg, 512 px)": ours, "tiles (ukis-csmask, 256 px)": theirs,
        "ONNX Runtime fp32, ukis-csmask's tiles": best["onnx"] * theirs,
        "ONNX Runtime fp32, geoseg's patches": best["onnx"] * per_patch_tiles * ours,
        "ONNX Runtime fp32, geoseg's export of the network, geoseg's patches":
            best["geoseg onnx"] * -(-ours // EXPORTED_BATCH),
        "ONNX Runtime fp32, geoseg's export, idle threads spinning (ONNX Runtime's default), geoseg's patches":
            best["geoseg onnx, spinning"] * -(-ours // EXPORTED_BATCH),
        **{f"OpenVINO {p}, geoseg's export, geoseg's patches": best[f"openvino {p}"] * -(-ours // EXPORTED_BATCH)
           for p in openvino},
        "PyTorch fp32, geoseg's patches": best["fp32"] * calls,
        "PyTorch bf16, geoseg's patches": best["bf16"] * calls,
    }


def first_export() -> float:
    """Seconds to load the built-in model and export it to geoseg's ONNX cache (no export when it is cached)."""
    import torch

    from geoseg.engine.backends import onnx_file
    from geoseg.models import get_card, load_model

    start = time.perf_counter()
    onnx_file(load_model(MODEL).network.to(torch.device("cpu")), 6, get_card(MODEL).tile_size)
    return time.perf_counter() - start


def timed_child(cmd: list[str]) -> tuple[float, float, str]:
    """Wall seconds, peak RSS (GiB) and stdout of a child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{cmd[:4]} failed: {err.strip()[-2000:]}")
    return wall, float(out.strip().splitlines()[-1]), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--size", type=int, default=10980)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-cpu"))
    parser.add_argument("--no-floors", action="store_true", help="skip the model floors")
    parser.add_argument("--floors-only", action="store_true", help="only the model floors")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of the three tools, interleaved; the median of each counts (default: 3)")
    parser.add_argument("--tools", nargs="+", choices=list(GEOSEG_CHILDREN), default=list(GEOSEG_CHILDREN),
                        help="geoseg's runs to time against ukis-csmask (default: all)")
    parser.add_argument("--child", choices=["csmask", *GEOSEG_CHILDREN], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # measured in a fresh process: print peak RSS (GiB) last
        if args.child == "csmask":
            csmask_script(args.source, args.out)
        else:
            from geoseg.config import RunConfig
            from geoseg.run import segment_scene

            backend, precision = GEOSEG_CHILDREN[args.child]
            segment_scene(args.source, args.out, RunConfig(device="cpu", overwrite=True, precision=precision,
                                                           backend=backend))
        print(peak_rss_gib())
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.floors_only:
        floors = model_floors(-(-args.size // FACTOR), -(-args.size // FACTOR))
        print("| network run | seconds |\n|---|---|")
        for name, value in floors.items():
            print(f"| {name} | {value:.1f} |" if isinstance(value, float) else f"| {name} | {value} |")
        return
    scene = build_scene(args.source, args.workdir / f"s2-{args.size}.tif", args.size)
    export_s = first_export()
    print(f"loading geoseg's model and its one-time ONNX export (a first run pays it; the rounds find it cached): "
          f"{export_s:.1f} s",
          file=sys.stderr, flush=True)
    me = [sys.executable, str(Path(__file__).resolve()), str(scene)]
    import torch

    from geoseg.engine.backends import exported_precision, resolve_backend
    from geoseg.engine.device import cpu_has_bf16

    tools = list(args.tools)
    chosen = resolve_backend("auto", torch.device("cpu"), "auto")
    chosen = f"{chosen} {exported_precision(chosen, 'auto')}" if chosen != "torch" else chosen
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in [*tools, "csmask"]}
    for _ in range(args.rounds):  # a shared machine's speed drifts by the minute: rounds, not one run each
        for name, done in runs.items():
            out = args.workdir / f"{name}.tif"
            wall, rss, _ = timed_child([*me, "--child", name, "--out", str(out)])
            done.append((wall, rss))
            print(f"{name}: {wall:.1f} s, peak RSS {rss:.2f} GiB", file=sys.stderr, flush=True)
    rows = {name: (float(np.median([w for w, _ in done])), float(np.median([r for _, r in done])))
            for name, done in runs.items()}
    with rasterio.open(args.workdir / f"{tools[0]}.tif") as a, rasterio.open(args.workdir / "csmask.tif") as b:
        ours = a.read(1)
        theirs = b.read(1).repeat(FACTOR, axis=0).repeat(FACTOR, axis=1)[: a.height, : a.width]
    agreement = float((ours == theirs).mean())

    print(json.dumps({"runs": runs, "agreement": agreement, "cores": os.cpu_count()}), file=sys.stderr)
    print(f"scene {scene.name} ({args.size}x{args.size}, 6 bands uint16, 10 m), CPU cores: {os.cpu_count()}")
    default = "bf16" if cpu_has_bf16() else "fp32"
    print(f"| tool (geoseg: its default here, {chosen}; "
          f"-ort: ONNX Runtime fp32; -torch: PyTorch {default}; -fp32: PyTorch fp32) "
          f"| wall s, median of {args.rounds} "
          "(each round) | peak RSS GiB |")
    print("|---|---|---|")
    for name, (wall, rss) in rows.items():
        each = ", ".join(f"{w:.1f}" for w, _ in runs[name])
        print(f"| {name} | {wall:.1f} ({each}) | {rss:.2f} |")
    c = rows["csmask"]
    for name in tools:
        g = rows[name]
        print(f"| {name} / ukis-csmask | {g[0] / c[0]:.2f}x time | {g[1] / c[1]:.2f}x memory |")
    print(f"mask agreement, {tools[0]} against ukis-csmask's 30 m mask repeated to 10 m: {agreement:.2%}")
    if args.no_floors:
        return
    floors = model_floors(-(-args.size // FACTOR), -(-args.size // FACTOR))
    print(json.dumps(floors), file=sys.stderr)
    print(f"\nmodel floors (the network alone, {os.cpu_count()} cores; issue 14's target, 2x faster than "
          f"ukis-csmask, is {c[0] / 2:.1f} s end to end)")
    print("| network run | seconds | x (ukis-csmask wall / 2) |")
    print("|---|---|---|")
    for name, value in floors.items():
        if isinstance(value, float):
            print(f"| {name} | {value:.1f} | {value / (c[0] / 2):.2f} |")
        else:
            print(f"| {name} | {value} | |")


if __name__ == "__main__":
    main()
