"""Compressed tile payloads to samples: inflating them (nvCOMP on the device, or zlib / zstandard on the
host) and undoing the TIFF predictor on the device. :mod:`geoseg.engine.tile_decode` batches and places them.
"""

from __future__ import annotations

import ctypes
import threading
import zlib
from typing import Protocol

import numpy as np
import torch

from geoseg.engine.input_rows import _TRANSFER
from geoseg.io.tiles import TileIndex


def nvcomp_missing() -> str | None:
    """Why nvCOMP's library cannot be used here, or None when it can."""
    try:
        _libnvcomp()
    except ImportError:
        return "nvCOMP is not installed (pip install 'geoseg[gpu-decode]')"
    except Exception as exc:
        return f"nvCOMP cannot be loaded ({type(exc).__name__}: {exc})"
    return None


_LIB: list[ctypes.CDLL] = []
_LIB_LOCK = threading.Lock()


def _libnvcomp() -> ctypes.CDLL:
    """nvCOMP's C library, from its wheel (``nvidia-libnvcomp-cu13`` / ``-cu12``), loaded once."""
    with _LIB_LOCK:
        if not _LIB:
            from nvidia import libnvcomp

            lib = libnvcomp.load_library()
            if lib is None:
                raise OSError("libnvcomp.so could not be loaded from the nvidia-libnvcomp wheel")
            _LIB.append(lib)
        return _LIB[0]


class Inflater(Protocol):
    """Turns a batch of compressed tile payloads in a host buffer into decoded tiles on the device."""

    def inflate(self, host: torch.Tensor, where: np.ndarray, tile_bytes: int, device: torch.device,
                stream: torch.cuda.Stream | None) -> torch.Tensor:
        """``(tile, tile_bytes)`` uint8 on ``device``: the payloads at ``where`` (offset, size rows of
        :meth:`geoseg.io.tiles.TileIndex.fetch`) of ``host`` inflated; rows of sparse tiles are left
        as they are (the caller fills them)."""
        ...

    def check(self) -> int:
        """Tiles that failed to decode so far and were not reported by :meth:`inflate` (0 where it raises)."""
        ...


class HostInflater:
    """Inflates on the host (zlib / zstandard), then uploads: the reference for :class:`NvcompBindingsInflater`."""

    def __init__(self, codec: str):
        self.codec = codec

    def inflate(self, host: torch.Tensor, where: np.ndarray, tile_bytes: int, device: torch.device,
                stream: torch.cuda.Stream | None) -> torch.Tensor:
        raw = host.numpy()
        out = np.zeros((len(where), tile_bytes), dtype=np.uint8)
        for i, (start, size) in enumerate(where.tolist()):
            if size == 0:
                continue
            payload = raw[start : start + size]
            if self.codec == "deflate":
                data = zlib.decompress(payload, wbits=-15)
            elif self.codec == "zstd":
                import zstandard

                data = zstandard.ZstdDecompressor().decompress(payload, max_output_size=tile_bytes)
            else:
                data = payload
            out[i, : len(data)] = np.frombuffer(data, dtype=np.uint8)[:tile_bytes]
        return torch.from_numpy(out).to(device)

    def check(self) -> int:
        return 0  # zlib and zstandard raise


class _DecompressOpts(ctypes.Structure):
    """``nvcompBatched{Deflate,Zstd}DecompressOpts_t``: 64 bytes, all zero for the default backend."""

    _fields_ = [("backend", ctypes.c_int), ("reserved", ctypes.c_char * 60)]


class NvcompInflater:
    """nvCOMP's batched decoders (raw deflate, zstd) through its C API, called with ctypes: the decode is
    only enqueued on the stream, and the GIL is released meanwhile.

    nvCOMP's Python bindings (:class:`NvcompBindingsInflater`) return only once the device has decoded the batch,
    holding the GIL all along, so every reader thread waited for it (benchmarks/RESULTS.md section 11). Here
    the pointer and size
    arrays are made on the host and copied with the payloads; failed tiles (a status other than success, or
    fewer bytes than a tile holds) are counted on the device and reported by :meth:`check`, once, at the
    end of a run: a damaged file then fails the run before its mask is published. One inflater serves
    several streams (one thread): each has its own scratch memory and count.
    """

    def __init__(self, codec: str, device: torch.device):
        self.codec, self.device = codec, device
        #: Per stream: nvCOMP's scratch memory, and the failed tiles counted there (made on that stream).
        self._temp: dict[int, torch.Tensor] = {}
        self._failed: dict[int, tuple[torch.cuda.Stream, torch.Tensor]] = {}
        if codec == "none":
            return
        lib, name = _libnvcomp(), {"deflate": "Deflate", "zstd": "Zstd"}[codec]
        self._decompress = getattr(lib, f"nvcompBatched{name}DecompressAsync")
        p, size = ctypes.c_void_p, ctypes.c_size_t
        self._decompress.argtypes = [p, p, p, p, size, p, size, p, _DecompressOpts, p, p]
        self._decompress.restype = ctypes.c_int
        self._temp_size = getattr(lib, f"nvcompBatched{name}DecompressGetTempSize")
        self._temp_size.argtypes = [size, size, _DecompressOpts, ctypes.POINTER(size), size, p]
        self._temp_size.restype = ctypes.c_int
        self._opts = _DecompressOpts()

    def inflate(self, host: torch.Tensor, where: np.ndarray, tile_bytes: int, device: torch.device,
                stream: torch.cuda.Stream | None) -> torch.Tensor:
        assert stream is not None
        with torch.cuda.stream(stream):  # every allocation and kernel on the decode's stream
            return self._inflate(host, where, tile_bytes, device, stream)

    def _inflate(self, host: torch.Tensor, where: np.ndarray, tile_bytes: int, device: torch.device,
                 stream: torch.cuda.Stream) -> torch.Tensor:
        present, out, compressed = _uploaded(host, where, tile_bytes, device, self.codec)
        if compressed is None:
            return out
        n = len(present)
        table = np.empty((4, n), dtype=np.int64)  # input pointers and sizes, output sizes and pointers
        table[0] = compressed.data_ptr() + where[present, 0]
        table[1] = where[present, 1]
        table[2] = tile_bytes
        table[3] = out.data_ptr() + present * tile_bytes
        arrays = torch.from_numpy(table).pin_memory().to(device, non_blocking=True)
        got = torch.empty(n, dtype=torch.int64, device=device)
        statuses = torch.empty(n, dtype=torch.int32, device=device)
        temp = ctypes.c_size_t(0)
        handle = ctypes.c_void_p(stream.cuda_stream)
        self._call("GetTempSize", self._temp_size(n, tile_bytes, self._opts, ctypes.byref(temp), n * tile_bytes,
                                                  handle))
        key = stream.cuda_stream
        if key not in self._temp or self._temp[key].numel() < temp.value:
            self._temp[key] = torch.empty(temp.value, dtype=torch.uint8, device=device)
        base = arrays.data_ptr()
        self._call("DecompressAsync", self._decompress(
            base, base + 8 * n, base + 16 * n, got.data_ptr(), n, self._temp[key].data_ptr(), temp.value,
            base + 24 * n, self._opts, statuses.data_ptr(), handle))
        failed = ((statuses != 0) | (got != tile_bytes)).sum()
        if key in self._failed:
            self._failed[key][1].add_(failed)
        else:
            self._failed[key] = (stream, failed)
        return out

    def _call(self, what: str, status: int) -> None:
        if status != 0:
            raise RuntimeError(f"nvCOMP's {what} returned status {status}")

    def check(self) -> int:
        """Tiles that failed to decode so far (waits for the device)."""
        total = 0
        for stream, failed in self._failed.values():
            stream.synchronize()
            total += int(failed.item())
        return total


class NvcompBindingsInflater:
    """nvCOMP's batched decoders (raw deflate, zstd) through its Python bindings (``nvidia-nvcomp``): each
    call waits for the device with the GIL held (see :class:`NvcompInflater`, which geoseg uses). Kept
    as a second implementation for the GPU tests and the benchmark. One per thread: a Codec is not shared."""

    def __init__(self, codec: str, device: torch.device, stream: torch.cuda.Stream):
        from nvidia import nvcomp

        self.nvcomp, self.codec = nvcomp, codec
        self.stream_handle = stream.cuda_stream
        self.decoder = None if codec == "none" else nvcomp.Codec(
            algorithm={"deflate": "Deflate", "zstd": "Zstd"}[codec], bitstream_kind=nvcomp.BitstreamKind.RAW,
            device_id=device.index or 0, cuda_stream=self.stream_handle)
        self._configs: dict[tuple[int, int], object] = {}
        #: How decode is configured: "sizes" (from the known tile sizes, no synchronisation) or "parsed".
        self.config_path = "sizes"

    def inflate(self, host: torch.Tensor, where: np.ndarray, tile_bytes: int, device: torch.device,
                stream: torch.cuda.Stream | None) -> torch.Tensor:
        nv = self.nvcomp
        present, out, compressed = _uploaded(host, where, tile_bytes, device, self.codec)
        if compressed is None:
            return out
        srcs = nv.as_arrays(compressed, where[present, 0].tolist(), where[present, 1].tolist(),
                            cuda_stream=self.stream_handle)
        outs = nv.as_arrays(out, (present * tile_bytes).tolist(), [tile_bytes] * len(present),
                            cuda_stream=self.stream_handle)
        self.decoder.decode(srcs, out=outs, **self._config(len(present), tile_bytes))
        return out

    def check(self) -> int:
        return 0  # the bindings raise

    def _config(self, count: int, tile_bytes: int) -> dict:
        """A decompression config from the tile sizes, which spares nvCOMP a pass over every stream to
        learn them; where this nvCOMP build does not offer it, nvCOMP works them out."""
        if self.config_path != "sizes":
            return {}
        key = (count, tile_bytes)
        if key not in self._configs:
            try:
                made = self.decoder.compression_config([tile_bytes] * count)
                self._configs[key] = self.decoder.decompression_config(made)
            except Exception:
                self.config_path = "parsed"
                return {}
        return {"decompression_config": self._configs[key]}


def _uploaded(host: torch.Tensor, where: np.ndarray, tile_bytes: int, device: torch.device,
              codec: str) -> tuple[np.ndarray, torch.Tensor, torch.Tensor | None]:
    """A batch's start on the device, for nvCOMP's inflaters: ``(present, out, compressed)``, the rows of
    tiles with a payload, the ``(tile, tile_bytes)`` output and the payloads copied from ``host`` (on the
    current stream). ``compressed`` is None when nothing is left to inflate: no payload, or uncompressed
    tiles, copied into ``out`` here."""
    present = np.flatnonzero(where[:, 1] > 0)
    out = torch.empty((len(where), tile_bytes), dtype=torch.uint8, device=device)
    if len(present) == 0:
        return present, out, None
    end = int((where[:, 0] + where[:, 1]).max())
    compressed = host[:end].to(device, non_blocking=True)
    if codec == "none":  # uncompressed tiles: one copy each, on the device
        for i in present.tolist():
            start = int(where[i, 0])
            out[i].copy_(compressed[start : start + tile_bytes])
        return present, out, None
    return present, out, compressed


#: The signed integer type of each sample width in bytes, in which the horizontal predictor is undone.
_SAME_WIDTH_INT = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def undo_predictor(tiles: torch.Tensor, index: TileIndex) -> torch.Tensor:
    """Decoded tiles ``(tile, tile_bytes)`` uint8 as samples ``(tile, row, col, sample)`` of the dtype
    the engine moves them in (:data:`geoseg.engine.input_rows._TRANSFER`), the TIFF predictor undone."""
    (rows, cols), spp = index.tile_shape, 1 if index.separate else index.samples
    transfer = _TRANSFER[index.dtype.name]
    n = tiles.shape[0]
    if index.predictor == 3:  # bytes of a row: big-endian byte planes, differenced with a stride of spp
        width = index.dtype.itemsize
        planes = tiles.view(n, rows, cols * width, spp)
        planes = torch.cumsum(planes.view(torch.int8), dim=2, dtype=torch.int8).view(torch.uint8)  # modulo 256
        planes = planes.view(n, rows, width, cols * spp).flip(2)  # most significant plane first -> little-endian
        return planes.permute(0, 1, 3, 2).contiguous().view(transfer).view(n, rows, cols, spp)
    if index.predictor == 2:
        # Horizontal differencing works on the samples' bits as integers of their width, floats too (GDAL writes
        # float32 with it). A scan in that integer type wraps modulo its width as the predictor does, and moves a
        # third of the bytes of a scan in a wider type and a cast back.
        bits = _SAME_WIDTH_INT[index.dtype.itemsize]
        return torch.cumsum(tiles.view(bits).view(n, rows, cols, spp), dim=2, dtype=bits).view(transfer)
    return tiles.view(transfer).view(n, rows, cols, spp)
