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


def varied_unet_package(folder: Path, tile: int = 64, overlap: int = 16) -> Path:
    """A real smp U-Net (resnet18, 3 bands, 3 classes, seeded) saved as a geoseg model package.

    Its batch-norm statistics are measured on a smooth image (a forward pass in training mode), so its
    classes vary across a scene: a randomly initialised network in eval mode calls nearly every pixel one
    class, which would make equality tests weak. Loaded by name in any process (dask workers)."""
    import segmentation_models_pytorch as smp

    from geoseg.models.importing import import_model, parse_classes

    torch.manual_seed(0)
    net = smp.Unet("resnet18", encoder_weights=None, in_channels=3, classes=3)
    for module in net.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.momentum = None  # a plain average of the batches seen
    image = torch.from_numpy((smooth_image((3, 256, 256), seed=5, dtype="uint16").astype(np.float32) - 2000) / 800)
    net.train()
    with torch.no_grad():
        net(torch.stack([image[:, :128, :128], image[:, 128:, 128:], image[:, :128, 128:]]))
    net.eval()
    net.save_pretrained(folder.parent / f"{folder.name}-smp")
    import_model(folder.parent / f"{folder.name}-smp", folder, bands=("b1", "b2", "b3"),
                 classes=parse_classes("water,forest,field"), mean=(2000.0,) * 3, std=(800.0,) * 3,
                 scale=1.0, resolution_m=None, tile_size=tile, overlap=overlap)
    return folder
