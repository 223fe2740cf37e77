"""``segment_array``: the array API for dask and xarray users; lazy pixels in, a lazy labels array out.

A user of rioxarray, odc-stac or stackstac holds a region as a lazy ``(band, y, x)`` array. Its
labels come back as a lazy ``DataArray`` on the same grid, chunked like the input (a dask array where
the input was one)::

    scene = rioxarray.open_rasterio("S2.tif", chunks=2048)          # or odc.stac.load(...).to_array("band")
    labels = geoseg.segment_array(scene, model="csmask-6b-l1c")     # lazy
    labels.rio.to_raster("mask.tif")                                # computes chunk by chunk

Each output chunk is one task of :func:`geoseg.engine.region.label_region`, which runs the patches of
the global patch grid that reach the chunk on the pixels they see. The labels are bit-identical to
:func:`geoseg.segment_scene` on the same pixels written to a file, for any chunking (fp32 or any
fixed precision and backend; tests/test_array.py). Tasks carry the model's name
(:class:`geoseg.engine.resident.ModelRef`), never the network: each process or dask worker loads it
once. Works with dask's local schedulers and with dask.distributed.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy as np
from affine import Affine
from rasterio.crs import CRS

from geoseg.config import RunConfig
from geoseg.engine.plan import Box, Layout, plan_layout
from geoseg.engine.region import label_region, plan_region
from geoseg.engine.windows import WindowFn
from geoseg.errors import ConfigError
from geoseg.io.scene import SUPPORTED_DTYPES, SceneInfo, valid_from_values
from geoseg.io.writing import NODATA
from geoseg.models.card import ModelCard
from geoseg.models.registry import LoadedModel
from geoseg.prepare import prepare_grid

#: Chunk edge for numpy inputs (dask inputs keep their own chunks).
DEFAULT_CHUNK = 2048


@dataclass(frozen=True)
class GridSpec:
    """The patch grid of a run in plain numbers: what a task needs to rebuild its :class:`Layout`."""

    height: int
    width: int
    factor: int
    patch: int
    overlap: int
    blend: str | WindowFn
    block: int

    def layout(self) -> Layout:
        return _layout(self)

    @classmethod
    def of(cls, layout: Layout, blend: str | WindowFn, block: int) -> GridSpec:
        return cls(layout.height, layout.width, layout.factor, layout.patch, layout.rows.overlap, blend, block)


@functools.lru_cache(maxsize=8)
def _layout(spec: GridSpec) -> Layout:  # per process: a task's layout is built once, not sent with each task
    return plan_layout(spec.height, spec.width, spec.factor, spec.patch, spec.overlap, spec.blend, spec.block)


@dataclass(frozen=True)
class ChunkJob:
    """What every task of one ``segment_array`` call shares (small: it travels with each task)."""

    grid: GridSpec
    card: ModelCard
    model: Any  # geoseg.engine.resident.ModelRef
    config: RunConfig
    dtype: str
    nodata: float | None
    probabilities: str | None


def segment_array(data: Any, model: str | LoadedModel = "auto", *, transform: Affine | None = None,
                  crs: Any = None, nodata: float | None = None, valid: Any = None, band_names: Any = None,
                  probabilities: str | None = None, config: RunConfig | None = None, name: str = "array",
                  **settings: Any) -> Any:
    """Segment a ``(band, y, x)`` array lazily (see module docstring).

    ``data``: an ``xarray.DataArray`` (band names from its ``band`` coordinate or rioxarray's
    ``long_name``; grid from rioxarray or odc-geo; nodata from ``rio.nodata`` / ``_FillValue``), a
    dask array or a numpy array (then give ``transform`` and ``crs`` for resolution matching and the
    result's georeferencing, and ``band_names`` or ``bands=`` to match bands). ``model``: a built-in
    name, a model folder, ``auto``, or a :class:`~geoseg.models.LoadedModel` (held in this process: fine
    for dask's local schedulers; dask.distributed workers need a name or folder). ``valid``: an optional
    ``(y, x)`` bool array of pixels holding data. ``settings``: :class:`~geoseg.RunConfig` fields
    (``tile_size``, ``overlap``, ``blend``, ``precision``, ``backend``, ``device``, ``bands``, ``sensor``,
    ``scale``, ``match_resolution`` ...), over ``config``.

    Returns the labels (uint8, nodata 255) as a lazy ``DataArray`` for a DataArray input, else a dask
    array; with ``probabilities`` (``top`` or ``all``) a pair ``(labels, probabilities)``.
    """
    from geoseg.engine.resident import RESIDENT, ModelRef

    config = _config(config, settings, model)
    pixels, meta = _as_dask(data, transform, crs, nodata, band_names)
    if valid is not None:
        valid = da.asarray(valid).rechunk(pixels.chunks[1:])
        if valid.shape != pixels.shape[1:]:
            raise ConfigError(f"valid has shape {valid.shape}, but the pixels are {pixels.shape[1:]}; give one bool "
                              f"per pixel")
    scene = SceneInfo(path=Path(name), driver="dask", width=pixels.shape[2], height=pixels.shape[1],
                      count=pixels.shape[0], dtype=pixels.dtype.name, crs=meta["crs"], transform=meta["transform"],
                      nodata=meta["nodata"], block_shape=(pixels.chunks[1][0], pixels.chunks[2][0]),
                      descriptions=meta["names"], mask_kind="nodata" if meta["nodata"] is not None else "none",
                      tags={})
    if scene.dtype not in SUPPORTED_DTYPES:
        raise ConfigError(f"{name}: pixel type {scene.dtype} is not supported (use one of "
                          f"{', '.join(SUPPORTED_DTYPES)}); convert it with .astype('float32')")
    if isinstance(model, LoadedModel):
        ref, card = RESIDENT.hold(model), model.card
    else:
        ref, card = None, None
    prepared = prepare_grid(scene, config, card, sample=False)
    ref = ref or ModelRef(prepared.model, config.trust_checkpoint)
    layout = prepared.layout
    job = ChunkJob(GridSpec.of(layout, config.blend, config.block_size), prepared.card, ref, config,
                   scene.dtype, meta["nodata"], probabilities)
    chosen = pixels[[i - 1 for i in prepared.bands]]

    row_edges, col_edges = np.cumsum((0, *pixels.chunks[1])), np.cumsum((0, *pixels.chunks[2]))
    label_rows, prob_rows = [], []
    bands_out = prepared.card.num_classes if probabilities == "all" else 1
    for r0, r1 in itertools.pairwise(row_edges):
        label_row, prob_row = [], []
        for c0, c1 in itertools.pairwise(col_edges):
            region = Box(int(r0), int(r1), int(c0), int(c1))
            native = plan_region(layout, region).native
            window = (slice(native.row0, native.row1), slice(native.col0, native.col1))
            part = dask.delayed(_label_chunk, pure=True)(
                chosen[(slice(None), *window)], None if valid is None else valid[window], job, region, native)
            label_row.append(da.from_delayed(part[0], region.shape, dtype=np.uint8))
            if probabilities is not None:
                prob_row.append(da.from_delayed(part[1], (bands_out, *region.shape), dtype=np.uint8))
        label_rows.append(label_row)
        prob_rows.append(prob_row)
    labels = da.block(label_rows)
    probs = da.block(prob_rows) if probabilities is not None else None
    if meta["xarray"] is None:
        return labels if probs is None else (labels, probs)
    return _wrap(labels, probs, meta, prepared.card)


def _label_chunk(pixels: np.ndarray, valid: np.ndarray | None, job: ChunkJob, region: Box,
                 native: Box) -> tuple[np.ndarray, np.ndarray | None]:
    """One output chunk (a dask task): the labels of ``region`` from the scene pixels ``native``."""
    from geoseg.engine.resident import RESIDENT

    layout = job.grid.layout()
    predictor, lock = RESIDENT.predictor_for(job.model, job.config, layout.patch)

    def read(row0: int, row1: int, col0: int, col1: int, out: np.ndarray) -> np.ndarray | None:
        window = (slice(row0 - native.row0, row1 - native.row0), slice(col0 - native.col0, col1 - native.col0))
        out[...] = pixels[(slice(None), *window)]
        if valid is not None:
            return valid[window]
        if job.nodata is None and np.dtype(job.dtype).kind != "f":
            return None  # as the file engine: an integer scene without nodata is valid everywhere
        return valid_from_values(out, job.nodata)

    made = label_region(layout, job.card, predictor, region, read, job.dtype, job.probabilities, lock)
    return made.labels, made.probabilities


def _config(config: RunConfig | None, settings: dict[str, Any], model: str | LoadedModel) -> RunConfig:
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(f"unknown setting(s) {', '.join(unknown)}; segment_array takes RunConfig's fields: "
                          f"{', '.join(sorted(known))}")
    config = replace(config or RunConfig(), **settings)
    if isinstance(model, str):
        config = replace(config, model=model)
    return config


def _as_dask(data: Any, transform: Affine | None, crs: Any, nodata: float | None,
             band_names: Any) -> tuple[da.Array, dict[str, Any]]:
    """The pixels as a ``(band, y, x)`` dask array, and what is known of their grid."""
    meta: dict[str, Any] = {"xarray": None, "transform": transform, "crs": crs, "nodata": nodata,
                            "names": band_names}
    if _is_dataarray(data):
        meta.update(_xarray_meta(data, meta))
        if data.ndim == 2:
            data = data.expand_dims("band")
        if data.ndim != 3:
            raise ConfigError(f"a DataArray of dims {data.dims} cannot be segmented; give (band, y, x)")
        meta["xarray"] = data
        data = data.data
    if data.ndim == 2:
        data = data[None]
    if data.ndim != 3:
        raise ConfigError(f"an array of shape {data.shape} cannot be segmented; give (band, y, x)")
    pixels = data if isinstance(data, da.Array) else da.from_array(np.asarray(data), chunks=(-1, DEFAULT_CHUNK,
                                                                                              DEFAULT_CHUNK))
    if len(pixels.chunks[0]) > 1:
        pixels = pixels.rechunk({0: -1})
    meta["transform"] = Affine(*tuple(meta["transform"])[:6]) if meta["transform"] is not None else Affine.identity()
    meta["crs"] = CRS.from_user_input(meta["crs"]) if meta["crs"] is not None else None
    names = meta["names"]
    meta["names"] = tuple(str(n) for n in names) if names is not None else (None,) * pixels.shape[0]
    if len(meta["names"]) != pixels.shape[0]:
        raise ConfigError(f"{len(meta['names'])} band names for {pixels.shape[0]} bands; give one name per band")
    return pixels, meta


def _is_dataarray(data: Any) -> bool:
    return type(data).__name__ == "DataArray" and hasattr(data, "dims")


def _xarray_meta(data: Any, given: dict[str, Any]) -> dict[str, Any]:
    """Band names, transform, CRS and nodata of a DataArray (rioxarray's or odc-geo's view of it)."""
    found: dict[str, Any] = {}
    if given["names"] is None:
        coord = data.coords.get("band")
        if coord is not None and coord.dtype.kind in "UO":
            found["names"] = [str(v) for v in coord.values]
        elif isinstance(data.attrs.get("long_name"), list | tuple):
            found["names"] = list(data.attrs["long_name"])
    rio = _accessor(data, "rio", "rioxarray")
    odc = _accessor(data, "odc", "odc.geo.xr")
    if given["transform"] is None:
        if rio is not None:
            found["transform"] = rio.transform()
        elif odc is not None and odc.geobox is not None:
            found["transform"] = odc.geobox.affine
    if given["crs"] is None:
        crs = rio.crs if rio is not None else (odc.crs if odc is not None else None)
        found["crs"] = None if crs is None else str(crs)
    if given["nodata"] is None:
        value = rio.nodata if rio is not None else None
        value = value if value is not None else data.attrs.get("_FillValue", data.attrs.get("nodata"))
        found["nodata"] = None if value is None else float(value)
    return found


def _accessor(data: Any, attr: str, module: str) -> Any:
    try:
        __import__(module)
        return getattr(data, attr)
    except (ImportError, AttributeError):
        return None


def _wrap(labels: da.Array, probs: da.Array | None, meta: dict[str, Any], card: ModelCard) -> Any:
    """The labels (and probabilities) as DataArrays on the input's grid, with class names and georeferencing."""
    import xarray as xr

    source = meta["xarray"]
    spatial = {d: source.coords[d] for d in source.dims[-2:] if d in source.coords}
    attrs = {"_FillValue": NODATA, "long_name": "class", "flag_values": [c.value for c in card.classes],
             "flag_meanings": " ".join(c.name.replace(" ", "_") for c in card.classes), "geoseg:model": card.name}
    result = xr.DataArray(labels, dims=source.dims[-2:], coords=spatial, attrs=attrs, name="labels")
    out = [result]
    if probs is not None:
        bands = [c.name for c in card.classes] if probs.shape[0] > 1 else ["top"]
        out.append(xr.DataArray(probs, dims=("band", *source.dims[-2:]), coords={"band": bands, **spatial},
                                attrs={"_FillValue": NODATA, "scale_factor": 1 / 250}, name="probabilities"))
    if meta["crs"] is not None and _accessor(out[0], "rio", "rioxarray") is not None:
        out = [o.rio.write_crs(meta["crs"]).rio.write_transform(meta["transform"]) for o in out]
        out[0] = out[0].rio.write_nodata(NODATA, encoded=False)
    return out[0] if probs is None else tuple(out)
