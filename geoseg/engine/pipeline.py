"""The pipeline: blocks read ahead on threads, inferred and blended on the device, written behind.

Three stages overlap, each bounded, so host memory does not grow with the scene:

* **read** (the process's reader threads, kept across runs): the scene rows each row of blocks needs, in the chunks of
  :func:`geoseg.engine.plan.plan_reads` (whole internal blocks of the file, each decoded exactly
  once, with the GIL released), into a fixed pool of staging buffers, page-locked on a GPU
  (:class:`geoseg.engine.staging.StagingPool`); the reader thread then starts the copy to the
  device (:meth:`geoseg.engine.input_rows.InputRows.load`). The readers work
  ``Tuning.read_ahead_strips`` strips of rows ahead of the device;
* **device** (the calling thread): each finished strip joins the
  :class:`~geoseg.engine.input_rows.InputRows`, which develops its rows and cuts each block's patch
  region; the :class:`~geoseg.engine.blender.Blender` batches the patches across blocks, blends
  the probabilities and labels the rows no later patch reaches;
* **write** (one thread): full-width strips of whole output tiles, at most ``Tuning.writes_ahead``
  queued; each is copied back asynchronously and waited for there.
"""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from geoseg.engine.blender import DEVICE_OVERVIEW_LEVELS, WIDE_VOTES, Blender
from geoseg.engine.device import device_waits
from geoseg.engine.input_rows import InputRows, InputStrip
from geoseg.engine.plan import (
    FIRST_ROW_PATCHES,
    GROW_ROWS,
    LAST_ROW_PATCHES,
    SPREAD_FIRST_STRIP,
    Layout,
    ReadChunking,
    ReadFn,
    plan_blocks,
    plan_reads,
)
from geoseg.engine.staging import StagingPool
from geoseg.engine.tile_decode import DECODE_STREAMS, HYBRID_SHARE, ChunkQueue, TileDecoder
from geoseg.errors import Cancelled
from geoseg.io.threads import reader_threads

#: Writes full-width strips starting at a scene row: ``labels`` ``(row, col)``, and ``probabilities``
#: ``(band, row, col)`` and overview levels (``overview1``: the labels halved, from half that row; then
#: halved again...) when the blender hands them out (:meth:`geoseg.engine.blender.Blender.end_row`).
WriteFn = Callable[[int, dict[str, np.ndarray]], None]
#: Called with (patches blended, all patches), once per model call.
ProgressFn = Callable[[int, int], None]


@dataclass(frozen=True)
class Tuning:
    """How the pipeline's stages are sized. None of it changes the mask (tests/engine/test_exactness.py)."""

    #: Size of one read (:func:`geoseg.engine.plan.plan_reads`).
    chunking: ReadChunking = field(default_factory=ReadChunking)
    #: Staging buffers beyond one per reader thread.
    staging_spare: int = 4
    #: Strips of rows the readers work ahead of the device. With one, the readers ran out of work at
    #: the end of every strip while its last chunks were decoded (benchmarks/RESULTS.md); each strip
    #: ahead costs its raw pixels in device memory.
    read_ahead_strips: int = 2
    #: Label strips queued for the writer, at most.
    writes_ahead: int = 8
    #: CUDA stream priority of the device thread's work (the network, blending) while the GPU also
    #: decodes tiles (``--decode gpu|hybrid``): lower runs sooner, so the decoder's kernels fill the
    #: SMs the network leaves free instead of holding it back. 0 (the default stream's priority) is the
    #: default: -1 helped some scenes and hurt others (benchmarks/RESULTS.md, "Stream priority").
    network_priority: int = 0
    #: CUDA streams the device decoder takes turns on (:data:`geoseg.engine.tile_decode.DECODE_STREAMS`).
    decode_streams: int = DECODE_STREAMS
    #: In ``--decode hybrid``, the most of a strip's chunks one device batch takes
    #: (:data:`geoseg.engine.tile_decode.HYBRID_SHARE`).
    hybrid_share: float = HYBRID_SHARE
    #: Overview levels of the mask made on the device, at most (:data:`geoseg.engine.blender.DEVICE_OVERVIEW_LEVELS`);
    #: the writer makes the rest.
    device_overview_levels: int = DEVICE_OVERVIEW_LEVELS
    #: Rows of patches in the first row of blocks (:data:`geoseg.engine.plan.FIRST_ROW_PATCHES`).
    first_row_patches: int = FIRST_ROW_PATCHES
    #: Rows of patches in the last row of blocks; 0: what is left (:data:`geoseg.engine.plan.LAST_ROW_PATCHES`).
    last_row_patches: int = LAST_ROW_PATCHES
    #: How much higher each row of blocks after the first is than the one before, up to a block
    #: (:data:`geoseg.engine.plan.GROW_ROWS`).
    grow_rows: int = GROW_ROWS
    #: Cut the first strip's reads to the reader threads (:func:`geoseg.engine.plan.spread_cols`;
    #: :data:`geoseg.engine.plan.SPREAD_FIRST_STRIP`).
    spread_first_strip: bool = SPREAD_FIRST_STRIP
    #: Read on the process's reader threads, kept across runs (:func:`reader_threads`); False: threads of the
    #: run's own, as before 2026-12-07 (an A/B for the benchmark).
    keep_readers: bool = True
    #: Python's thread switch interval (:func:`sys.setswitchinterval`) while the pipeline runs, in seconds; None:
    #: the interpreter's (5 ms). A shorter one hands the GIL to the device thread sooner while every reader thread
    #: is busy (the start of a run); it is the process's setting, restored when the run ends.
    switch_interval: float | None = None
    #: The blender's votes in int32 rather than uint8 (:data:`geoseg.engine.blender.WIDE_VOTES`).
    wide_votes: bool = WIDE_VOTES
    #: Python's cyclic garbage collector during the pipeline: False pauses it for the run (a full collection stops
    #: every thread, the device thread too, for milliseconds); it is switched back on, as it was, when the run ends.
    #: On by default: in a 16384² run at f = 1 on the H100 it paused 7 times for 1 ms in all (benchmarks/RESULTS.md
    #: section 14, 2026-12-07).
    collect_garbage: bool = True
    #: Diagnostics: the stage seconds also list each wait for reads over 1 ms after the first strip (``read wait
    #: row N``) and each wait for the writer over 1 ms (``write wait row N``), the garbage collector's pauses during
    #: the run (``gc pauses``, ``gc s``) and, on a GPU, the calls that made the host wait for the device while the
    #: rows ran (``device waits``, ``device wait at FILE:LINE``; :func:`geoseg.engine.device.device_waits`).
    trace_waits: bool = False
    #: At f = 1 on a GPU, develop the input rows in one kernel (:func:`geoseg.engine.input_rows.fused_develop`) instead
    #: of six passes; same bits. An A/B until measured.
    fused_develop: bool = False
    #: DEFLATE level of a plain GeoTIFF mask (``--format gtiff``); None: the format's
    #: (:data:`geoseg.io.writing.ZLEVEL`). Changes the file's bytes, never its pixels.
    zlevel: int | None = None


def run_pipeline(layout: Layout, inputs: InputRows, blender: Blender, read: ReadFn, write: WriteFn, workers: int,
                 progress: ProgressFn | None = None, cancel: threading.Event | None = None,
                 block_shape: tuple[int, int] = (1, 1), timings: dict[str, float] | None = None,
                 tuning: Tuning = Tuning(), decoder: TileDecoder | None = None) -> None:
    """Run every block through read -> device -> write, with bounded queues between the stages.

    ``block_shape`` is the file's internal block shape: reads are whole blocks of it. ``timings``,
    when given, receives the device thread's seconds per stage (waiting for reads, taking them in,
    blocks, labels, waiting for writes), the pipeline's seconds, and when the first strip was in and
    the first row of blocks queued (seconds from the start). Raises :class:`geoseg.errors.Cancelled` at the next block
    once ``cancel`` is set. With a ``decoder`` (:mod:`geoseg.engine.tile_decode`), the device decodes
    chunks too: all of them (mode ``gpu``), or those it takes from the right of each strip while the
    reader threads take them from the left (``hybrid``).
    """
    plan = plan_blocks(layout, tuning.first_row_patches, tuning.last_row_patches, tuning.grow_rows)
    strips = plan_reads(layout, plan, block_shape, inputs.pixel_bytes, tuning.chunking,
                        workers=max(1, workers) if tuning.spread_first_strip and decoder is None else 0)
    largest = max((c.shape[0] * c.shape[1] for strip in strips for c in strip.chunks), default=1)
    pool = StagingPool(inputs.staged_bytes(largest), workers + tuning.staging_spare, inputs.pin)
    total = sum(len(block.origins) for row in plan for block in row.blocks)  # progress counts patches
    # Input rows a later row of blocks still reads: not only the next one's. The last patches reflect at the
    # scene's bottom edge and can reach back further than the rows before them (a patch larger than a block).
    keep_from = [layout.height] * (len(strips) + 1)
    for i in range(len(strips) - 1, -1, -1):
        keep_from[i] = min(strips[i].need[0], keep_from[i + 1])
    readers = reader_threads(max(1, workers), tuning.keep_readers)
    writer = ThreadPoolExecutor(1, thread_name_prefix="geoseg-write")
    device_reader = ThreadPoolExecutor(1, thread_name_prefix="geoseg-decode") if decoder is not None else None
    ahead = tuning.read_ahead_strips
    if decoder is not None:  # the device decoder batches tiles across strips: open enough of them
        device_reader.submit(decoder.serve)
        widest = max(strips, key=lambda s: s.rows[1] - s.rows[0])
        tiles = sum(decoder.tiles_in(c) for c in widest.chunks)
        ahead = decoder.strips_ahead(tiles, (widest.rows[1] - widest.rows[0]) * layout.width * inputs.pixel_bytes,
                                     ahead)
    loading: dict[int, tuple[InputStrip, list[Future]]] = {}
    writes: deque[Future] = deque()
    spent = dict.fromkeys(("wait for reads", "take in", "blocks", "labels", "wait for writes"), 0.0)
    wrote = WriterClock()
    clock = began = time.perf_counter()
    marks: dict[str, float] = {}
    done = 0

    def lap(stage: str) -> float:
        """Count the time since the last lap to ``stage``; return it."""
        nonlocal clock
        now = time.perf_counter()
        elapsed, clock = now - clock, now
        spent[stage] += elapsed
        return elapsed

    def start_reading(i: int) -> None:
        if i < len(strips) and i not in loading:
            strip = inputs.open_strip(*strips[i].rows)
            if decoder is None:
                loading[i] = strip, [readers.submit(inputs.load, strip, box, read, pool) for box in strips[i].chunks]
                return
            queue = ChunkQueue(strips[i].chunks)
            loads = [decoder.submit(strip, queue, inputs.copy_stream)]
            if decoder.mode != "gpu":
                loads += [readers.submit(load_next, strip, queue) for _ in strips[i].chunks]
            loading[i] = strip, loads

    def load_next(strip: InputStrip, queue: ChunkQueue) -> None:
        box = queue.take_left()
        if box is not None:
            inputs.load(strip, box, read, pool)
            with decoder.stats.lock:
                decoder.stats.cpu_chunks += 1

    def check() -> None:
        if cancel is not None and cancel.is_set():
            raise Cancelled("stopped on request")

    if progress is not None:
        def predicted(count: int) -> None:
            nonlocal done
            done += count
            progress(min(done, total), total)

        blender.on_predicted = predicted
    interval, collecting = sys.getswitchinterval(), gc.isenabled()
    if tuning.switch_interval is not None:
        sys.setswitchinterval(tuning.switch_interval)
    if not tuning.collect_garbage:
        gc.disable()
    pauses: list[float] = []  # seconds of each collection during the run (trace_waits)
    collection_began = 0.0

    def timed_collection(phase: str, info: dict) -> None:
        nonlocal collection_began
        if phase == "start":
            collection_began = time.perf_counter()
        elif collection_began:  # not a collection already under way when the run began
            pauses.append(time.perf_counter() - collection_began)
            collection_began = 0.0

    if tuning.trace_waits:
        gc.callbacks.append(timed_collection)
    device_waited: Counter[str] = Counter()  # calls that made the device thread wait for the GPU (trace_waits)
    try:
        with device_waits(tuning.trace_waits and inputs.device.type == "cuda") as device_waited:
            for i, row in enumerate(plan):
                check()
                for k in range(ahead + 1):  # the readers go on while the device works on this one
                    start_reading(i + k)
                strip, loads = loading.pop(i)
                for load in loads:
                    check()
                    load.result()
                waited = lap("wait for reads")
                if i == 0:
                    marks["first strip in at"] = clock - began
                elif tuning.trace_waits and waited > 1e-3:
                    marks[f"read wait row {i}"] = waited
                inputs.take_strip(strip)
                del strip, loads
                lap("take in")
                inputs.develop()
                blender.begin_row(row, inputs.validity(*layout.scene_span(*row.core_rows, layout.height)))
                for block in row.blocks:
                    check()
                    blender.add_block(block, inputs.patch_region(block) if block.origins else None)
                lap("blocks")
                if i == 0:
                    marks["first row queued at"] = clock - began
                for row0, made in blender.end_row(row):
                    lap("labels")
                    writes.append(writer.submit(_write_strips, write, row0, made, wrote))
                    while len(writes) > tuning.writes_ahead:
                        writes.popleft().result()
                    waited = lap("wait for writes")
                    if tuning.trace_waits and waited > 1e-3:
                        marks[f"write wait row {i}"] = marks.get(f"write wait row {i}", 0.0) + waited
                lap("labels")
                inputs.drop_before(keep_from[i + 1])
        while writes:
            writes.popleft().result()
        lap("wait for writes")
        if decoder is not None:  # tiles the device failed to decode fail the run before its mask is published
            decoder.check()
        if progress is not None:
            progress(total, total)
    finally:
        sys.setswitchinterval(interval)
        if collecting:
            gc.enable()
        if tuning.trace_waits:
            gc.callbacks.remove(timed_collection)
            marks["gc pauses"] = len(pauses)
            marks["gc s"] = sum(pauses)
            if inputs.device.type == "cuda":
                marks["device waits"] = sum(device_waited.values())
                marks.update({f"device wait at {site}": n for site, n in device_waited.most_common(4)})
        readers.finish()
        writer.shutdown(wait=True, cancel_futures=True)
        if device_reader is not None:
            decoder.close()
            device_reader.shutdown(wait=True, cancel_futures=True)
        if timings is not None:
            timings.update({k: round(v, 3) for k, v in spent.items()})
            timings.update({k: round(v, 3) for k, v in marks.items()})
            timings["pipeline s"] = round(time.perf_counter() - began, 3)
            timings["writer: copy waits"] = round(wrote.copy_waits, 3)
            timings["writer: writing"] = round(wrote.writing, 3)
            if decoder is not None:
                s = decoder.stats
                timings.update({"device decode chunks": s.chunks, "reader chunks": s.cpu_chunks,
                                "device decode batches": s.batches, "strips ahead": ahead,
                                "device decode busy": round(s.busy_seconds, 3),
                                "device decode fetch": round(s.fetch_seconds, 3)})


@dataclass
class WriterClock:
    """The writer thread's seconds: waiting for the strips' copies to the host (the device is behind), and
    writing them (encoding and the file: the writer is behind). Which one grows tells where a device thread's
    ``wait for writes`` comes from."""

    copy_waits: float = 0.0
    writing: float = 0.0


def _write_strips(write: WriteFn, row0: int, strips: dict, clock: WriterClock) -> None:
    """On the writer thread: wait for the strips' copies to the host (:class:`geoseg.engine.blender.HostStrip`),
    then write them."""
    began = time.perf_counter()
    values = {name: strip.numpy() for name, strip in strips.items()}
    copied = time.perf_counter()
    write(row0, values)
    clock.copy_waits += copied - began
    clock.writing += time.perf_counter() - copied
