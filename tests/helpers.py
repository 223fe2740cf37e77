"""Shared test helpers: small real GeoTIFFs, seeded images, and a tiny deterministic stand-in model.

Imported by tests as ``from tests.helpers import ...``; the fixtures that use them are in conftest.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
import torch
from affine import Affine
from rasterio.crs import CRS

from geoseg.models import ClassInfo, ModelCard

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
S2_SCENE = SHARED / "sentinel2-t33uuu" / "S2A_T33UUU_20170216_L1C_B02-B03-B04-B08-B11-B12_10m.tif"
UTM33 = CRS.from_epsg(32633)


def write_tif(path: Path, data: np.ndarray, *, res: float = 10.0, crs: CRS | None = UTM33,
              nodata: float | None = None, descriptions: Sequence[str | None] | None = None,
              block: int = 64, **extra: object) -> Path:
    """Write ``(band, row, col)`` ``data`` as a tiled, deflated GeoTIFF on a UTM grid."""
    bands, height, width = data.shape
    profile = dict(driver="GTiff", width=width, height=height, count=bands, dtype=data.dtype, crs=crs,
                   transform=Affine(res, 0, 330000, 0, -res, 5822040), nodata=nodata, tiled=True,
                   blockxsize=block, blockysize=block, compress="deflate", **extra)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
        for i, d in enumerate(descriptions or ()):
            if d:
                ds.set_band_description(i + 1, d)
    return path


class TinyNet(torch.nn.Module):
    """A deterministic stand-in for a U-Net: per-pixel band mixing plus 5x5 local context.

    Built only from elementwise ops and average pooling, so a patch's output does not depend on
    which other patches share its batch (no BLAS blocking that varies with the batch size).
    """

    def __init__(self, in_channels: int = 3, classes: int = 3, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.mix = torch.nn.Parameter(torch.randn(classes, in_channels, generator=g), requires_grad=False)
        self.ctx = torch.nn.Parameter(torch.randn(classes, in_channels, generator=g), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2)
        out = []
        for k in range(self.mix.shape[0]):
            acc = torch.zeros_like(x[:, 0])
            for c in range(x.shape[1]):
                acc = acc + self.mix[k, c] * x[:, c] + self.ctx[k, c] * local[:, c]
            out.append(acc)
        return torch.stack(out, dim=1) * 3.0


def tiny_card(bands: int = 3, tile: int = 64, overlap: int = 16, resolution_m: float | None = None) -> ModelCard:
    return ModelCard(
        name="tiny", architecture="Unet", encoder="resnet18",
        bands=tuple(f"b{i + 1}" for i in range(bands)), mean=(0.0,) * bands, std=(1.0,) * bands,
        classes=(ClassInfo(0, "a", (255, 0, 0)), ClassInfo(1, "b", (0, 255, 0)), ClassInfo(2, "c", (0, 0, 255))),
        tile_size=tile, overlap=overlap, resolution_m=resolution_m,
    )


def smooth_image(shape: tuple[int, int, int], seed: int = 0, dtype: str = "float32") -> np.ndarray:
    """Random fields with some spatial structure, so the stand-in model's classes form regions."""
    rng = np.random.default_rng(seed)
    bands, rows, cols = shape
    coarse = rng.normal(size=(bands, rows // 8 + 2, cols // 8 + 2))
    field = coarse.repeat(8, axis=1).repeat(8, axis=2)[:, :rows, :cols]
    field = field + 0.3 * rng.normal(size=shape)
    if np.dtype(dtype).kind == "f":
        return field.astype(dtype)
    return np.clip(2000 + 800 * field, 1, 60000).astype(dtype)
