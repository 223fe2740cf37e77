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
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

import rasterio

from geoseg.errors import ConfigError, OutputError, SceneError
from geoseg.io.integrity import publish_text
from geoseg.io.scene import check_regular_file, is_remote, plain_source, quiet_source
from geoseg.sensors import SENSORS
from geoseg.textfiles import read_text

#: The tag that marks a stack geoseg wrote (so that a rerun may replace it), as it appears in the VRT.
STACK_MARK_VALUE = "band stack"
STACK_MARK = f'<MDI key="GEOSEG_PRODUCT">{STACK_MARK_VALUE}</MDI>'
#: The most bytes of a STAC Item geoseg reads.
ITEM_BYTES = 16 * 2**20
#: The suffix of the VRT written beside the mask.
STACK_SUFFIX = ".bands.vrt"
#: Tags a stack carries for the run (see module docstring).
SCALE_TAG, OFFSET_TAG, ITEM_TAG, PLATFORM_TAG = "GEOSEG_SCALE", "GEOSEG_OFFSET", "GEOSEG_STAC_ITEM", "GEOSEG_PLATFORM"
#: The Item's id, and the ``updated`` times the Item and its assets carry (a changed one rewrites the stack).
ITEM_ID_TAG, UPDATED_TAG = "GEOSEG_STAC_ITEM_ID", "GEOSEG_STAC_UPDATED"
#: A band token in a file name: Sentinel-2 ``B02``/``B8A``, Landsat ``B4`` / ``SR_B4``, or a common name.
_BAND_TOKEN = re.compile(r"(?:^|[_.\-])((?:SR_)?B\d{1,2}A?|coastal|blue|green|red|rededge\d?|nir\d*|swir\d+)$", re.I)


@dataclass(frozen=True)
class BandSource:
    """One band of a stack: where GDAL reads it, what it is called, and how its values scale."""

    href: str
    name: str
    scale: float | None = None
    offset: float | None = None
    nodata: float | None = None
    band: int = 1  # the band of ``href`` (a stack of one multi-band remote raster reads each of its bands)


@dataclass(frozen=True)
class Stack:
    """Per-band sources that make one scene; ``name`` names the mask (an Item's id, the files' common prefix)."""

    sources: tuple[BandSource, ...]
    name: str
    tags: dict[str, str]
    folder: Path  # where the mask goes by default: beside the Item or the first file


def _geojson(path: Path) -> dict | None:
    """The JSON object at ``path`` when its suffix says GeoJSON and it reads as one, else None."""
    if path.suffix.lower() not in (".json", ".geojson"):
        return None
    try:
        data = json.loads(read_text(path, ITEM_BYTES, "a STAC Item"))
    except (ValueError, ConfigError):
        return None
    return data if isinstance(data, dict) else None


def _is_item(data: object) -> bool:
    return isinstance(data, dict) and isinstance(data.get("assets"), dict)


def is_stac_item(path: Path) -> bool:
    """Whether ``path`` is a STAC Item (a GeoJSON Feature with assets), by its suffix and a look inside."""
    data = _geojson(path)
    return data is not None and data.get("type") == "Feature" and _is_item(data)


def gdal_href(href: str, base: Path | None = None) -> str:
    """``href`` as GDAL opens it: http(s) through ``/vsicurl/``, s3 through ``/vsis3/``, a relative path against
    ``base``."""
    if href.startswith(("http://", "https://")):
        return f"/vsicurl/{href}"
    if href.startswith("s3://"):
        return f"/vsis3/{href[5:]}"
    if href.startswith("file://"):
        href = href[7:]
    path = Path(href)
    return str(path if path.is_absolute() or base is None else (base / path).resolve())


def is_item_collection(path: Path) -> bool:
    """Whether ``path`` is a STAC ItemCollection or search result: a GeoJSON FeatureCollection of Items."""
    data = _geojson(path)
    return data is not None and data.get("type") == "FeatureCollection" and any(
        _is_item(f) for f in data.get("features", []))


def is_stac_catalog(path: Path) -> bool:
    """Whether ``path`` is a static STAC Catalog or Collection (its Items reached through ``item`` and ``child``
    links)."""
    data = _geojson(path)
    return data is not None and data.get("type") in ("Catalog", "Collection") and isinstance(data.get("links"), list)


#: The most Items and catalogs :func:`catalog_items` walks: a cycle or a runaway catalogue ends there.
MAX_CATALOG_ENTRIES = 1_000_000


def catalog_items(path: Path) -> list[Path]:
    """The Item files of the static catalog at ``path``, in link order, through its ``child`` catalogs (each read
    once); links are files relative to the catalog that names them. A remote link stops with one line."""
    items: list[Path] = []
    seen: set[Path] = set()
    pending = [path.resolve()]
    while pending:
        catalog = pending.pop(0)
        if catalog in seen:
            continue
        seen.add(catalog)
        try:
            data = json.loads(read_text(catalog, ITEM_BYTES, "a STAC catalog"))
        except ValueError as exc:
            raise ConfigError(f"{catalog}: is not JSON ({exc}); check the catalog's links") from None
        for link in data.get("links", []) if isinstance(data, dict) else []:
            rel, href = link.get("rel"), str(link.get("href", ""))
            if rel not in ("item", "child") or not href:
                continue
            if "://" in href and not href.startswith("file://"):
                raise ConfigError(f"{catalog}: links to {href}; geoseg walks local static catalogs only: list the "
                                  f"Items' URLs in a file (one per line) and pass @FILE")
            target = Path(gdal_href(href, catalog.parent))
            if rel == "child":
                pending.append(target)
            elif target not in items:
                items.append(target)
            if len(items) + len(seen) > MAX_CATALOG_ENTRIES:
                raise ConfigError(f"{path}: more than {MAX_CATALOG_ENTRIES:,} Items and catalogs; split the batch")
    return items


def split_collection(path: Path, folder: Path) -> list[Path]:
    """The Items of the collection at ``path``, each written to ``folder`` as ``ID.json`` (relative hrefs made
    absolute against the collection's folder; a file is rewritten only when its Item changed)."""
    data = json.loads(read_text(path, ITEM_BYTES, "a STAC ItemCollection"))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{folder}: cannot be created for the Items of {path} ({exc.strerror}); check the "
                          f"output folder's permissions") from None
    items = []
    for feature in data.get("features", []):
        if not _is_item(feature):
            continue
        item = json.loads(json.dumps(feature))
        for asset in item["assets"].values():
            href = str(asset.get("href", ""))
            if href and "://" not in href and not Path(href).is_absolute():
                asset["href"] = str((path.parent / href).resolve())
        name = re.sub(r"[^A-Za-z0-9._-]", "_", str(item.get("id") or f"item{len(items)}"))[:200]
        out = folder / f"{name}.json"
        text = json.dumps(item, indent=1)
        if not out.exists() or out.read_text() != text:
            publish_text(out, text)
        items.append(out)
    return items


def item_stack(path: Path) -> Stack:
    """The data assets of the STAC Item at ``path`` as a stack, one band per single-band raster asset."""
    try:
        item = json.loads(read_text(path, ITEM_BYTES, "a STAC Item"))
    except ValueError as exc:
        raise SceneError(f"{path}: not a STAC Item (invalid JSON: {exc}); give the Item's JSON") from None
    sources = []
    for key, asset in item.get("assets", {}).items():
        media = str(asset.get("type", ""))
        roles = asset.get("roles") or ["data"]
        if "data" not in roles or not ("tiff" in media or "jp2" in media or not media):
            continue
        bands = asset.get("eo:bands") or asset.get("bands") or [{}]
        if len(bands) != 1:
            continue  # a multi-band asset (a visual RGB) is not one band of the stack
        band = bands[0]
        raster = (asset.get("raster:bands") or [{}])[0] if "raster:bands" in asset else band
        name = band.get("common_name") or band.get("eo:common_name") or band.get("name") or key
        sources.append(BandSource(gdal_href(str(asset["href"]), path.parent), str(name),
                                  raster.get("scale"), raster.get("offset"), raster.get("nodata")))
    if not sources:
        raise SceneError(f"{path}: the STAC Item has no single-band raster data assets to segment")
    props = item.get("properties", {})
    tags = {ITEM_TAG: str(path.resolve()), ITEM_ID_TAG: str(item.get("id") or path.stem)}
    # when the Item or an asset says it was updated: the stack's text changes with it, so a batch's resume record
    # (the stack's modification time) redoes the scene when a provider republishes an asset at the same href
    updated = sorted({str(v) for v in [props.get("updated"), *(a.get("updated") for a in item.get("assets", {}).values()
                                                             if isinstance(a, dict))] if v})
    if updated:
        tags[UPDATED_TAG] = ",".join(updated)
    if props.get("datetime") or props.get("start_datetime"):
        tags["ACQUISITION_DATETIME"] = str(props.get("datetime") or props.get("start_datetime"))
    if props.get("platform"):
        tags[PLATFORM_TAG] = str(props["platform"])
    return Stack(tuple(sources), str(item.get("id") or path.stem), tags, path.parent)


def files_stack(paths: list[Path]) -> Stack:
    """Single-band files, one per band, named by the band token in each file name (``T33UUU_..._B02.tif``)."""
    sources = []
    for path in paths:
        token = _BAND_TOKEN.search(path.stem)
        if token is None:
            raise ConfigError(f"{path}: no band name at the end of the file name (B02, B8A, SR_B4, red, nir ...); "
                              f"name the files by band, or stack them into one raster")
        sources.append(BandSource(str(path.resolve()), token.group(1)))
    stems = [p.stem[: _BAND_TOKEN.search(p.stem).start()] for p in paths]  # type: ignore[union-attr]
    prefix = os.path.commonprefix(stems).rstrip("_.-") or "bands"  # noqa: RUF071 - names, not paths
    return Stack(tuple(sources), prefix, {}, paths[0].parent)


#: Landsat Collection 2 Level-2 surface reflectance files (``LC08_L2SP_..._SR_B4.TIF``), and the sensor preset
#: (:data:`geoseg.sensors.SENSORS`) and band numbering each mission's prefix means.
_LANDSAT_FILE = re.compile(r"^(L[COTE]0\d)_.*_SR_B(\d)\.TIF$", re.I)
_LANDSAT = {"LC08": "landsat8", "LC09": "landsat8", "LO08": "landsat8", "LO09": "landsat8", "LE07": "landsat7",
            "LT05": "landsat5", "LT04": "landsat5"}
_LANDSAT_BANDS = {"landsat8": {1: "coastal", 2: "blue", 3: "green", 4: "red", 5: "nir", 6: "swir16", 7: "swir22"},
                  "landsat7": {1: "blue", 2: "green", 3: "red", 4: "nir", 5: "swir16", 7: "swir22"},
                  "landsat5": {1: "blue", 2: "green", 3: "red", 4: "nir", 5: "swir16", 7: "swir22"}}
#: Sentinel-2 band images in a SAFE (L1C ``..._B02.jp2``, L2A ``..._B02_10m.jp2``), not TCI, AOT, WVP or SCL.
_S2_FILE = re.compile(r"_(B\d\d|B8A)(?:_(\d\d)m)?\.jp2$", re.I)
#: The offset Sentinel-2 products from processing baseline 04.00 add to every band (DN), in their metadata.
_S2_OFFSET = re.compile(r"<(?:BOA|RADIO)_ADD_OFFSET[^>]*>\s*(-?\d+(?:\.\d+)?)\s*<")


#: The most files a product folder (or .zip) may hold: a SAFE has a few hundred.
MAX_PRODUCT_FILES = 20_000


def is_product_folder(path: Path) -> bool:
    """Whether ``geoseg run PATH`` reads ``path`` as a product of one file per band: a folder, or a .zip."""
    return path.is_dir() or (path.suffix.lower() == ".zip" and path.is_file())


def folder_stack(path: Path) -> Stack:
    """A product folder (or .zip) as a stack: a Landsat Collection 2 Level-2 product (``*_SR_B*.TIF``, bands by
    the mission's numbering, its scale 0.0000275 and offset -0.2), a Sentinel-2 SAFE (its band images, the finest
    resolution of each, DN / 10000 plus the product's BOA / RADIO_ADD_OFFSET), or a folder of files named by band
    (:func:`files_stack`). The mask is named after the folder and goes beside it."""
    names, href, text_of = _listing(path)
    name = re.sub(r"\.(SAFE|zip)$", "", path.name, flags=re.I).removesuffix(".SAFE") or "bands"
    landsat = [(m, n) for n in names if (m := _LANDSAT_FILE.match(Path(n).name))]
    if landsat:
        sensor = _LANDSAT.get(landsat[0][0].group(1).upper())
        if sensor is None:
            raise ConfigError(f"{path}: Landsat mission {landsat[0][0].group(1)} is not known; stack its bands "
                              f"yourself and pass --sensor")
        preset = SENSORS[sensor]
        numbering = _LANDSAT_BANDS[sensor]
        sources = tuple(BandSource(href(n), numbering[int(m.group(2))], preset.scale, preset.offset)
                        for m, n in sorted(landsat, key=lambda mn: int(mn[0].group(2)))
                        if int(m.group(2)) in numbering)
        mission = landsat[0][0].group(1).upper()
        return Stack(sources, name, {PLATFORM_TAG: f"landsat-{int(mission[2:])}"}, path.parent)
    s2 = [(m, n) for n in names if (m := _S2_FILE.search(Path(n).name)) and "/QI_DATA/" not in f"/{n}"]
    if s2:
        finest: dict[str, tuple[int, str]] = {}
        for m, n in s2:
            band, metres = m.group(1).upper(), int(m.group(2) or 0)
            if band not in finest or metres < finest[band][0]:
                finest[band] = (metres, n)
        offset = 0.0
        for meta in (n for n in names if re.search(r"MTD_MSIL(1C|2A)\.xml$", n)):
            found = _S2_OFFSET.search(text_of(meta))
            if found:
                offset = float(found.group(1)) * 1e-4
        sources = tuple(BandSource(href(n), band, 1e-4, offset) for band, (_, n) in sorted(finest.items()))
        return Stack(sources, name, {}, path.parent)
    files = sorted(n for n in names if Path(n).suffix.lower() in (".tif", ".tiff", ".jp2")
                   and _BAND_TOKEN.search(Path(n).stem))
    if not files:
        raise SceneError(f"{path}: is a directory with no band files (a Landsat *_SR_B*.TIF product, a Sentinel-2 "
                         f"SAFE, or files named by band: *_B02.tif ...); for every raster in a folder use geoseg batch "
                         f"FOLDER -o OUT")
    if path.is_dir():
        stack = files_stack([path / n for n in files])
        return Stack(stack.sources, name, stack.tags, path.parent)
    sources = tuple(BandSource(href(n), _BAND_TOKEN.search(Path(n).stem).group(1))  # type: ignore[union-attr]
                    for n in files)
    return Stack(sources, name, {}, path.parent)


def _listing(path: Path) -> tuple[list[str], Callable[[str], str], Callable[[str], str]]:
    """The files of a folder or .zip (relative names), how GDAL reaches one, and how to read a small one as text."""
    if path.is_dir():
        names = []
        for found in path.rglob("*"):  # a product is a few hundred files; `geoseg run /` must not walk the disk
            if len(names) >= MAX_PRODUCT_FILES:
                raise ConfigError(f"{path}: holds more than {MAX_PRODUCT_FILES:,} files, more than a product; give "
                                  f"the product's own folder, or use geoseg batch FOLDER -o OUT for a folder of scenes")
            if found.is_file():
                names.append(str(found.relative_to(path)))
        return (sorted(names), lambda n: str((path / n).resolve()),
                lambda n: read_text(path / n, ITEM_BYTES, "a product's metadata"))
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
        names = sorted(i.filename for i in archive.infolist() if not i.is_dir())
    except (OSError, zipfile.BadZipFile) as exc:
        raise SceneError(f"{path}: is not a readable .zip ({exc}); download it again") from None
    if len(names) > MAX_PRODUCT_FILES:
        raise ConfigError(f"{path}: holds {len(names):,} files, more than a product's {MAX_PRODUCT_FILES:,}; give "
                          f"one product's .zip")

    def text(name: str) -> str:
        with archive.open(name) as handle:
            return handle.read(ITEM_BYTES).decode(errors="replace")

    return names, lambda n: f"/vsizip/{path.resolve()}/{n}", text


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
            raise SceneError(f"{source.href}: cannot be read ({str(exc).splitlines()[0]}); check the path or "
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


def remote_name(path: str | Path) -> str | None:
    """GDAL's name for a remote raster given on the command line (``https://``, ``s3://``, ``/vsicurl/``,
    ``/vsis3/`` ...), else None. A path object folds a URL's ``//`` into ``/``: it is put back."""
    text = re.sub(r"^(/vsicurl/)?(https?|s3):/(?!/)", r"\1\2://", str(path))
    if text.startswith(("http://", "https://", "s3://")):
        return gdal_href(text)
    return text if is_remote(text) else None


def remote_stack(name: str, folder: Path | None = None) -> Stack:
    """One remote raster (a multi-band COG at a URL) as a stack of its own bands: the run reads it through a local
    VRT that names it quietly (:func:`geoseg.io.scene.quiet_source`), so nothing downstream needs a local path.
    The mask goes to ``folder`` (the current folder), named after the file."""
    try:
        with rasterio.open(quiet_source(name)) as ds:
            names = [d or "" for d in ds.descriptions]
            tags = {k: v for k, v in ds.tags().items() if k != "GEOSEG_PRODUCT"}  # a label file's CLASSES ...
    except rasterio.errors.RasterioIOError as exc:
        raise SceneError(f"{plain_source(name).removeprefix('/vsicurl/')}: cannot be read "
                         f"({str(exc).splitlines()[0]}); check the URL") from None
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", name.split("?")[0].rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0])
    sources = tuple(BandSource(href=name, name=n, band=i) for i, n in enumerate(names, start=1))
    return Stack(sources=sources, name=stem or "remote", tags=tags, folder=folder or Path.cwd())


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
