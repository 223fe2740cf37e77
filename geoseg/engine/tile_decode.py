"""Decoding a GeoTIFF's compressed tiles on the GPU, beside (or instead of) the CPU readers.

The CPU readers (:class:`geoseg.io.scene.WindowReader`, GDAL) decode a scene at a few GB/s; on a
GPU server that is the limit of a run (benchmarks/RESULTS.md section 11). :class:`TileDecoder` takes
read chunks (whole tiles of the file) and:

1. reads their tiles' compressed bytes as stored (:meth:`geoseg.io.tiles.TileIndex.fetch`), each tile
   one ``pread``, into the page-locked host buffer of the batch's turn, payloads aligned;
2. copies them to the device and inflates them there, all tiles of a batch in one call of nvCOMP's
   batched decoder (:class:`~geoseg.engine.inflate.NvcompInflater`, only enqueued: the thread goes
   on to the next batch; :class:`HostInflater` does the same on the host with zlib / zstandard and is the
   reference the tests compare with);
3. undoes the TIFF predictor on the device (:func:`undo_predictor`: horizontal differencing, or the
   floating-point predictor's byte planes) and places the tiles' pixels of the model's bands into
   the strip (:meth:`geoseg.engine.input_rows.InputRows.open_strip`), with their validity from the
   nodata value, exactly as the CPU readers would. No decoded pixel passes through host memory.

All of it runs in one thread, its batches taking turns on CUDA streams of their own
(:data:`DECODE_STREAMS`), so it overlaps the network and the CPU readers. Chunks are shared through a
:class:`ChunkQueue` per strip: the CPU readers take them from the left, the decoder takes batches from
the right (at most half of what is left in ``hybrid``), so both finish a strip together whatever their
speeds. The pixels are bit-identical to GDAL's (tests/engine/test_tile_decode.py; tests/test_gpu.py on
a GPU), so the mask is too.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from geoseg.engine.inflate import Inflater, NvcompInflater, nvcomp_missing, undo_predictor
from geoseg.engine.input_rows import _NUMPY_TRANSFER, _TRANSFER, InputStrip
from geoseg.engine.plan import Box
from geoseg.errors import ConfigError, SceneError
from geoseg.io.scene import SceneInfo, nodata_value
from geoseg.io.tiles import FETCH_THREADS, TileIndex, tile_index

#: Tiles one batch of the device decoder takes at most (a batch is never less than one chunk): nvCOMP
#: inflates each tile's stream on its own, so a call needs many (benchmarks/RESULTS.md section 11).
BATCH_TILES = 1536
#: CUDA streams the device decoder takes turns on, one batch each: nvCOMP's batch takes about as long
#: whatever its size (each tile inflated by one thread block), so a batch of a few strips leaves most of the
#: GPU idle unless the next one runs beside it.
DECODE_STREAMS = 2
#: ``--decode auto`` is ``gpu`` where it applies (a CUDA device, a tiled file in a codec nvCOMP decodes, nvCOMP
#: installed) for a run whose network sees the scene at least this many times coarser (``factor``), ``cpu``
#: elsewhere. Read-bound runs (the network on a coarser grid) were faster with the device decoder
#: (benchmarks/RESULTS.md section 11); at the scene's own resolution (f = 1) the network is the wall and decoding
#: on the same GPU takes its SMs: 2.30 against 2.23 s (efficientnet-b4) and 2.07 against 1.98 s (vgg16) with the
#: CPU readers, 16384², on the H100 (section 14, 2026-12-07 evening). ``hybrid`` is asked for by name only: it was
#: slower than both.
AUTO_DEVICE_FROM_FACTOR = 2
#: In ``hybrid``, of the chunks a strip has left, the most one batch of the device decoder takes.
HYBRID_SHARE = 0.5


class ChunkQueue:
    """The read chunks of one strip, shared: CPU readers take from the left, the device from the right."""

    def __init__(self, chunks: list[Box]):
        self._chunks = deque(chunks)
        self._lock = threading.Lock()

    @property
    def empty(self) -> bool:
        return not self._chunks

    def peek(self) -> Box | None:
        with self._lock:
            return self._chunks[-1] if self._chunks else None

    def snapshot(self) -> list[Box]:
        with self._lock:
            return list(self._chunks)

    def take_left(self) -> Box | None:
        with self._lock:
            return self._chunks.popleft() if self._chunks else None

    def take_right(self, budget: int, chunk_size: int, share: float) -> list[Box]:
        """Chunks from the right, at most ``share`` of those left and ``budget // chunk_size`` of them (at
        least one): the budget and a chunk's size in one unit (the decoder counts tiles)."""
        with self._lock:
            most = max(1, min(int(len(self._chunks) * share + 0.999), budget // max(1, chunk_size)))
            taken = [self._chunks.pop() for _ in range(min(most, len(self._chunks)))]
        return taken[::-1]


@dataclass
class DecodeStats:
    """What the device decoder did in a run (``timings`` of :func:`geoseg.engine.pipeline.run_pipeline`)."""

    batches: int = 0
    chunks: int = 0
    tiles: int = 0
    fetch_seconds: float = 0.0
    #: Host seconds inside the inflater's call (nvCOMP's launch, or all of it where it waits for the device).
    inflate_seconds: float = 0.0
    #: Host seconds launching the predictor's undoing and the tiles' placement.
    place_seconds: float = 0.0
    busy_seconds: float = 0.0
    cpu_chunks: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class TileDecoder:
    """Decodes read chunks of a tiled GeoTIFF on the device into input strips (see module docstring).

    nvCOMP inflates each tile's stream on its own, so one call needs thousands of tiles to keep the
    GPU busy (benchmarks/RESULTS.md section 11): a batch takes chunks from every strip the pipeline
    has opened (:meth:`submit`), and the pipeline opens as many strips ahead as :meth:`strips_ahead`
    says. A batch is only enqueued on the decoder's stream (:class:`~geoseg.engine.inflate.NvcompInflater`):
    the thread goes on to read the next one while the device decodes, and the strips' events tell the
    device thread when their rows are in.
    """

    def __init__(self, index: TileIndex, bands: tuple[int, ...], device: torch.device, nodata: float | None,
                 mode: str = "hybrid", inflater: Inflater | None = None, batch_tiles: int = BATCH_TILES,
                 hybrid_share: float | None = None, streams: int | None = None):
        self.index, self.device, self.mode = index, device, mode
        self.hybrid_share = HYBRID_SHARE if hybrid_share is None else hybrid_share
        self.bands = tuple(b - 1 for b in bands)  # 0-based
        self.transfer = _TRANSFER[index.dtype.name]
        self.nodata = nodata
        self.batch_tiles = batch_tiles
        #: The streams batches take turns on (None on a CPU), each with one of the host buffers.
        self.streams: list[torch.cuda.Stream | None] = (
            [torch.cuda.Stream(device) for _ in range(max(1, streams or DECODE_STREAMS))] if device.type == "cuda"
            else [None])
        self._inflater = inflater
        self._buffers: list[tuple[torch.Tensor, torch.cuda.Event | None]] = []
        self._turn = 0
        self._slots = max(2, len(self.streams))  # host buffers
        self._fd: int | None = None
        self._open: list[tuple[InputStrip, ChunkQueue, Future, torch.cuda.Event | None]] = []
        self._changed = threading.Condition()
        self._closed = False
        self._fetchers = ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="geoseg-fetch")
        self.stats = DecodeStats()

    @property
    def share(self) -> float:
        """Of the chunks a strip has left, the most one batch takes: all of them in ``gpu``, ``hybrid_share``
        (:data:`HYBRID_SHARE` by default) in ``hybrid``."""
        return 1.0 if self.mode == "gpu" else self.hybrid_share

    def strips_ahead(self, strip_tiles: int, strip_bytes: int, least: int) -> int:
        """Strips the pipeline should open ahead of the one it works on: enough for a full batch, at most
        what a quarter of the device's free memory holds (each strip ahead, and its share of the batch)."""
        wanted = -(-self.batch_tiles // max(1, strip_tiles))
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            wanted = min(wanted, int(free / 4 // max(1, 2 * strip_bytes)))
        return max(least, wanted)

    def check(self) -> None:
        """Raise :class:`SceneError` if any tile decoded so far failed (waits for the device): called once a
        run's strips are all in, before its mask is published."""
        failed = self._inflater.check() if self._inflater is not None else 0
        if failed:
            raise SceneError(f"{self.index.path}: {failed} tile(s) could not be decoded on {self.device}; the file "
                             f"may be damaged: check it with gdalinfo -checksum, or use --decode cpu")

    def close(self) -> None:
        """Stop :meth:`serve` (strips left half-decoded are the pipeline's to drop) and close the file."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._fetchers.shutdown(wait=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def submit(self, strip: InputStrip, queue: ChunkQueue, allocated_on: torch.cuda.Stream | None = None) -> Future:
        """Offer ``strip``'s chunks (``queue``, shared with the CPU readers) to :meth:`serve`. The future is
        done once the decoder takes no more of them and its copies into the strip are in ``strip.copied``.
        ``allocated_on``: the stream ``strip`` was allocated on, which the decoder's stream waits for."""
        done: Future = Future()
        ready = None
        if self.streams[0] is not None and allocated_on is not None:
            ready = torch.cuda.Event()
            ready.record(allocated_on)
        with self._changed:
            self._open.append((strip, queue, done, ready))
            self._changed.notify_all()
        return done

    def serve(self) -> None:
        """Decode the submitted strips' chunks in batches until :meth:`close` (the decoder's one thread)."""
        try:
            while self._batch():
                pass
        except BaseException as exc:
            with self._changed:
                for _, _, done, _ in self._open:
                    if not done.done():
                        done.set_exception(exc)
                self._open.clear()
            raise

    def drain(self, strip: InputStrip, queue: ChunkQueue, allocated_on: torch.cuda.Stream | None = None) -> None:
        """Decode ``queue``'s chunks into ``strip`` in this thread, in batches (a floor, or one strip alone)."""
        done = self.submit(strip, queue, allocated_on)
        while not done.done():
            self._batch(wait=False)
        done.result()
        self.check()

    def _batch(self, wait: bool = True) -> bool:
        """Take one batch from the open strips (waiting for some when ``wait``), decode it, and finish the
        strips the decoder has no more to take from; False once closed."""
        with self._changed:
            while wait and not self._closed and not self._open:
                self._changed.wait()
            if self._closed:
                return False
            open_now = list(self._open)
        # As many tiles as a batch takes, from the first strip on: a batch takes about as long on the device
        # whatever its size (nvCOMP inflates each tile in one thread block), so the first strip comes no
        # sooner in a smaller one.
        budget = self.batch_tiles
        self._turn = (self._turn + 1) % self._slots  # the host buffer, and the stream, of this batch
        stream = self.streams[self._turn % len(self.streams)]
        taken: list[tuple[InputStrip, Box]] = []
        for strip, queue, _, ready in open_now:
            if budget <= 0:
                break
            last = queue.peek()
            chunks = queue.take_right(budget, self.tiles_in(last) if last is not None else 1, self.share)
            if chunks and ready is not None:
                stream.wait_event(ready)
            taken += [(strip, c) for c in chunks]
            budget -= sum(self.tiles_in(c) for c in chunks)
        if taken:
            with torch.cuda.stream(stream) if stream is not None else nullcontext():
                self._decode(taken, stream)
        with self._changed:
            for entry in open_now:
                if entry[1].empty:
                    entry[2].set_result(None)
                    self._open.remove(entry)
        return True

    def tiles_in(self, box: Box) -> int:
        """Tiles the decoder reads for the scene pixels ``box`` of its bands."""
        return self.index.tiles(box.row0, box.row1, box.col0, box.col1, self.bands).size

    def _decode(self, taken: list[tuple[InputStrip, Box]], stream: torch.cuda.Stream | None) -> None:
        index = self.index
        started = time.perf_counter()
        per_chunk = [index.tiles(c.row0, c.row1, c.col0, c.col1, self.bands) for _, c in taken]
        tiles = np.concatenate([t.ravel() for t in per_chunk])
        host = self._host_buffer(index.fetch_bytes(tiles))
        if self._fd is None:
            self._fd = os.open(index.path, os.O_RDONLY)
        try:
            where = index.fetch(tiles, host.numpy(), self._fd, self._fetchers)
        except OSError as exc:
            raise SceneError(f"{exc}; or use --decode cpu") from None
        fetched = time.perf_counter()
        inflated = self._inflate(host, where, stream)
        launched = time.perf_counter()
        at = 0
        for (strip, chunk), chunk_tiles in zip(taken, per_chunk, strict=True):
            part = undo_predictor(inflated[at : at + chunk_tiles.size], index)  # chunk by chunk: small temporaries
            sparse = where[at : at + chunk_tiles.size, 1] == 0
            if sparse.any():  # GDAL reads a tile that was never written as nodata, or 0
                fill = 0 if self.nodata is None or np.isnan(self.nodata) else self.nodata
                part[torch.from_numpy(np.flatnonzero(sparse)).to(self.device)] = self._bits(fill)
            self._place(strip, chunk, chunk_tiles.shape, part)
            at += chunk_tiles.size
        placed = time.perf_counter()
        if stream is not None:
            done = torch.cuda.Event()
            done.record(stream)
            for strip in {id(s): s for s, _ in taken}.values():
                strip.copied.append(done)
            self._buffers[self._turn] = (host, done)
        with self.stats.lock:
            s = self.stats
            s.batches += 1
            s.chunks += len(taken)
            s.tiles += len(tiles)
            s.fetch_seconds += fetched - started
            s.inflate_seconds += launched - fetched
            s.place_seconds += placed - launched
            s.busy_seconds += time.perf_counter() - started

    def _inflate(self, host: torch.Tensor, where: np.ndarray, stream: torch.cuda.Stream | None) -> torch.Tensor:
        if self._inflater is None:
            self._inflater = NvcompInflater(self.index.codec, self.device)
        try:
            return self._inflater.inflate(host, where, self.index.tile_bytes, self.device, stream)
        except (RuntimeError, ValueError) as exc:
            raise SceneError(f"{self.index.path}: tiles could not be decoded on {self.device} ({exc}); the file "
                             f"may be damaged: check it with gdalinfo -checksum, or use --decode cpu") from None

    def _host_buffer(self, nbytes: int) -> torch.Tensor:
        """The host buffer of this batch's turn (page-locked on a GPU): one fills while the others' batches
        are decoded; a buffer is reused once its batch has been decoded."""
        while len(self._buffers) < self._slots:
            self._buffers.append((torch.empty(0, dtype=torch.uint8), None))
        buffer, done = self._buffers[self._turn]
        if done is not None:
            done.synchronize()
        if buffer.numel() < nbytes:
            buffer = torch.empty(nbytes + nbytes // 4, dtype=torch.uint8,
                                 pin_memory=self.streams[0] is not None)
        self._buffers[self._turn] = (buffer, None)
        return buffer

    def _bits(self, value: float) -> torch.Tensor:
        """``value`` in the file's dtype, as the bits it travels in."""
        bits = np.asarray(self.index.dtype.type(value)).view(_NUMPY_TRANSFER[self.index.dtype.name])
        return torch.tensor(bits.item(), dtype=self.transfer, device=self.device)

    def _place(self, strip: InputStrip, box: Box, grid: tuple[int, int, int], tiles: torch.Tensor) -> None:
        """Put the decoded ``tiles`` of chunk ``box`` (``grid``: planes, tile rows, tile cols) into ``strip``."""
        (th, tw), (planes, down, across) = self.index.tile_shape, grid
        assert box.row0 % th == 0 and box.col0 % tw == 0, (box, self.index.tile_shape)
        spp = tiles.shape[-1]
        x = tiles.view(planes, down, across, th, tw, spp)
        if planes == 1 and self.bands != tuple(range(spp)):  # pixel-interleaved: pick the model's bands
            x = x[..., list(self.bands)]
        x = x.permute(0, 5, 1, 3, 2, 4)  # (plane, sample, tile row, row, tile col, col)
        x = x.reshape(len(self.bands), down, th, across, tw)
        r0, r1 = box.row0 - strip.rows[0], box.row1 - strip.rows[0]
        rows, cols = box.shape
        target = strip.raw[:, r0:r1, box.col0 : box.col1]
        if rows == down * th and cols == across * tw:  # whole tiles: one strided copy
            target.unflatten(1, (down, th)).unflatten(3, (across, tw)).copy_(x)
            values = target
        else:  # the scene's right or bottom edge: tiles reach past it
            values = x.reshape(len(self.bands), down * th, across * tw)[:, :rows, :cols]
            target.copy_(values)
        if self.index.dtype.kind == "f" or self.nodata is not None:
            strip.valid[r0:r1, box.col0 : box.col1] = self._validity(values)

    def _validity(self, values: torch.Tensor) -> torch.Tensor:
        """As :func:`geoseg.io.scene.valid_from_values`: no NaN, and no band at the nodata value."""
        valid = torch.ones(values.shape[1:], dtype=torch.bool, device=values.device)
        if self.index.dtype.kind == "f":
            valid &= ~torch.isnan(values).any(dim=0)
        if self.nodata is not None and not np.isnan(self.nodata):
            valid &= ~(values == self._bits(self.nodata)).any(dim=0)
        return valid


def decode_plan(mode: str, scene: SceneInfo, device: torch.device, factor: int) -> TileIndex | None:
    """The tile index the device decodes ``scene`` from under ``--decode mode``, or None for the CPU readers;
    ``factor`` is the run's scene pixels per model-grid pixel along each axis.

    ``auto`` is the device where it can be and the run is read-bound (:data:`AUTO_DEVICE_FROM_FACTOR`), quietly
    the CPU readers elsewhere; ``gpu`` and ``hybrid`` say why they cannot be had (:class:`ConfigError`)."""
    if mode == "cpu":
        return None
    if mode == "auto" and (device.type != "cuda" or factor < AUTO_DEVICE_FROM_FACTOR):
        return None
    index = tile_index(scene)
    reasons = [r for r in (
        None if device.type == "cuda" else f"the device is {device}, not a CUDA GPU",
        None if isinstance(index, TileIndex) else f"the file is {index}",
        None if device.type != "cuda" else nvcomp_missing(),
    ) if r]
    if reasons:
        if mode == "auto":
            return None
        raise ConfigError(f"{scene.path}: --decode {mode} cannot be used: {'; '.join(reasons)}; use --decode cpu")
    assert isinstance(index, TileIndex)
    return index


def make_decoder(mode: str, index: TileIndex | None, scene: SceneInfo, bands: tuple[int, ...],
                 device: torch.device, streams: int = DECODE_STREAMS,
                 hybrid_share: float = HYBRID_SHARE) -> TileDecoder | None:
    """The device decoder of ``scene`` under ``--decode mode``, from the tile index :func:`decode_plan` chose
    (None: the CPU readers decode, and there is no device decoder), on ``streams`` CUDA streams."""
    if index is None:
        return None
    return TileDecoder(index, bands, device, nodata_value(scene), "gpu" if mode == "auto" else mode,
                       hybrid_share=hybrid_share, streams=streams)
