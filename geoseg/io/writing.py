"""Writing rasters on a scene's grid strip by strip and finishing them in an output format.

:class:`StripWriter` takes full-width strips of whole output tiles as the engine finishes them; the
whole raster is never held in memory. It writes under the temporary name it is given: how a product's
files are named while they are written and published together is :mod:`geoseg.io.publish`.

Output formats are a registry (:data:`RASTER_FORMATS`): ``gtiff`` is the tiled GeoTIFF the engine
writes; ``cog`` turns it into a Cloud-Optimized GeoTIFF with GDAL's COG driver (512-px blocks,
internal overviews resampled with MODE, so classes are never averaged), a second pass over the
finished file whose time the run summary reports.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from geoseg.errors import ConfigError, OutputError, reason
from geoseg.io.outputs import OTHER_FORMATS, check_outputs
from geoseg.io.scene import SceneInfo
from geoseg.models.card import ModelCard

NODATA = 255
#: Probabilities are written as uint8 ``round(p * PROBABILITY_SCALE)``: 0..250, NODATA above.
PROBABILITY_SCALE = 250
#: Output tile edge; the engine's strips are multiples of it, so every write fills whole tiles.
OUTPUT_TILE = 256
#: Deflate level of the plain GeoTIFF mask, below GDAL's default (6): encoding the mask competes with decoding
#: the input for the same cores, and masks are small next to their scenes (benchmarks/RESULTS.md).
ZLEVEL = 3
#: DEFLATE level of a COG's blocks, one below GDAL's default (6): finishing re-encodes the whole mask after the
#: engine is done, time the GPU waits, and level 5 takes markedly less of it for a slightly larger file
#: (``bench_export.py --parts levels``, benchmarks/RESULTS.md sections 6 and 11).
COG_LEVEL = 5


def default_output(scene: Path) -> Path:
    """``scene.mask.tif`` beside ``scene.tif``."""
    return scene.with_name(f"{scene.stem}.mask.tif")


@dataclass(frozen=True)
class ProductPaths:
    """The files of one mask product, named from the mask's path ``NAME.tif``."""

    mask: Path
    probabilities: Path  # NAME.probs.tif (with --probabilities)
    uncertainty: Path  # NAME.uncertainty.tif (with --uncertainty)
    style: Path  # NAME.qml: QGIS loads it as the mask's default style
    stac: Path  # NAME.json: the STAC Item
    legend: Path  # NAME.tif.aux.xml: GDAL's category names and attribute table

    @classmethod
    def of(cls, mask: Path) -> ProductPaths:
        return cls(mask, mask.with_name(f"{mask.stem}.probs{mask.suffix}"),
                   mask.with_name(f"{mask.stem}.uncertainty{mask.suffix}"), mask.with_suffix(".qml"),
                   mask.with_suffix(".json"), mask.with_name(f"{mask.name}.aux.xml"))

    def roles(self, probabilities: bool, uncertainty: bool = False) -> dict[str, Path]:
        """The files a run writes, by what they are (the probabilities and uncertainty only when asked for)."""
        return {"mask": self.mask, **({"probabilities": self.probabilities} if probabilities else {}),
                **({"uncertainty": self.uncertainty} if uncertainty else {}),
                "QGIS style": self.style, "STAC Item": self.stac, "legend": self.legend}


def check_output(output: Path, scene: Path, overwrite: bool, *, probabilities: bool = False,
                 uncertainty: bool = False, vector: Path | None = None, inputs: tuple[Path, ...] = ()) -> None:
    """Refuse a mask named as another format (:data:`OTHER_FORMATS`), and a product whose files (mask,
    probabilities, uncertainty, sidecars, ``vector``) would overwrite the input or any other file the scene is read
    from (``inputs``), collide with each other, replace an existing file without ``overwrite``, or cannot be created
    (:func:`geoseg.io.outputs.check_outputs`)."""
    suffix = output.suffix.lower()
    if suffix in OTHER_FORMATS:
        raise ConfigError(f"{output}: the mask is a GeoTIFF, but the name ends in {output.suffix!r}; name it "
                          f"{output.with_suffix('.tif').name} (vector layers: --vector)")
    outputs = ProductPaths.of(output).roles(probabilities, uncertainty)
    if vector is not None:
        outputs["vector layer"] = vector
    check_outputs(outputs, [scene, *inputs], overwrite)


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


#: Bytes a GeoTIFF working file may take per pixel and band before it is finished, for the free-space check.
WORKING_BYTES_PER_PIXEL = 0.25


@dataclass(frozen=True)
class RasterFormat:
    """An output format: how the engine's working file is written, and how it becomes the product."""

    name: str
    description: str
    #: Creation options of the GeoTIFF the engine writes strip by strip (tiled at :data:`OUTPUT_TILE`).
    working: dict[str, Any]
    #: Turns the finished working file into the product at a second path, building overviews with the
    #: given resampling; None: the working file is the product.
    finish: Callable[[Path, Path, str], None] | None = None


def _finish_cog(working: Path, product: Path, resampling: str) -> None:
    """GDAL's COG driver: 512-px blocks, DEFLATE at :data:`COG_LEVEL`, internal overviews (MODE for classes:
    never averaged).

    ``working`` may be a VRT that already lists the overviews (:mod:`geoseg.io.overviews`): they are
    copied as they are."""
    with working.open("rb") as f:
        existing = f.read(11) == b"<VRTDataset"
    overviews = {"OVERVIEWS": "FORCE_USE_EXISTING"} if existing else {"OVERVIEW_RESAMPLING": resampling}
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        rasterio.shutil.copy(working, product, driver="COG", BLOCKSIZE=512, COMPRESS="DEFLATE",
                             LEVEL=COG_LEVEL, NUM_THREADS="ALL_CPUS", BIGTIFF="IF_SAFER", **overviews)


#: Output formats by the names :data:`geoseg.config.OUTPUT_FORMATS` declares (``--format``).
RASTER_FORMATS: dict[str, RasterFormat] = {
    "cog": RasterFormat("cog", f"Cloud-Optimized GeoTIFF: 512-px blocks, DEFLATE level {COG_LEVEL}, MODE overviews",
                        # A scratch file read once by the COG driver: the fastest codec.
                        working={"compress": "zstd", "zstd_level": 1}, finish=_finish_cog),
    "gtiff": RasterFormat("gtiff", f"tiled GeoTIFF: {OUTPUT_TILE}-px blocks, DEFLATE level {ZLEVEL}, no overviews",
                          working={"compress": "deflate", "zlevel": ZLEVEL}),
}


def get_format(name: str) -> RasterFormat:
    try:
        return RASTER_FORMATS[name]
    except KeyError:
        raise ConfigError(f"output format {name!r} is not one of {', '.join(RASTER_FORMATS)}") from None


@dataclass
class RasterSpec:
    """What a raster on a scene's grid holds: bands, type, nodata, colours and metadata."""

    count: int
    dtype: str
    nodata: float
    tags: dict[str, str] = field(default_factory=dict)
    colormap: dict[int, tuple[int, int, int, int]] | None = None
    descriptions: tuple[str, ...] = ()
    scales: tuple[float, ...] | None = None
    #: How overviews are computed where the format has them: MODE for classes, AVERAGE for quantities.
    overview_resampling: str = "MODE"


def mask_spec(card: ModelCard, tags: dict[str, str]) -> RasterSpec:
    """The class mask: one uint8 band, :data:`NODATA` where the scene has no data, the card's colours,
    and the class names as tags (``CLASSES`` as a JSON list and ``CLASS_<value>``)."""
    names = {"CLASSES": json.dumps([c.name for c in card.classes]),
             **{f"CLASS_{c.value}": c.name for c in card.classes},
             # a trained package's classes as its training labels numbered them (the mask holds 0..N-1)
             **({"LABEL_VALUES": json.dumps(list(card.label_values))} if card.label_values else {})}
    return RasterSpec(1, "uint8", NODATA, {"GEOSEG_PRODUCT": "mask", **names, **tags}, colormap(card), ("class",))


def probability_spec(card: ModelCard, top: bool, tags: dict[str, str]) -> RasterSpec:
    """Probabilities as uint8 ``round(p * PROBABILITY_SCALE)``, NODATA where the scene has none; the
    band scale (``1 / PROBABILITY_SCALE``) turns them back into 0..1 in GDAL and QGIS."""
    names = ("probability of the top class",) if top else tuple(f"probability of {c.name}" for c in card.classes)
    return RasterSpec(len(names), "uint8", NODATA,
                      {"GEOSEG_PRODUCT": "probabilities", "PROBABILITY_SCALE": str(PROBABILITY_SCALE), **tags},
                      descriptions=names, scales=(1 / PROBABILITY_SCALE,) * len(names), overview_resampling="AVERAGE")


def uncertainty_spec(kind: str, tags: dict[str, str]) -> RasterSpec:
    """The uncertainty layer (:func:`geoseg.engine.labels.uncertainty_layer`): uint8 ``round(u * PROBABILITY_SCALE)``,
    0 sure to 250 unsure, NODATA where the scene has none; the band scale turns it back into 0..1."""
    what = {"margin": "uncertainty: 1 - (p1 - p2), the two likeliest classes",
            "entropy": "uncertainty: entropy of the class probabilities / log(classes)"}[kind]
    return RasterSpec(1, "uint8", NODATA, {"GEOSEG_PRODUCT": "uncertainty", "UNCERTAINTY": kind,
                                           "PROBABILITY_SCALE": str(PROBABILITY_SCALE), **tags},
                      descriptions=(what,), scales=(1 / PROBABILITY_SCALE,), overview_resampling="AVERAGE")


class StripWriter:
    """Writes a raster on ``scene``'s grid at ``path``, strip by strip, in ``fmt``'s working layout."""

    def __init__(self, path: Path, scene: SceneInfo, spec: RasterSpec, fmt: RasterFormat, output: Path):
        self.path, self.scene, self.spec, self.fmt, self.output = path, scene, spec, fmt, output
        self._lock = threading.Lock()
        self._dataset: rasterio.io.DatasetWriter | None = None

    def profile(self) -> dict:
        return {
            "driver": "GTiff", "dtype": self.spec.dtype, "count": self.spec.count, "nodata": self.spec.nodata,
            "width": self.scene.width, "height": self.scene.height,
            "crs": self.scene.crs, "transform": self.scene.transform,
            "tiled": True, "blockxsize": OUTPUT_TILE, "blockysize": OUTPUT_TILE, "interleave": "band",
            "BIGTIFF": "IF_SAFER", "num_threads": "ALL_CPUS", **self.fmt.working,
        }

    def __enter__(self) -> StripWriter:
        spec = self.spec
        try:
            # A scene without a georeference gives a mask without one: the run says so once, in its summary.
            with rasterio.Env(GDAL_PAM_ENABLED="NO"), warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self._dataset = ds = rasterio.open(self.path, "w", **self.profile())
            if spec.colormap is not None:
                ds.write_colormap(1, spec.colormap)
            for i, text in enumerate(spec.descriptions, 1):
                ds.set_band_description(i, text)
            if spec.scales is not None:
                ds.scales = spec.scales
            ds.update_tags(**spec.tags)
        except (rasterio.errors.RasterioError, CPLE_BaseError) as exc:
            self.__exit__(type(exc), exc, None)  # closes what was opened, if anything
            raise OutputError(f"{self.output}: cannot be created ({reason(exc)}); check the folder and free "
                              f"space") from None
        return self

    def write(self, row0: int, values: np.ndarray) -> None:
        """Write a full-width strip, ``(row, col)`` or ``(band, row, col)``, starting at scene row ``row0``."""
        values = values if values.ndim == 3 else values[None]
        with self._lock:
            assert self._dataset is not None
            try:
                self._dataset.write(values, window=Window(0, row0, values.shape[2], values.shape[1]))
            except (rasterio.errors.RasterioError, CPLE_BaseError) as exc:
                raise OutputError(f"{self.output}: writing failed ({reason(exc)}); check free space") from None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        ds, self._dataset = self._dataset, None
        if ds is not None:
            try:
                ds.close()
            except (rasterio.errors.RasterioError, CPLE_BaseError) as close_error:
                if exc is None:  # the first error is the one to report
                    raise OutputError(f"{self.output}: writing failed ({reason(close_error)}); check free "
                                      f"space") from None


def finish(fmt: RasterFormat, working: Path, product: Path, spec: RasterSpec, shown: Path | None = None) -> float:
    """Turn a complete working file into the product (same path for a format without a finishing
    step); return the seconds it took. Errors name ``shown`` (the final path), else ``product``."""
    started = time.perf_counter()
    if fmt.finish is not None:
        try:
            fmt.finish(working, product, spec.overview_resampling)
        except (rasterio.errors.RasterioError, CPLE_BaseError, OSError) as exc:
            raise OutputError(f"{shown or product}: finishing the {fmt.name} failed ({reason(exc)}); check free "
                              f"space") from None
    return time.perf_counter() - started
