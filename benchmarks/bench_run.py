"""GPU benchmark: geoseg file to file against its floors and against pytorch-toolbelt, one table per part.

Scenes larger than the real source are built from it by make_scene.py (mirror + repeat). Parts
(``--parts``, default all three), each printing a table whose figures come from this one run:

* ``main``: for each scene and model, the floors and geoseg end to end:
  - read floor: decode every internal block of the file once, with geoseg's reader thread count, both in
    geoseg's own read chunks and as dask 512-px chunks; the faster counts;
  - model floor: the raw network over as many patches as the run has, batch already on the GPU,
    bf16 + channels_last, eager and replayed from a CUDA graph; the faster counts;
  - write floor: encode and write the mask geoseg produced, in its strips and threads;
  - geoseg: ``geoseg run`` as a fresh process (cold: Python, CUDA, model, cuDNN tuning included)
    and ``segment_scene`` in a process that has already run one small scene with the same model
    (warm: how ``geoseg batch`` runs every scene after its first), then the same scene again in that
    process (steady: every later scene of a series of same-size tiles, whose staging buffers and
    device memory are already there), with that process's peak RSS,
    peak GPU memory, GPU busy share (nvidia-smi, 100 ms) and its model stage throughput.
* ``options`` (every generated scene, first model): the settings ``--options`` names against the
  default run, e.g. ``--no-cuda-graphs``, ``--compile`` (and the compiled model floor), fp32 (the share
  of pixels bf16 flips against it), the automatic batch, out-of-memory back-off, the mask's deflate
  level and the reader thread count.
* ``decode`` (every generated scene, deflate, and the first also as zstd; first model): who decodes the
  compressed tiles (``--decode cpu|gpu|hybrid``). Floors: the I/O floor (every tile's compressed bytes
  read once, page cache warm, as the device decoder reads them), and the decode floors of the CPU
  readers, of the GPU (nvCOMP) and of both together, each reading every chunk of the run's plan into
  device strips; the model and write floors; then geoseg warm with each ``--decode``, its ratio to
  max(model, I/O, hybrid decode, write floors), GPU busy, the device's share of the chunks, and the
  pixels that differ from the CPU readers' mask (``--reproducible`` runs: cuDNN's choice fixed).
* ``peers`` (first generated scene, first model, at the scene's own resolution so that every
  tool runs the same patches): pytorch-toolbelt's ImageSlicer + TileMerger as a user's script
  (rasterio in, same model / tile / overlap / bf16 / batch, rasterio out) against geoseg.

    python benchmarks/bench_run.py SOURCE.tif --sizes 16384 32768 --model MODEL_DIR \\
        --more-models R34_DIR VGG16_DIR --device cuda

MODEL_DIR is a model folder; with a config.json and no weights, random weights are written
(speed does not depend on them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import dask
import numpy as np
import rasterio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.make_scene import build_scene, peak_rss_gib
from geoseg.engine.pipeline import Tuning, default_workers
from geoseg.engine.plan import Box, ReadChunking, plan_blocks, plan_layout, plan_reads
from geoseg.engine.resample import resolution_factor
from geoseg.io import writing
from geoseg.io.lazy import read_dask
from geoseg.io.scene import WindowReader, open_scene
from geoseg.models.card import ModelCard

BATCH = 16


# -- floors -------------------------------------------------------------------------------------
def ensure_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    if weights.exists():
        return
    from safetensors.torch import save_file

    from geoseg.models.architectures import build_network

    net = build_network(ModelCard.load(folder / "config.json"))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))


def read_floor(path: Path, factor: int, card: ModelCard, threads: int) -> dict[str, float]:
    """Seconds to decode every block of ``path`` once: in geoseg's read chunks, each thread into one
    buffer it reuses (as geoseg's staging buffers are; a fresh array per chunk pays page faults), and
    in dask 512-px chunks."""
    info = open_scene(path)
    indexes = tuple(range(1, info.count + 1))
    layout = plan_layout(info.height, info.width, factor, card.tile_size, card.overlap)
    dtype = np.dtype(info.dtype)
    pixel_bytes = info.count * dtype.itemsize
    chunks = [c for s in plan_reads(layout, plan_blocks(layout), info.block_shape, pixel_bytes) for c in s.chunks]
    largest = max(c.shape[0] * c.shape[1] for c in chunks)
    reader = WindowReader(info, indexes)
    local = threading.local()

    def decode(c: Box) -> None:
        if not hasattr(local, "buffer"):
            local.buffer = np.empty(largest * info.count, dtype)
        out = local.buffer[: info.count * c.shape[0] * c.shape[1]].reshape(info.count, *c.shape)
        reader.read(c.row0, c.row1, c.col0, c.col1, out)

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(decode, chunks))
    own = time.perf_counter() - start
    values = read_dask(info, indexes, target_chunk=512)
    touched = values.map_blocks(lambda b: np.zeros((1, 1, 1), np.uint8), chunks=(1, 1, 1), dtype=np.uint8)
    start = time.perf_counter()
    with dask.config.set(scheduler="threads", num_workers=threads):
        touched.compute()
    return {"read own s": own, "read dask s": time.perf_counter() - start}


def model_floor(card: ModelCard, patches: int, device: str, how: str = "eager") -> float:
    """Raw network time for ``patches`` patches, batches already on the device, bf16, channels_last;
    ``how``: eager, graph (CUDA graph replay) or compile (torch.compile, compile time excluded)."""
    import torch

    from geoseg.models.architectures import build_network

    dev = torch.device(device)
    cuda = dev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    net = build_network(card).eval().to(dev).to(memory_format=torch.channels_last)
    torch.backends.cudnn.benchmark = True
    fn = torch.compile(net, dynamic=False) if how == "compile" else net
    batch = torch.rand((BATCH, len(card.bands), card.tile_size, card.tile_size), device=dev)
    batch = batch.contiguous(memory_format=torch.channels_last)
    batches = -(-patches // BATCH)

    def step() -> torch.Tensor:
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=cuda):
            return torch.softmax(fn(batch).float(), dim=1)

    with torch.inference_mode():
        for _ in range(3):
            step()
        if how == "graph" and cuda:
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                step()
            run = graph.replay
        else:
            run = step  # type: ignore[assignment]
        sync()
        start = time.perf_counter()
        for _ in range(batches):
            run()
        sync()
    return time.perf_counter() - start


def write_floor(mask: Path, out: Path) -> float:
    """Time to encode and write ``mask`` again as geoseg writes it (strips of 256 rows; reads not timed)."""
    from rasterio.windows import Window

    with rasterio.open(mask) as src:
        profile = {**src.profile, "num_threads": "ALL_CPUS", "zlevel": writing.ZLEVEL}
        spent = 0.0
        with rasterio.open(out, "w", **profile) as dst:
            for row0 in range(0, src.height, 256):
                window = Window(0, row0, src.width, min(256, src.height - row0))
                strip = np.ascontiguousarray(src.read(1, window=window))
                start = time.perf_counter()
                dst.write(strip, 1, window=window)
                spent += time.perf_counter() - start
            start = time.perf_counter()
        spent += time.perf_counter() - start  # closing flushes the last tiles
    out.unlink()
    return spent


# -- children: one fresh process per measured run ----------------------------------------------------
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


def gpu_timeline(trace: Path, wall: float) -> dict:
    """What a profiled run's GPU did (its kineto trace): busy time (the union of kernels and copies), each kind's own
    time, and the busy share of each tenth of the span from the first to the last GPU event."""
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
    return {"profiled wall s": round(wall, 3), "gpu span s": round(end - start, 3), "gpu busy s": round(busy, 3),
            "kinds s": {k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
            "busy by tenth": [round(t / width, 2) for t in tenths], "top kernels s": {k: round(v, 3) for k, v in top}}


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


#: Child settings that are module constants, not run options: (module, name). zlevel: --parts options;
#: decode_streams: --stream-variants; hybrid_share: --hybrid-variants; device_overview_levels: --overview-ab.
MODULE_SETTINGS = {"zlevel": ("geoseg.io.writing", "ZLEVEL"),
                   "decode_streams": ("geoseg.engine.tile_decode", "DECODE_STREAMS"),
                   "hybrid_share": ("geoseg.engine.tile_decode", "HYBRID_SHARE"),
                   "device_overview_levels": ("geoseg.engine.blender", "DEVICE_OVERVIEW_LEVELS")}


def child_geoseg(scene: Path, out: Path, model: Path, warmup: Path, settings: dict) -> dict:
    """Warm up on ``warmup`` with the same model and settings, then time ``scene``."""
    from geoseg.config import RunConfig
    from geoseg.engine.device import DeviceSession
    from geoseg.models import load_model
    from geoseg.run import segment_scene

    settings = dict(settings)
    profile = settings.pop("profile", False)
    if settings.pop("inflater", None) == "bindings":  # --inflater-ab: nvCOMP's Python bindings, as before 2026-12-06
        from geoseg.engine import inflate, tile_decode

        tile_decode.NvcompAsyncInflater = inflate.NvcompInflater
        tile_decode.DECODE_STREAMS = 1  # the bindings' codec is bound to one stream
    for key, (module, name) in MODULE_SETTINGS.items():
        if key in settings:
            setattr(importlib.import_module(module), name, settings.pop(key))
    tuning = Tuning()
    if "chunk_bytes" in settings:
        tuning = Tuning(chunking=ReadChunking(max_bytes=settings.pop("chunk_bytes")))
    if "network_priority" in settings:
        tuning = replace(tuning, network_priority=settings.pop("network_priority"))
    DeviceSession.tune_for_many_scenes()  # as `geoseg batch` does: the warm-up pays for cuDNN's tuning
    started = time.perf_counter()
    loaded = load_model(str(model))
    config = RunConfig(**{"overwrite": True, "batch_size": BATCH, **settings})
    segment_scene(warmup, out, config, model=loaded, tuning=tuning)
    warmup_s = time.perf_counter() - started
    with GpuBusy() as busy:
        summary = segment_scene(scene, out, config, model=loaded, tuning=tuning)
    memory = memory_breakdown()
    # steady: as every later scene of a tile series
    again = segment_scene(scene, out, config, model=loaded, tuning=tuning)
    timeline = (profiled_run(lambda: segment_scene(scene, out, config, model=loaded, tuning=tuning),
                             out.with_suffix(".trace.json")) if profile else None)
    return {"timeline": timeline, "seconds": summary.seconds, "warmup s": warmup_s, "busy": busy.fraction,
            "memory": memory,
            "gpu_gib": summary.peak_device_memory_gib, "model s": summary.model_seconds,
            "finish s": summary.finish_seconds,
            "patches": summary.patches, "batch": summary.batch_size, "stages": summary.stage_seconds,
            "steady": {"seconds": again.seconds, "model s": again.model_seconds, "stages": again.stage_seconds,
                       "finish s": again.finish_seconds}}


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
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", kind, str(scene), "--out", str(out),
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


# -- parts --------------------------------------------------------------------------------------
def blender_levels() -> int:
    from geoseg.engine.blender import DEVICE_OVERVIEW_LEVELS

    return DEVICE_OVERVIEW_LEVELS


def patches_of(scene: Path, card: ModelCard, factor: int) -> int:
    info = open_scene(scene)
    layout = plan_layout(info.height, info.width, factor, card.tile_size, card.overlap)
    return layout.rows.count * layout.cols.count


def decode_floors(scene: Path, factor: int, card: ModelCard, threads: int, device: str,
                  shares: tuple[float, ...] = ()) -> dict[str, float]:
    """Seconds to bring every read chunk of a run's plan into device strips with nothing else running:
    by the CPU readers, by the GPU alone and by both (the pipeline's reading, without the model), and
    the I/O floor: every tile's compressed bytes read once into host memory as the decoder reads them.
    ``shares``: more hybrid floors, the decoder taking at most that share of a strip's chunks a batch
    (reported as ``hybrid SHARE``; ``hybrid`` is the default share)."""
    import torch

    from geoseg.engine.inflate import HostInflater
    from geoseg.engine.input_band import InputBand
    from geoseg.engine.staging import StagingPool
    from geoseg.engine.tile_decode import BATCH_TILES, ChunkQueue, TileDecoder
    from geoseg.io.tiles import tile_index

    info = open_scene(scene)
    indexes = tuple(range(1, len(card.bands) + 1))
    dev = torch.device(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    layout = plan_layout(info.height, info.width, factor, card.tile_size, card.overlap)
    index = tile_index(info)
    assert not isinstance(index, str), index
    out: dict[str, float] = {"compressed GB": float(index.counts.sum()) / 1e9}
    # I/O floor: the decoder's fetch of every tile, in its batches
    everything = np.arange(len(index.counts))
    step = BATCH_TILES
    buffer = np.empty(index.fetch_bytes(everything[:step]) + step * int(index.counts.max()), np.uint8)
    fd = os.open(scene, os.O_RDONLY)
    start = time.perf_counter()
    for i in range(0, len(everything), step):
        index.fetch(everything[i : i + step], buffer, fd)
    out["io s"] = time.perf_counter() - start
    os.close(fd)
    inputs = InputBand(layout, card, dev, info.dtype)
    strips = plan_reads(layout, plan_blocks(layout), info.block_shape, inputs.pixel_bytes)
    largest = max(c.shape[0] * c.shape[1] for s in strips for c in s.chunks)
    reader = WindowReader(info, indexes)
    pool = StagingPool(inputs.staged_bytes(largest), threads + 4, inputs.pin)
    lock = threading.Lock()
    hybrids: dict[str, float | None] = {"hybrid": None, **{f"hybrid {s:g}": s for s in shares}}
    # "bindings": nvCOMP's Python bindings, which wait for the device with the GIL held (geoseg before 2026-12-06)
    bindings = ("gpu bindings", "hybrid bindings", "gpu 1 stream") if dev.type == "cuda" else ()
    names = ("cpu", "gpu", *hybrids, *bindings)
    for name in names + names:  # twice: the first pays for pinning / set-up
        mode = name.split()[0]
        share = {} if hybrids.get(name) is None else {"hybrid_share": hybrids[name]}
        decoder = None if mode == "cpu" else TileDecoder(  # on a CPU (a dry run of this script): zlib
            index, indexes, dev, None, mode, inflater=None if dev.type == "cuda" else HostInflater(index.codec),
            **share, **({"streams": 1} if name.endswith(("bindings", "1 stream")) else {}))
        if name.endswith("bindings"):  # one stream: the bindings' codec is bound to it
            from geoseg.engine.inflate import NvcompInflater

            decoder._inflater = NvcompInflater(index.codec, dev, decoder.streams[0])
        readers = ThreadPoolExecutor(threads)
        gpu = ThreadPoolExecutor(1)
        ahead = 2
        if decoder is not None:  # as the pipeline does
            gpu.submit(decoder.serve)
            widest = strips[0]
            tiles = sum(decoder.tiles_in(c) for c in widest.chunks)
            ahead = decoder.strips_ahead(tiles, (widest.rows[1] - widest.rows[0]) * info.width * inputs.pixel_bytes,
                                         2)
        sync()
        spent = {"chunks": 0, "gdal": 0.0, "load": 0.0}  # the reader threads' chunks, summed over threads

        def timed_read(*args, spent=spent, **kwargs):  # GDAL's decode of one chunk (the GIL released)
            begin = time.perf_counter()
            try:
                return reader.read_into(*args, **kwargs)
            finally:
                with lock:
                    spent["gdal"] += time.perf_counter() - begin

        start = time.perf_counter()
        pending = []
        for strip_plan in strips:
            strip = inputs.open_strip(*strip_plan.rows)
            queue = ChunkQueue(strip_plan.chunks)
            loads = [] if decoder is None else [decoder.submit(strip, queue, inputs.copy_stream)]
            if mode != "gpu":
                def take(strip=strip, queue=queue, spent=spent, timed_read=timed_read) -> None:
                    box = queue.take_left()
                    if box is not None:
                        begin = time.perf_counter()
                        inputs.load(strip, box, timed_read, pool)  # + staging, copies, and GIL waits
                        with lock:
                            spent["chunks"] += 1
                            spent["load"] += time.perf_counter() - begin
                loads += [readers.submit(take) for _ in strip_plan.chunks]
            pending.append((strip, loads))
            if len(pending) > ahead:  # the pipeline reads this many strips ahead of the one it works on
                done, loads = pending.pop(0)
                for f in loads:
                    f.result()
                for event in done.copied:
                    event.synchronize()
        for _, loads in pending:
            for f in loads:
                f.result()
        sync()
        out[f"{name} decode s"] = time.perf_counter() - start
        if decoder is not None:
            decoder.check()
        # Where the reader threads' time went: a chunk's GDAL decode, and the rest of its load (staging buffer,
        # copy, validity, waits for the GIL). Per chunk, compared across modes: contention shows as growth.
        out[f"{name} reader chunks"] = spent["chunks"]
        out[f"{name} reader gdal ms per chunk"] = 1e3 * spent["gdal"] / max(1, spent["chunks"])
        out[f"{name} reader rest ms per chunk"] = 1e3 * (spent["load"] - spent["gdal"]) / max(1, spent["chunks"])
        if decoder is not None:
            out[f"{name} device busy s"] = decoder.stats.busy_seconds
            out[f"{name} device fetch s"] = decoder.stats.fetch_seconds
            out[f"{name} device inflate s"] = decoder.stats.inflate_seconds
            out[f"{name} device place s"] = decoder.stats.place_seconds
            out[f"{name} device batches"] = decoder.stats.batches
            out[f"{name} device share"] = decoder.stats.chunks / sum(len(s.chunks) for s in strips)
            out[f"{name} strips ahead"] = ahead
            decoder.close()
        readers.shutdown()
        gpu.shutdown()
    return out


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
        if args.inflater_ab:  # nvCOMP's Python bindings, as before 2026-12-06
            modes["gpu, bindings"] = {"inflater": "bindings"}
            modes["hybrid, bindings"] = {"inflater": "bindings"}
        if args.overview_ab:  # the COG's overview levels as before 2026-12-06: only the first on the device
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
                      f"{run['steady']['seconds']:.2f} s): {json.dumps(run['timeline'])}", flush=True)
        if args.inflater_ab:
            for m in ("gpu", "hybrid"):
                old = runs[f"{m}, bindings"]["steady"]
                print(f"inflater A/B {scene.name} {m}: steady {runs[m]['steady']['seconds']:.2f} s (C API, async) vs "
                      f"{old['seconds']:.2f} s (bindings); stages {runs[m]['steady']['stages']} vs {old['stages']}",
                      flush=True)
        if args.overview_ab:
            one = runs["gpu, one device level"]["steady"]
            differ = int((masks["gpu, one device level"] != masks["gpu"]).sum())
            print(f"overview A/B {scene.name}: gpu steady {runs['gpu']['steady']['seconds']:.2f} s (levels on the "
                  f"device: {blender_levels()}) vs {one['seconds']:.2f} s (1); stages {runs['gpu']['steady']['stages']}"
                  f" vs {one['stages']}; pixels differing {differ}", flush=True)
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


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


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


def table(title: str, head: tuple[str, ...], rows: list[list[str]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("--sizes", type=int, nargs="*", default=[16384])
    parser.add_argument("--model", type=Path, required=True, help="model folder timed on every scene")
    parser.add_argument("--more-models", type=Path, nargs="*", default=[],
                        help="model folders timed on the first generated scene only")
    parser.add_argument("--parts", nargs="*", default=["main", "options", "peers"],
                        choices=["main", "options", "peers", "decode", "decode-floors"])
    parser.add_argument("--reader-threads", type=int, nargs="*", default=[],
                        help="--parts decode-floors: reader thread counts to try (default: geoseg's, one per core "
                             "but one)")
    parser.add_argument("--hybrid-shares", type=float, nargs="*", default=[],
                        help="--parts decode-floors: more hybrid floors, the device decoder taking at most this share "
                             "of a strip's chunks a batch (the default share is always measured)")
    parser.add_argument("--switch-interval", type=float,
                        help="--parts decode-floors: sys.setswitchinterval for the floors (Python's default: 0.005 s), "
                             "to see whether the GIL's hand-overs slow the decoder's thread among the readers")
    parser.add_argument("--options", nargs="*", default=["eager", "compile", "fp32", "auto", "oom"],
                        choices=list(OPTIONS), help="settings compared by --parts options (default: %(default)s)")
    parser.add_argument("--inflater-ab", action="store_true",
                        help="--parts decode: also run --decode gpu and hybrid with nvCOMP's Python bindings "
                             "(as before 2026-12-06)")
    parser.add_argument("--overview-ab", action="store_true",
                        help="--parts decode: also run --decode gpu with only the first COG overview level halved on "
                             "the device (as before 2026-12-06)")
    parser.add_argument("--priority-ab", action="store_true",
                        help="--parts decode: also run --decode gpu with the network's stream at the "
                             "decoder's priority")
    parser.add_argument("--hybrid-variants", nargs="*", default=[], metavar="SHARE:READERS",
                        help="--parts decode: also run --decode hybrid with the device decoder taking at most SHARE of "
                             "a strip's chunks a batch, beside READERS reader threads (e.g. 0.25:8)")
    parser.add_argument("--stream-variants", type=int, nargs="*", default=[],
                        help="--parts decode: also run --decode gpu and hybrid with the device decoder's batches "
                             "taking turns on this many CUDA streams (and as many host buffers)")
    parser.add_argument("--profile-gpu", action="store_true",
                        help="--parts decode: run each mode's scene a third time under torch's profiler (GPU activity "
                             "only) and print what the GPU did: busy time, time by kind of kernel, busy share by tenth")
    parser.add_argument("--decode-codecs", nargs="*", default=["deflate", "zstd"], choices=["deflate", "zstd"],
                        help="--parts decode: zstd adds a zstd copy of the first size's scene")
    parser.add_argument("--tuned", action="store_true",
                        help="--parts decode: let cuDNN time its algorithms (masks may then differ by a few pixels "
                             "between processes) instead of --reproducible")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-bench"))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--format", default="cog", choices=["cog", "gtiff"],
                        help="mask format of the geoseg runs in --parts main (gtiff: the engine alone, no COG pass)")
    parser.add_argument("--child", choices=["geoseg", "toolbelt"], help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:  # a measured run in a fresh process: one JSON line, with its own peak RSS
        if args.child == "geoseg":
            result = child_geoseg(args.source, args.out, args.model, args.warmup, json.loads(args.settings))
        else:
            result = child_toolbelt(args.source, args.out, args.model, args.warmup,
                                    json.loads(args.settings).get("device", "cuda"))
        result["rss"] = peak_rss_gib()
        print(json.dumps(result))
        return

    args.workdir.mkdir(parents=True, exist_ok=True)
    for folder in [args.model, *args.more_models]:
        ensure_weights(folder)
    built = [build_scene(args.source, args.workdir / f"s2-{n}.tif", n) for n in args.sizes]
    print(f"device: {describe_device()}; {os.cpu_count()} CPU cores; {time.strftime('%Y-%m-%d')}")
    if "main" in args.parts:
        part_main([args.source, *built], [args.model], args.more_models, args)
    first = built[0] if built else args.source
    if "options" in args.parts:
        part_options(built or [args.source], args.model, args)
    if "peers" in args.parts:
        part_peers(first, args.model, args)
    if "decode-floors" in args.parts:
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        part_decode_floors(built or [args.source], args.model, args)
    if "decode" in args.parts:
        zstd = [build_scene(args.source, args.workdir / f"s2-{args.sizes[0]}-zstd.tif", args.sizes[0],
                            compress="zstd")] if args.sizes and "zstd" in args.decode_codecs else []
        part_decode([*built, *zstd], args.model, args)


def describe_device() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU only"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
