"""Product folders and per-band files as inputs: ``geoseg run B02.tif B03.tif ...`` (bands named by the file
name's band token), a Landsat Collection 2 Level-2 folder, a Sentinel-2 SAFE folder, or either as a ``.zip``,
each as a :class:`~geoseg.io.sources.Stack` of its band files read in place."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

from geoseg.errors import ConfigError, SceneError
from geoseg.io.sources import ITEM_BYTES, PLATFORM_TAG, BandSource, Stack
from geoseg.sensors import SENSORS
from geoseg.textfiles import read_text

#: A band token in a file name: Sentinel-2 ``B02``/``B8A``, Landsat ``B4`` / ``SR_B4``, or a common name.
_BAND_TOKEN = re.compile(r"(?:^|[_.\-])((?:SR_)?B\d{1,2}A?|coastal|blue|green|red|rededge\d?|nir\d*|swir\d+)$", re.I)


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
