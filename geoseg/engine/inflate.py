"""Compressed tile payloads to samples: inflating them (nvCOMP on the device, or zlib / zstandard on the
host) and undoing the TIFF predictor on the device. :mod:`geoseg.engine.tile_decode` batches and places them.
"""

from __future__ import annotations

import zlib
from typing import Protocol

import numpy as np
import torch

from geoseg.engine.input_band import _TRANSFER
from geoseg.io.tiles import TileIndex


def nvcomp_missing() -> str | None:
    """Why nvCOMP's Python bindings cannot be used here, or None when they can."""
    try:
        from nvidia import nvcomp  # noqa: F401
    except ImportError:
        return "nvCOMP is not installed (pip install 'geoseg[gpu-decode]')"
    except Exception as exc:
        return f"nvCOMP cannot be loaded ({type(exc).__name__}: {exc})"
    return None


class Inflater(Protocol):
    """Turns a batch of compressed tile payloads in a host buffer into decoded tiles on the device."""

    def inflate(self, host: torch.Tensor, where: np.ndarray, tile_bytes: int, device: torch.device,
                stream: torch.cuda.Stream | None) -> torch.Tensor:
        """``(tile, tile_bytes)`` uint8 on ``device``: the payloads at ``where`` (offset, size rows of
        :meth:`geoseg.io.tiles.TileIndex.fetch`) of ``host`` inflated; rows of sparse tiles are left
        as they are (the caller fills them)."""
        ...


class HostInflater:
    """Inflates on the host (zlib / zstandard), then uploads: the reference for :class:`NvcompInflater`."""

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


class NvcompInflater:
    """nvCOMP's batched decoders (raw deflate, zstd) on the device. One per thread: a Codec is not shared."""

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
        present = np.flatnonzero(where[:, 1] > 0)
        out = torch.empty((len(where), tile_bytes), dtype=torch.uint8, device=device)
        if len(present) == 0:
            return out
        end = int((where[:, 0] + where[:, 1]).max())
        compressed = host[:end].to(device, non_blocking=True)
        if self.decoder is None:  # uncompressed tiles: one copy each, on the device
            for i in present.tolist():
                start = int(where[i, 0])
                out[i].copy_(compressed[start : start + tile_bytes])
            return out
        srcs = nv.as_arrays(compressed, where[present, 0].tolist(), where[present, 1].tolist(),
                            cuda_stream=self.stream_handle)
        outs = nv.as_arrays(out, (present * tile_bytes).tolist(), [tile_bytes] * len(present),
                            cuda_stream=self.stream_handle)
        self.decoder.decode(srcs, out=outs, **self._config(len(present), tile_bytes))
        return out

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


def undo_predictor(tiles: torch.Tensor, index: TileIndex) -> torch.Tensor:
    """Decoded tiles ``(tile, tile_bytes)`` uint8 as samples ``(tile, row, col, sample)`` of the dtype
    the engine moves them in (:data:`geoseg.engine.input_band._TRANSFER`), the TIFF predictor undone."""
    (rows, cols), spp = index.tile_shape, 1 if index.separate else index.samples
    transfer = _TRANSFER[index.dtype.name]
    n = tiles.shape[0]
    if index.predictor == 3:  # bytes of a row: big-endian byte planes, differenced with a stride of spp
        width = index.dtype.itemsize
        planes = tiles.view(n, rows, cols * width, spp)
        planes = torch.cumsum(planes, dim=2, dtype=torch.int32).to(torch.uint8)  # modulo 256
        planes = planes.view(n, rows, width, cols * spp).flip(2)  # most significant plane first -> little-endian
        return planes.permute(0, 1, 3, 2).contiguous().view(transfer).view(n, rows, cols, spp)
    samples = tiles.view(transfer).view(n, rows, cols, spp)
    if index.predictor == 2:
        wide = torch.int64 if index.dtype.itemsize >= 4 else torch.int32
        samples = torch.cumsum(samples, dim=2, dtype=wide).to(transfer)  # modulo the sample's width
    return samples
