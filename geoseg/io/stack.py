"""Inputs as users get them: one file per band, or a STAC Item of per-band assets, as one scene.

``geoseg run B02.tif B03.tif ...`` and ``geoseg run ITEM.json`` give the engine one raster without copying a
pixel: :func:`write_stack` writes a small VRT (``NAME.bands.vrt`` beside the mask) whose bands are the files or
assets, on the grid of the finest of them (coarser bands, e.g. Sentinel-2's 20 m ones among 10 m ones, are
brought to it by nearest neighbour, so no value is invented), each band named (the asset's ``eo:bands``
common name, STAC 1.1's ``bands`` ``eo:common_name``, the asset key, or the file name's band token such as
``B02``) so that the model's bands are matched by name as in any scene.

A STAC Item's ``raster:bands`` scale and offset (Sentinel-2 L2A from baseline 04.00: 0.0001 and -0.1;
Landsat C2 L2: 0.0000275 and -0.2) travel as the VRT's ``GEOSEG_SCALE`` / ``GEOSEG_OFFSET`` tags, which
:func:`geoseg.prepare.prepare_grid` takes over the model card's and a sensor preset's scaling; the Item's
``datetime`` and ``platform`` as ``ACQUISITION_DATETIME`` / ``GEOSEG_PLATFORM`` and its location as
``GEOSEG_STAC_ITEM``, so that the mask's STAC Item keeps the acquisition time and links ``derived_from`` the
source Item. Remote hrefs (``https://``, ``s3://``) are read through GDAL's ``/vsicurl/`` and ``/vsis3/``.

:func:`stack_input` decides what ``geoseg run`` was given: one raster (as it is), one remote raster by URL (a
VRT of its bands), a STAC Item (:mod:`geoseg.io.items`), a product folder or per-band files
(:mod:`geoseg.io.products`); the parts of a stack are in :mod:`geoseg.io.sources`.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import re
import shutil
import tempfile
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio

from geoseg.errors import OutputError, SceneError, reason
from geoseg.io.integrity import publish_text
from geoseg.io.items import is_stac_item, item_stack
from geoseg.io.names import quiet_source, remote_name, shown_source
from geoseg.io.products import files_stack, folder_stack, is_product_folder
from geoseg.io.scene import check_regular_file
from geoseg.io.sources import OFFSET_TAG, SCALE_TAG, BandSource, Stack

#: The tag that marks a stack geoseg wrote (so that a rerun may replace it), as it appears in the VRT.
STACK_MARK_VALUE = "band stack"
STACK_MARK = f'<MDI key="GEOSEG_PRODUCT">{STACK_MARK_VALUE}</MDI>'
#: The suffix of the VRT written beside the mask.
STACK_SUFFIX = ".bands.vrt"


def write_stack(stack: Stack, path: Path) -> Path:
    """Write ``stack`` as a VRT at ``path`` (atomically; see module docstring) and return it."""
    grids = []
    for source in stack.sources:
        if not source.href.startswith("/vsi"):  # a FIFO or a device would block or stream for ever
            check_regular_file(Path(source.href), "band", "give one raster file per band")
        try:
            with rasterio.open(quiet_source(source.href)) as ds:
                if ds.count != 1 and len({s.href for s in stack.sources}) == len(stack.sources):
                    raise SceneError(f"{source.href}: has {ds.count} bands; a stack takes one band per file")
                b = source.band - 1
                grids.append((ds.crs, ds.transform, ds.width, ds.height, ds.dtypes[b], ds.nodatavals[b],
                              ds.block_shapes[b]))
        except rasterio.errors.RasterioIOError as exc:
            raise SceneError(f"{source.href}: cannot be read ({reason(exc)}); check the path or "
                             f"URL") from None
    crs = grids[0][0]
    if any(g[0] != crs for g in grids):
        raise SceneError(f"{stack.name}: the bands are on different CRSs; reproject them onto one first (gdalwarp)")
    if len({g[4] for g in grids}) > 1:
        types = ", ".join(sorted({g[4] for g in grids}))
        raise SceneError(f"{stack.name}: the bands have different pixel types ({types}); convert them to one "
                         f"(gdal_translate -ot)")
    scales = {(s.scale, s.offset) for s in stack.sources}
    if len(scales) > 1:
        raise SceneError(f"{stack.name}: the bands scale differently ({sorted(scales, key=str)}); geoseg scales every "
                         f"band alike: pass --scale, or stack them yourself")
    finest = min(range(len(grids)), key=lambda i: abs(grids[i][1].a))
    _, t, width, height, dtype, *_ = grids[finest]
    # the VRT's blocks are the finest source's tiles: geoseg reads whole blocks of its scene, so each of a COG's
    # tiles is fetched once (with the VRT's default 128-px blocks, reader threads fetched 512-px tiles twice)
    block = grids[finest][6]
    bands = []
    for i, (source, (_, st, w, h, _, nodata, _)) in enumerate(zip(stack.sources, grids, strict=True)):
        x_off, y_off = (st.c - t.c) / t.a, (st.f - t.f) / t.e
        x_size, y_size = w * st.a / t.a, h * st.e / t.e
        value = source.nodata if source.nodata is not None else nodata
        bands.append(
            f'  <VRTRasterBand dataType="{_VRT_TYPES.get(dtype, dtype)}" band="{i + 1}" '
            f'blockXSize="{block[1]}" blockYSize="{block[0]}">\n'
            + (f"    <Description>{escape(source.name)}</Description>\n" if source.name else "")
            + (f"    <NoDataValue>{value!r}</NoDataValue>\n" if value is not None else "")
            + f'    <SimpleSource resampling="nearest">\n      <SourceFilename relativeToVRT="0">'
            f"{escape(quiet_source(source.href))}</SourceFilename>\n      <SourceBand>{source.band}</SourceBand>\n"
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>\n'
            f'      <DstRect xOff="{x_off:.10g}" yOff="{y_off:.10g}" xSize="{x_size:.10g}" ySize="{y_size:.10g}"/>\n'
            "    </SimpleSource>\n  </VRTRasterBand>\n")
    tags = {"GEOSEG_PRODUCT": STACK_MARK_VALUE, **stack.tags}
    scale, offset = next(iter(scales))
    if scale is not None:
        tags[SCALE_TAG] = repr(float(scale))
        tags[OFFSET_TAG] = repr(float(offset or 0.0))
    metadata = "".join(f'    <MDI key="{escape(k)}">{escape(v)}</MDI>\n' for k, v in tags.items())
    srs = f"  <SRS>{escape(crs.to_wkt())}</SRS>\n" if crs is not None else ""
    text = (f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">\n{srs}'
            f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>\n"
            + (f"  <Metadata>\n{metadata}  </Metadata>\n" if metadata else "") + "".join(bands) + "</VRTDataset>\n")
    if geoseg_stack(path) == text:  # unchanged: its time stays, and with it a batch's resume record
        return path
    publish_text(path, text)
    return path


def stack_input(paths: list[Path], output: Path | None, overwrite: bool, cwd: Path | None = None
                ) -> tuple[Path, Path | None]:
    """What ``geoseg run PATHS... -o OUTPUT`` reads and writes: one raster as it is; a STAC Item, or several
    single-band files, as the stack VRT written beside the mask (named after the Item's id or the files'
    common prefix, in the Item's or the first file's folder unless ``output`` says otherwise)."""
    remote = remote_name(paths[0]) if len(paths) == 1 else None
    if remote is not None:  # in the current folder (``cwd``: the caller's, for a task on a worker)
        stack = remote_stack(remote, cwd)
    elif len(paths) == 1 and is_product_folder(paths[0]):
        stack = folder_stack(paths[0])
    elif len(paths) == 1 and not is_stac_item(paths[0]):
        return paths[0], output
    else:
        stack = item_stack(paths[0]) if len(paths) == 1 else files_stack(paths)
    out = output if output is not None else stack.folder / f"{stack.name}.mask.tif"
    vrt = out.parent / f"{out.name.removesuffix('.tif').removesuffix('.mask')}{STACK_SUFFIX}"
    if not out.parent.is_dir():
        raise OutputError(f"{out}: folder {out.parent} does not exist; create it first")
    if vrt.exists() and not overwrite and geoseg_stack(vrt) is None:
        raise OutputError(f"{vrt}: exists and is not a stack geoseg wrote; move it, or pass --overwrite")
    return write_stack(stack, vrt), out


def remote_stack(name: str, folder: Path | None = None) -> Stack:
    """One remote raster (a multi-band COG at a URL) as a stack of its own bands: the run reads it through a local
    VRT that names it quietly (:func:`geoseg.io.names.quiet_source`), so nothing downstream needs a local path.
    The mask goes to ``folder`` (the current folder), named after the file."""
    try:
        with rasterio.open(quiet_source(name)) as ds:
            names = [d or "" for d in ds.descriptions]
            tags = {k: v for k, v in ds.tags().items() if k != "GEOSEG_PRODUCT"}  # a label file's CLASSES ...
    except rasterio.errors.RasterioIOError as exc:
        raise SceneError(f"{shown_source(name)}: cannot be read "
                         f"({reason(exc)}); check the URL") from None
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name.split("?")[0].rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0])
    sources = tuple(BandSource(href=name, name=n, band=i) for i, n in enumerate(names, start=1))
    return Stack(sources=sources, name=stem or "remote", tags=tags, folder=folder or Path.cwd())


@functools.cache
def _process_folder() -> Path:
    """A temporary folder for this process's stacks of remote rasters, removed when the process exits."""
    folder = Path(tempfile.mkdtemp(prefix="geoseg-stacks-"))
    atexit.register(shutil.rmtree, folder, True)
    return folder


def local_raster(path: str | Path) -> Path:
    """``path``, or for a remote raster (``https://``, ``s3://``, ``/vsicurl/`` ...) a VRT of its bands in a
    temporary folder of this process, which GDAL reads over the network: training reads chips from it as from a
    local file."""
    remote = remote_name(path)
    if remote is None:
        return Path(path)
    stack = remote_stack(remote)
    name = f"{hashlib.sha256(remote.encode()).hexdigest()[:12]}-{stack.name}{STACK_SUFFIX}"
    return write_stack(stack, _process_folder() / name)


def geoseg_stack(path: Path) -> str | None:
    """The text of ``path`` when it is a stack VRT geoseg wrote, else None."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text.startswith("<VRTDataset") and STACK_MARK in text else None


#: rasterio's dtype names as GDAL's VRT spells them.
_VRT_TYPES = {"uint8": "Byte", "int8": "Int8", "uint16": "UInt16", "int16": "Int16", "uint32": "UInt32",
              "int32": "Int32", "float32": "Float32", "float64": "Float64"}
