"""Measured runs, each in a fresh process (``bench_run.py --child``): geoseg warm and steady, a
pytorch-toolbelt script; what the GPU did meanwhile."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import rasterio

from benchmarks.runbench.common import BATCH
from geoseg.engine.pipeline import Tuning
from geoseg.engine.plan import ReadChunking

#: The script whose ``--child`` option runs a measured run.
SCRIPT = Path(__file__).resolve().parents[1] / "bench_run.py"


class GpuBusy:
    """Mean GPU utilisation (nvidia-smi samples every 100 ms) while the block runs; None without nvidia-smi."""

    def __enter__(self) -> GpuBusy:
        self.samples: list[float] = []
        try:
            self.proc: subprocess.Popen | None = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0",
                 "-lms", "100"], stdout=subprocess.PIPE, text=True)
        except OSError:
            self.proc = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            out, _ = self.proc.communicate()
            self.samples = [float(x) for x in out.split() if x.strip().isdigit()]

    @property
    def fraction(self) -> float | None:
        return sum(self.samples) / len(self.samples) / 100 if self.samples else None


#: Kernel name fragments (lower case) by what the kernel does, for :func:`gpu_timeline`; first match wins.
KERNEL_KINDS = (("decode", ("nvcomp", "inflate", "deflate", "zstd")),
                ("network: conv / gemm", ("conv", "gemm", "cudnn", "cutlass", "xmma", "sm90", "sm80", "implicit")))


#: Key of :func:`gpu_timeline`'s result holding every kernel's seconds by name (for :func:`beyond`; not printed).
ALL_KERNELS = "all kernels s"


def beyond(run: dict, floor: dict, top: int = 10) -> dict[str, float]:
    """The kernels a profiled run spent more time in than the profiled network floor (seconds more, largest first):
    the run's own GPU work beside the network, by kernel name."""
    mine, theirs = run.get(ALL_KERNELS, {}), floor.get(ALL_KERNELS, {})
    extra = {name: mine[name] - theirs.get(name, 0.0) for name in mine}
    return {name: round(v, 3) for name, v in sorted(extra.items(), key=lambda kv: -kv[1])[:top] if v > 5e-4}


def printable(timeline: dict) -> dict:
    """``timeline`` without its every-kernel listing."""
    return {k: v for k, v in timeline.items() if k != ALL_KERNELS}


def gpu_timeline(trace: Path, wall: float) -> dict:
    """What a profiled run's GPU did (its kineto trace): busy time (the union of kernels and copies), each kind's own
    time, the busy share of each tenth of the span from the first to the last GPU event, and the idle gaps between
    GPU events (the profiled wall less the span is the idle before the first and after the last)."""
    events = [e for e in json.loads(trace.read_text()).get("traceEvents", [])
              if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
    if not events:
        return {}
    kinds: dict[str, float] = {}
    names: dict[str, float] = {}
    spans = []
    for e in events:
        name, dur = e.get("name", ""), float(e.get("dur", 0)) / 1e6
        if e["cat"] == "kernel":
            low = name.lower()
            kind = next((k for k, keys in KERNEL_KINDS if any(key in low for key in keys)), "other kernels")
        else:
            kind = name.split(" (")[0]  # "Memcpy HtoD", "Memcpy DtoH", "Memset"...
        kinds[kind] = kinds.get(kind, 0.0) + dur
        names[name[:60]] = names.get(name[:60], 0.0) + dur
        spans.append((float(e["ts"]) / 1e6, float(e["ts"]) / 1e6 + dur))
    spans.sort()
    start, end = spans[0][0], max(b for _, b in spans)
    busy, tenths = 0.0, [0.0] * 10
    width = (end - start) / 10 or 1.0
    run_a, run_b = spans[0]
    merged = []
    for a, b in [*spans[1:], (float("inf"), float("inf"))]:
        if a <= run_b:
            run_b = max(run_b, b)
            continue
        merged.append((run_a, run_b))
        run_a, run_b = a, b
    for a, b in merged:
        busy += b - a
        for i in range(10):
            lo, hi = start + i * width, start + (i + 1) * width
            tenths[i] += max(0.0, min(b, hi) - max(a, lo))
    top = sorted(names.items(), key=lambda kv: -kv[1])[:12]
    gaps = sorted(((b[0] - a[1], a[1] - start) for a, b in itertools.pairwise(merged)), reverse=True)
    return {"profiled wall s": round(wall, 3), "gpu span s": round(end - start, 3), "gpu busy s": round(busy, 3),
            "idle in gaps over 1 ms s": round(sum(g for g, _ in gaps if g > 1e-3), 3),
            "largest gaps (s, at s)": [(round(g, 4), round(at, 3)) for g, at in gaps[:8]],
            "kinds s": {k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "busy by tenth": [round(t / width, 2) for t in tenths], "top kernels s": {k: round(v, 3) for k, v in top},
            ALL_KERNELS: names}


def profiled_run(run: Callable[[], object], trace: Path) -> dict:
    """Run ``run`` under torch's profiler (GPU activity only, so the host side runs as usual) and summarise."""
    import torch

    try:  # a diagnostic: its failure must not cost the lease's other figures
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            started = time.perf_counter()
            run()
            torch.cuda.synchronize()
            wall = time.perf_counter() - started
        prof.export_chrome_trace(str(trace))
        return gpu_timeline(trace, wall)
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        trace.unlink(missing_ok=True)


def timed_steps(run: Callable[[], object], device: str) -> dict:
    """Run ``run`` with the engine's device-side steps timed (:mod:`benchmarks.runbench.stages`)."""
    from benchmarks.runbench.stages import stage_clock

    try:  # a diagnostic: its failure must not cost the lease's other figures
        import torch

        with stage_clock(cuda=device != "cpu" and torch.cuda.is_available()) as clock:
            run()
        return clock.seconds()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


#: Child settings that size the pipeline (:class:`geoseg.engine.pipeline.Tuning`), not run options: zlevel:
#: --parts options; decode_streams: --stream-variants; hybrid_share: --hybrid-variants; device_overview_levels:
#: --overview-ab; network_priority: --priority-ab; first_row_patches, last_row_patches, spread_first_strip,
#: switch_interval, grow_rows, keep_readers, wide_votes, read_ahead_strips, collect_garbage, trace_waits,
#: fused_develop: --variants. chunk_bytes sets ``Tuning.chunking``.
TUNING_SETTINGS = ("zlevel", "decode_streams", "hybrid_share", "device_overview_levels", "network_priority",
                   "first_row_patches", "last_row_patches", "spread_first_strip", "switch_interval",
                   "grow_rows", "keep_readers", "wide_votes", "read_ahead_strips", "collect_garbage", "trace_waits",
                   "fused_develop")


def child_geoseg(scene: Path, out: Path, model: Path, warmup: Path, settings: dict) -> dict:
    """Warm up on ``warmup`` with the same model and settings, then time ``scene``."""
    from geoseg.config import RunConfig
    from geoseg.engine.device import DeviceSession
    from geoseg.models import load_model
    from geoseg.run import segment_scene

    settings = dict(settings)
    profile = settings.pop("profile", False)
    device_stages = settings.pop("device_stages", False)
    steady_runs = max(1, int(settings.pop("steady_runs", 1)))
    tuning = Tuning(**{key: settings.pop(key) for key in TUNING_SETTINGS if key in settings})
    if "chunk_bytes" in settings:
        tuning = replace(tuning, chunking=ReadChunking(max_bytes=settings.pop("chunk_bytes")))
    DeviceSession.tune_for_many_scenes()  # as `geoseg batch` does: the warm-up pays for cuDNN's tuning
    started = time.perf_counter()
    loaded = load_model(str(model))
    config = RunConfig(**{"overwrite": True, "batch_size": BATCH, **settings})
    segment_scene(warmup, out, config, model=loaded, tuning=tuning)
    warmup_s = time.perf_counter() - started
    with GpuBusy() as busy:
        summary = segment_scene(scene, out, config, model=loaded, tuning=tuning)
    memory = memory_breakdown()
    # steady: as every later scene of a tile series; with several, the median run (``--steady-runs``)
    runs = sorted((segment_scene(scene, out, config, model=loaded, tuning=tuning) for _ in range(steady_runs)),
                  key=lambda r: r.seconds)
    again = runs[(len(runs) - 1) // 2]
    timeline = (profiled_run(lambda: segment_scene(scene, out, config, model=loaded, tuning=tuning),
                             out.with_suffix(".trace.json")) if profile else None)
    stages = (timed_steps(lambda: segment_scene(scene, out, config, model=loaded, tuning=tuning), config.device)
              if device_stages else None)
    return {"timeline": timeline, "device stages": stages, "seconds": summary.seconds, "warmup s": warmup_s,
            "busy": busy.fraction, "memory": memory,
            "gpu_gib": summary.peak_device_memory_gib, "model s": summary.model_seconds,
            "finish s": summary.finish_seconds,
            "patches": summary.patches, "batch": summary.batch_size, "stages": summary.stage_seconds,
            "steady": {"seconds": again.seconds, "model s": again.model_seconds, "stages": again.stage_seconds,
                       "finish s": again.finish_seconds, "all s": [round(r.seconds, 3) for r in runs]}}


def memory_breakdown() -> dict[str, float]:
    """GiB of this process's resident memory by kind (now), and the pinned host allocator's peak."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(value.split()[0]) / 2**20
    import torch

    if torch.cuda.is_available() and hasattr(torch.cuda, "host_memory_stats"):
        stats = torch.cuda.host_memory_stats()
        for key in ("allocated_bytes.all.peak", "reserved_bytes.all.peak", "reserved_bytes.all.current"):
            if key in stats:
                out["pinned " + key] = stats[key] / 2**30
    return out


def toolbelt_script(scene: Path, out: Path, model: Path, device: str = "cuda") -> None:
    """A user's pytorch-toolbelt script: rasterio in, ImageSlicer + TileMerger on the GPU, rasterio out."""
    import torch
    from pytorch_toolbelt.inference.tiles import ImageSlicer, TileMerger

    from geoseg.models import load_model

    loaded = load_model(str(model))
    card = loaded.card
    net = loaded.network.eval().to(device).to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = True
    with rasterio.open(scene) as src:
        image = src.read()
        profile = src.profile
    scale, offset = card.scaling.factors(image.dtype)
    image = np.moveaxis(image, 0, -1).astype(np.float32) * np.float32(scale) + np.float32(offset)
    image = (image - np.float32(card.mean)) / np.float32(card.std)
    tile, step = card.tile_size, card.tile_size - card.overlap
    slicer = ImageSlicer(image.shape, tile_size=tile, tile_step=step, weight="pyramid")
    merger = TileMerger(slicer.target_shape, channels=card.num_classes, weight=slicer.weight, device=device)
    tiles = slicer.split(image)
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
        for i in range(0, len(tiles), BATCH):
            x = torch.from_numpy(np.stack(tiles[i : i + BATCH])).permute(0, 3, 1, 2).to(device, non_blocking=True)
            probs = torch.softmax(net(x.contiguous(memory_format=torch.channels_last)).float(), dim=1)
            merger.integrate_batch(probs, slicer.crops[i : i + BATCH])
        labels = slicer.crop_to_orignal_size(merger.merge().argmax(dim=0)).byte().cpu().numpy()
    profile.update(count=1, dtype="uint8", nodata=255, tiled=True, blockxsize=256, blockysize=256,
                   compress="deflate", predictor=1, num_threads="ALL_CPUS")
    with rasterio.open(out, "w", **profile) as dst:
        dst.write(labels, 1)


def child_toolbelt(scene: Path, out: Path, model: Path, warmup: Path, device: str) -> dict:
    import torch

    cuda = device.startswith("cuda")
    toolbelt_script(warmup, out, model, device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with GpuBusy() as busy:
        start = time.perf_counter()
        toolbelt_script(scene, out, model, device)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "busy": busy.fraction,
            "gpu_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def spawn(kind: str, scene: Path, out: Path, model: Path, warmup: Path, settings: dict | None = None) -> dict:
    """Run a child measurement in a fresh process; add its peak RSS. ``settings["env"]`` sets its environment."""
    settings = dict(settings or {})
    env = {**os.environ, **settings.pop("env", {})}
    cmd = [sys.executable, str(SCRIPT), "--child", kind, str(scene), "--out", str(out),
           "--model", str(model), "--warmup", str(warmup), "--settings", json.dumps(settings)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(f"{kind} child failed: {proc.stderr.strip()[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_cli(scene: Path, out: Path, model: Path, device: str, fmt: str = "cog") -> float:
    """Wall seconds of `geoseg run` as a fresh process."""
    cmd = [sys.executable, "-m", "geoseg.cli", "run", str(scene), "-o", str(out), "--model", str(model),
           "--overwrite", "--quiet", "--device", device, "--batch-size", str(BATCH), "--format", fmt]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"geoseg failed: {proc.stderr.strip()[-2000:]}")
    return time.perf_counter() - start
