"""Writing the mask: a tiled, compressed, georeferenced GeoTIFF that appears only when complete.

:class:`MaskWriter` takes full-width strips of whole output tiles as the engine finishes them;
the whole mask is never held in memory. The file is written under a temporary name beside the output
(``.NAME.partial-PID``) and renamed into place on success; on any error or interrupt the
temporary file is removed, so the final path only ever holds a finished mask.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path
from types import TracebackType

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.errors import OutputError
from geoseg.io.scene import SceneInfo
from geoseg.models.card import ModelCard

NODATA = 255
#: Output tile edge; the engine's strips are multiples of it, so every write fills whole tiles.
OUTPUT_TILE = 256
PARTIAL_MARK = ".partial-"
#: Deflate level of the mask. GDAL's default is 6; level 3 encodes much faster for a somewhat larger
#: file (measured in benchmarks/RESULTS.md). Encoding the mask competes with decoding the input for
#: the same cores, and masks are small next to their scenes.
ZLEVEL = 3


def default_output(scene: Path) -> Path:
    """``scene.mask.tif`` beside ``scene.tif``."""
    return scene.with_name(f"{scene.stem}.mask.tif")


def check_output(output: Path, scene: Path, overwrite: bool) -> None:
    """Refuse outputs that would overwrite the input, an existing file (without ``overwrite``), or
    that cannot be created."""
    if output.exists() and (output.resolve() == scene.resolve() or os.path.samefile(output, scene)):
        raise OutputError(f"{output}: is the input scene; choose another output with -o")
    if output.is_dir():
        raise OutputError(f"{output}: is a directory; give a file name, e.g. -o {output / 'mask.tif'}")
    if output.exists() and not overwrite:
        raise OutputError(f"{output}: already exists; pass --overwrite to replace it or choose -o")
    parent = output.parent
    if not parent.is_dir():
        raise OutputError(f"{output}: folder {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK):
        raise OutputError(f"{output}: folder {parent} is not writable; choose another output with -o")


def check_free_space(output: Path, width: int, height: int) -> None:
    """Refuse to start a mask that cannot fit: about a quarter of a byte per pixel, plus 1 MiB.

    (Compressed masks are usually far smaller; a quarter byte is a safe margin for noisy ones.)
    """
    need = width * height // 4 + 2**20
    free = shutil.disk_usage(output.parent).free
    if free < need:
        raise OutputError(f"{output}: about {need / 2**20:.0f} MiB is needed for the mask but {output.parent} has "
                          f"{free / 2**20:.0f} MiB free; free some space or write elsewhere with -o")


def colormap(card: ModelCard) -> dict[int, tuple[int, int, int, int]]:
    cmap = {c.value: (*c.color, 255) for c in card.classes}
    cmap[NODATA] = (0, 0, 0, 0)
    return cmap


class MaskWriter:
    """Atomic writer of a one-band uint8 class mask on a scene's grid (see module docstring)."""

    def __init__(self, output: Path, scene: SceneInfo, card: ModelCard, tags: dict[str, str]):
        self.output = output
        self.scene = scene
        self.card = card
        self.tags = tags
        self.partial = output.with_name(f".{output.name}{PARTIAL_MARK}{os.getpid()}")
        self._lock = threading.Lock()
        self._dataset: rasterio.io.DatasetWriter | None = None

    def profile(self) -> dict:
        return {
            "driver": "GTiff", "dtype": "uint8", "count": 1, "nodata": NODATA,
            "width": self.scene.width, "height": self.scene.height,
            "crs": self.scene.crs, "transform": self.scene.transform,
            "tiled": True, "blockxsize": OUTPUT_TILE, "blockysize": OUTPUT_TILE,
            "compress": "deflate", "zlevel": ZLEVEL, "BIGTIFF": "IF_SAFER", "num_threads": "ALL_CPUS",
        }

    def __enter__(self) -> MaskWriter:
        try:
            with rasterio.Env(GDAL_PAM_ENABLED="NO"):
                self._dataset = rasterio.open(self.partial, "w", **self.profile())
        except rasterio.errors.RasterioIOError as exc:
            self.partial.unlink(missing_ok=True)
            raise OutputError(f"{self.output}: cannot be created ({exc}); check the folder and free space") from None
        ds = self._dataset
        ds.write_colormap(1, colormap(self.card))
        ds.set_band_description(1, "class")
        names = [c.name for c in self.card.classes]
        ds.update_tags(CLASSES=json.dumps(names), **{f"CLASS_{c.value}": c.name for c in self.card.classes},
                       **self.tags)
        return self

    def write(self, row0: int, labels: np.ndarray) -> None:
        """Write a full-width ``(row, col)`` strip of labels starting at scene row ``row0``."""
        with self._lock:
            assert self._dataset is not None
            self._dataset.write(labels, 1, window=Window(0, row0, labels.shape[1], labels.shape[0]))

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        ds, self._dataset = self._dataset, None
        try:
            if ds is not None:
                ds.close()
            if exc_type is None:
                os.replace(self.partial, self.output)
        finally:
            self.partial.unlink(missing_ok=True)
