"""Floors: what reading, the network, decoding and writing cost alone, for the parts' ratios."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import dask
import numpy as np
import rasterio

from benchmarks.runbench.common import BATCH
from geoseg.engine.plan import Box, plan_blocks, plan_layout, plan_reads
from geoseg.io import writing
from geoseg.io.lazy import read_dask
from geoseg.io.scene import WindowReader, open_scene
from geoseg.models.card import ModelCard


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


def model_floor(card: ModelCard, patches: int, device: str, how: str = "eager", profiled: dict | None = None
                ) -> float:
    """Raw network time for ``patches`` patches, batches already on the device, bf16, channels_last;
    ``how``: eager, graph (CUDA graph replay) or compile (torch.compile, compile time excluded). With
    ``profiled`` (a dict, on a GPU), the timed batches run once more under torch's profiler, and ``profiled``
    receives what the GPU did (:func:`benchmarks.runbench.children.gpu_timeline`)."""
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
        seconds = time.perf_counter() - start
        if profiled is not None and cuda:
            from benchmarks.runbench.children import profiled_run

            trace = Path(tempfile.gettempdir()) / f"geoseg-floor-{os.getpid()}.json"
            profiled.update(profiled_run(lambda: [run() for _ in range(batches)], trace))
    return seconds


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


def decode_floors(scene: Path, factor: int, card: ModelCard, threads: int, device: str,
                  shares: tuple[float, ...] = ()) -> dict[str, float]:
    """Seconds to bring every read chunk of a run's plan into device strips with nothing else running:
    by the CPU readers, by the GPU alone and by both (the pipeline's reading, without the model), and
    the I/O floor: every tile's compressed bytes read once into host memory as the decoder reads them.
    ``shares``: more hybrid floors, the decoder taking at most that share of a strip's chunks a batch
    (reported as ``hybrid SHARE``; ``hybrid`` is the default share)."""
    import torch

    from geoseg.engine.inflate import HostInflater
    from geoseg.engine.input_rows import InputRows
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
    inputs = InputRows(layout, card, dev, info.dtype)
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
            from geoseg.engine.inflate import NvcompBindingsInflater

            decoder._inflater = NvcompBindingsInflater(index.codec, dev, decoder.streams[0])
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
