"""The product of a run, written: the mask in its format, its probabilities, legend, style and STAC Item,
all staged and published together (:func:`write_product`).

The file engine (:func:`geoseg.run.execute`) and a cluster's row strips (:mod:`geoseg.cluster.split`) hand
their strips to the same writer; what happens around it (planning, the network, the summary) is
:mod:`geoseg.run`'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import rasterio

from geoseg.config import RESULT_SETTINGS, RunConfig
from geoseg.engine.pipeline import WriteFn
from geoseg.errors import GeosegError, OutputError
from geoseg.export.legend import write_pam, write_qml
from geoseg.export.stac import mask_item
from geoseg.export.stats import ClassStat, class_table, pixel_area_m2
from geoseg.io.integrity import TiffErrors, write_text
from geoseg.io.overviews import OverviewPyramid, level_key, overview_vrt
from geoseg.io.publish import Staging
from geoseg.io.record import is_geoseg_output
from geoseg.io.scene import SceneInfo
from geoseg.io.sources import ITEM_TAG, PLATFORM_TAG
from geoseg.io.writing import (
    NODATA,
    ProductPaths,
    RasterSpec,
    StripWriter,
    finish,
    get_format,
    mask_spec,
    probability_spec,
    uncertainty_spec,
)
from geoseg.models.card import ModelCard
from geoseg.sensors import acquisition_time
from geoseg.version import __version__


@dataclass(frozen=True)
class Produced:
    """What a :data:`Producer` counted: pixels per label value (classes and NODATA) and, where the producer
    blended whole patches itself (the file engine), the valid pixels where overlapping patches chose different
    classes (:attr:`geoseg.engine.blender.Blender.seam_pixels`)."""

    counts: np.ndarray
    seam_pixels: int | None = None


#: Makes a scene's strips and hands them to ``write`` (:data:`geoseg.engine.pipeline.WriteFn`) in order,
#: with up to the given number of overview levels (:func:`geoseg.io.overviews.level_key`; at least the first
#: when that number is not 0), the probabilities and the uncertainty layer where the run asks for them.
Producer = Callable[[WriteFn, int], Produced]

#: The rasters of a product besides the mask, by the key of their strips and their :class:`ProductPaths` role.
LAYERS = ("probabilities", "uncertainty")


@dataclass(frozen=True)
class Product:
    """What :func:`write_product` wrote."""

    counts: np.ndarray
    finish_seconds: float
    class_stats: list[dict]
    files: dict[str, str]
    seam_share: float | None = None  # of the valid pixels, where overlapping patches disagreed (Produced)
    notes: tuple[str, ...] = ()  # for the run summary's warnings (:func:`stale_layers`)


def write_product(scene: SceneInfo, card: ModelCard, output: Path, config: RunConfig, tags: dict[str, str],
                  produce: Producer, zlevel: int | None = None) -> Product:
    """Write the product of ``scene`` at ``output`` from the strips ``produce`` makes: the mask in
    ``config.output_format`` (a COG's overviews built as strips arrive), the probabilities if asked for, the
    legend, style and STAC sidecars. Nothing appears at the final paths until all of it is complete
    (:class:`geoseg.io.publish.Staging`). The file engine (:func:`geoseg.run.execute`) and a cluster's row
    strips (:mod:`geoseg.cluster.split`) both write through here. ``zlevel`` overrides the DEFLATE level of a
    format that writes DEFLATE as it goes (``gtiff``; ``Tuning.zlevel``)."""
    fmt = get_format(config.output_format)
    if zlevel is not None and "zlevel" in fmt.working:
        fmt = replace(fmt, working={**fmt.working, "zlevel": zlevel})
    paths = ProductPaths.of(output)
    rasters = [(paths.mask, mask_spec(card, tags))]
    layers = []  # (strip key, writer index)
    if config.probabilities is not None:
        layers.append(("probabilities", len(rasters)))
        rasters.append((paths.probabilities, probability_spec(card, config.probabilities == "top", tags)))
    if config.uncertainty is not None:
        layers.append(("uncertainty", len(rasters)))
        rasters.append((paths.uncertainty, uncertainty_spec(config.uncertainty, tags)))
    tiff_errors = TiffErrors.mark()
    with Staging() as staging:
        working = {final: staging.scratch(final, "work") if fmt.finish else staging.stage(final)
                   for final, _ in rasters}
        levels: list[Path] = []
        with gdal_cache(), ExitStack() as open_writers:
            writers = [open_writers.enter_context(StripWriter(working[final], scene, spec, fmt, final))
                       for final, spec in rasters]

            def open_level(k: int, grid: SceneInfo) -> Callable[[int, np.ndarray], None]:
                levels.append(staging.scratch(paths.mask, f"overview{k}"))
                level = StripWriter(levels[-1], grid, RasterSpec(1, "uint8", NODATA), fmt, paths.mask)
                return open_writers.enter_context(level).write

            # A COG's mask overviews are built from the strips as they are written (geoseg.io.overviews).
            pyramid = OverviewPyramid(scene, NODATA, open_level) if fmt.finish is not None else None

            def write(row0: int, strips: dict[str, np.ndarray]) -> None:
                writers[0].write(row0, strips["labels"])
                if pyramid is not None:
                    pyramid.add_levels([strips[level_key(k)] for k in range(1, len(pyramid.grids) + 1)
                                        if level_key(k) in strips])
                for key, index in layers:
                    writers[index].write(row0, strips[key])

            try:
                produced = produce(write, len(pyramid.grids) if pyramid is not None else 0)
            except GeosegError:
                raise
            except OSError as exc:
                raise OutputError(f"{output}: writing failed ({exc}); check free space and "
                                  f"permissions") from None
            if pyramid is not None:
                pyramid.close()
        TiffErrors.check(tiff_errors, paths.mask)  # the working files' writes, before they are read again
        if pyramid is not None:  # the mask's source for the COG driver: the working file with its overviews
            mask_spec_ = rasters[0][1]
            vrt = staging.scratch(paths.mask, "vrt")
            write_text(vrt, overview_vrt(working[paths.mask], levels, scene, NODATA, mask_spec_.colormap,
                                         mask_spec_.tags, "class"), paths.mask)
            working[paths.mask] = vrt
        with gdal_cache():
            finishing = sum(finish(fmt, working[final], staging.stage(final), spec, final) for final, spec in rasters
                            if fmt.finish is not None)
        counts = produced.counts
        valid = int(counts.sum() - counts[NODATA])
        seam = (None if produced.seam_pixels is None else
                round(produced.seam_pixels / valid, 6) if valid else 0.0)
        stats = class_table(card.classes, counts, counts * scene_pixel_area(scene))
        write_sidecars(staging, paths, scene, card, config, stats, counts, seam)
        TiffErrors.check(tiff_errors, paths.mask)  # a write libtiff failed but GDAL did not report
        staging.publish(last=paths.mask, overwrite=config.overwrite)
    return Product(counts=counts, finish_seconds=round(finishing, 3), class_stats=[vars(s) for s in stats],
                   files={"mask": str(paths.mask), "style": str(paths.style), "stac": str(paths.stac),
                          "legend": str(paths.legend),
                          **{key: str(getattr(paths, key)) for key, _ in layers}}, seam_share=seam,
                   notes=tuple(stale_layers(paths, {key for key, _ in layers}, config.overwrite)))


def stale_layers(paths: ProductPaths, written: set[str], overwrite: bool) -> list[str]:
    """Deal with an earlier product's layers (probabilities, uncertainty) beside a mask just published, which this
    run did not write: they belong to another mask. With ``overwrite`` (this product replaced that one) they are
    removed, with the ``.aux.xml`` a client may have left beside them; otherwise they are left, with a note. Only
    rasters geoseg wrote (its record tag) are touched. Returns the notes for the run summary."""
    notes = []
    for key in LAYERS:
        path = getattr(paths, key)
        if key in written or not is_geoseg_output(path):
            continue
        if not overwrite:
            notes.append(f"{path}: an earlier run's {key} layer is beside this mask but does not belong to it (this "
                         f"run wrote none); remove it, or rerun with --overwrite to have it removed")
            continue
        try:
            path.unlink()
            path.with_name(f"{path.name}.aux.xml").unlink(missing_ok=True)
        except OSError as exc:
            notes.append(f"{path}: an earlier run's {key} layer, which this mask replaces, could not be removed "
                         f"({exc.strerror}); remove it by hand")
        else:
            notes.append(f"{path}: removed: the {key} layer of the mask this run replaced (this run wrote none)")
    return notes


def scene_pixel_area(scene: SceneInfo) -> float:
    """Ground area of one scene pixel in m² (on a geographic grid: at the scene's middle row)."""
    return float(np.ravel(pixel_area_m2(scene.crs, scene.transform, np.array([scene.height // 2])))[0])


def write_sidecars(staging: Staging, paths: ProductPaths, scene: SceneInfo, card: ModelCard, config: RunConfig,
                   stats: list[ClassStat], counts: np.ndarray, seam_share: float | None = None) -> None:
    """The legend (GDAL's PAM sidecar), the QGIS style and the STAC Item of a mask, staged for publishing."""
    sidecars = {"style": paths.style, "legend": paths.legend}
    for key in LAYERS:
        if getattr(config, key) is not None:
            sidecars[key] = getattr(paths, key)
    item = mask_item(paths.mask, crs=scene.crs, transform=scene.transform, width=scene.width, height=scene.height,
                     pixel_size_m=scene.pixel_size_m, classes=card.classes, stats=stats, nodata=NODATA,
                     fmt=config.output_format, source=scene.path, sidecars=sidecars,
                     acquired=acquisition_time(scene.path.name, scene.tags),
                     properties={"geoseg:model": card.name, "geoseg:model_description": card.description,
                                 "geoseg:version": __version__,
                                 **({"geoseg:seam_disagreement": seam_share} if seam_share is not None else {}),
                                 "geoseg:settings": {k: v for k, v in asdict(config).items() if k in RESULT_SETTINGS
                                                     and v is not None and not callable(v)}})
    if ITEM_TAG in scene.tags:  # a stack of a STAC Item's assets (geoseg.io.stack): the Item it came from
        item["links"].append({"rel": "derived_from", "href": scene.tags[ITEM_TAG], "type": "application/geo+json",
                              "title": "source STAC Item"})
    if PLATFORM_TAG in scene.tags:  # an Item's platform, or a product folder's (Landsat)
        item["properties"]["platform"] = scene.tags[PLATFORM_TAG]
    try:
        write_pam(staging.stage(paths.legend), card.classes, counts)
        write_qml(staging.stage(paths.style), card.classes)
        staging.stage(paths.stac).write_text(json.dumps(item, indent=2, default=str) + "\n")
    except OSError as exc:
        raise OutputError(f"{paths.mask}: its sidecar files cannot be written ({exc.strerror}); check free space "
                          f"and permissions") from None


#: GDAL's block cache for a run, in bytes. Its default (5 % of RAM) fills up over a large scene and
#: reads as memory growing with the scene; each window is decoded once, so a small cache loses nothing.
GDAL_CACHE_BYTES = 256 * 2**20


def gdal_cache() -> rasterio.Env:
    """A bounded GDAL block cache, unless the user set ``GDAL_CACHEMAX`` themselves."""
    return rasterio.Env() if "GDAL_CACHEMAX" in os.environ else rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES)
