"""Opening a scene: its header, checked, and windows of its pixels with their validity.

Nothing here reads whole bands. :func:`open_scene` reads the header into a :class:`SceneInfo`;
:class:`WindowReader` reads exactly the windows the engine's reader threads ask for, with a
rasterio handle per thread (GDAL handles are not shared between threads). Validity comes from the
nodata value and NaN, or from GDAL's mask bands (internal mask, alpha band): :func:`valid_from_values`
and :func:`valid_from_masks`, which :mod:`geoseg.io.lazy` shares.
"""

from __future__ import annotations

import math
import os
import stat
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import MaskFlags
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geoseg.errors import SceneError, no_such_file
from geoseg.io.names import is_remote, plain_source, shown_source

SUPPORTED_DTYPES = ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "float64")

#: Metres per degree of latitude (WGS84 mean), for scenes in geographic coordinates.
_METRES_PER_DEGREE = 111_320.0


@dataclass(frozen=True)
class SceneInfo:
    """What geoseg needs to know about a raster, read from its header only."""

    path: Path
    driver: str
    width: int
    height: int
    count: int
    dtype: str
    crs: CRS | None
    transform: Affine
    nodata: float | None
    block_shape: tuple[int, int]  # (rows, cols) of the first band's internal blocks
    descriptions: tuple[str | None, ...]
    mask_kind: str  # "none", "nodata" (from the nodata value) or "mask" (internal mask / alpha band)
    tags: dict[str, str]
    #: Every file GDAL reads for this raster (a VRT's sources, sidecars), local paths or remote ``/vsi...`` ones.
    files: tuple[str, ...] = ()

    @property
    def local_files(self) -> tuple[Path, ...]:
        """The files of :attr:`files` on this machine (a run never writes over any of them); a source inside a local
        archive (``/vsizip/A.zip/...``) is the archive."""
        return tuple(dict.fromkeys(archive_of(f) for f in self.files if not is_remote(f)))

    @property
    def remote_files(self) -> tuple[str, ...]:
        """The sources of :attr:`files` read over a network (a VRT of remote COGs), for ``info`` and the summary."""
        return tuple(f for f in self.files if is_remote(f))

    @property
    def megapixels(self) -> float:
        return self.width * self.height / 1e6

    @property
    def pixel_size_m(self) -> float | None:
        """Ground size of one pixel in metres (mean of x and y), or None without a CRS."""
        t = self.transform
        size_x, size_y = math.hypot(t.a, t.d), math.hypot(t.b, t.e)
        if self.crs is None:
            return None
        if self.crs.is_geographic:
            lat = (t * (self.width / 2, self.height / 2))[1]
            metres_x = size_x * _METRES_PER_DEGREE * math.cos(math.radians(lat))
            return 0.5 * (metres_x + size_y * _METRES_PER_DEGREE)
        factor = self.crs.linear_units_factor[1] if self.crs.is_projected else 1.0
        return 0.5 * (size_x + size_y) * factor


def open_scene(path: str | Path) -> SceneInfo:
    """Read and check a raster's header; raise :class:`SceneError` with a fix for anything unusable."""
    path = Path(path)
    check_regular_file(path, "raster", "give one raster file (GeoTIFF, COG, VRT, JP2); for every raster in a folder "
                                       "use geoseg batch FOLDER -o OUT")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                info = _describe(path, ds)
    except RasterioIOError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "unreadable"
        raise SceneError(
            f"{path}: not a raster GDAL can read ({first}); check that the file is complete and is a "
            f"GeoTIFF, COG, VRT or JP2"
        ) from None
    check_sources(info)
    if info.width == 0 or info.height == 0:
        raise SceneError(f"{path}: has no pixels ({info.width}x{info.height}); use a non-empty raster")
    if info.dtype not in SUPPORTED_DTYPES:
        raise SceneError(
            f"{path}: pixel type {info.dtype} is not supported (use one of {', '.join(SUPPORTED_DTYPES)}); "
            f"convert it, e.g. with gdal_translate -ot Float32"
        )
    return info


def check_regular_file(path: Path, what: str, fix: str) -> None:
    """Raise :class:`SceneError` unless ``path`` is an existing regular file (or a link to one): a FIFO, a
    device or a socket would block or stream for ever when GDAL opens it."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise no_such_file(path) from None
    except OSError as exc:
        raise SceneError(f"{path}: cannot be read ({exc.strerror}); check the path and its permissions") from None
    if stat.S_ISDIR(mode):
        raise SceneError(f"{path}: is a directory; {fix}")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise SceneError(f"{path}: is {kind}, not a {what} file; {fix}")


#: The largest VRT geoseg reads to check for raw bands (a real mosaic of thousands of sources is a few MB).
MAX_VRT_BYTES = 64 * 2**20


def check_sources(info: SceneInfo) -> None:
    """Refuse a scene that reads a local file that is not a regular file (a FIFO among a VRT's sources would
    block a run for ever), or whose VRTs read raw bytes of files (``VRTRawRasterBand``: any file on the machine
    read as pixels) unless ``GDAL_VRT_ENABLE_RAWRASTERBAND=YES`` is set (:mod:`geoseg.io.gdal_env`)."""
    for source in info.local_files:
        if source != info.path:
            check_regular_file(source, "raster", f"{info.path} reads it: fix the VRT's sources")
    if os.environ.get("GDAL_VRT_ENABLE_RAWRASTERBAND", "").upper() in ("YES", "ON", "TRUE", "1"):
        return
    for source in info.local_files:
        if source.suffix.lower() != ".vrt":
            continue
        if source.stat().st_size > MAX_VRT_BYTES:
            raise SceneError(f"{info.path}: the VRT {source} is larger than {MAX_VRT_BYTES // 2**20} MiB; geoseg reads "
                             f"VRTs up to that size: build a smaller VRT (gdalbuildvrt) or convert the scene to a COG")
        if b"vrtrawrasterband" in source.read_bytes().lower():
            raise SceneError(f"{info.path}: reads raw bytes of files through a VRTRawRasterBand, which geoseg refuses "
                             f"for files it did not make; set GDAL_VRT_ENABLE_RAWRASTERBAND=YES if you trust this VRT")


def archive_of(name: str) -> Path:
    """The local file GDAL reads ``name`` from: the archive of ``/vsizip/ARCHIVE.zip/member``, else ``name``."""
    for prefix, suffix in (("/vsizip/", ".zip/"), ("/vsitar/", ".tar/")):
        if name.startswith(prefix) and suffix in name.lower():
            inner = name[len(prefix):]
            return Path(inner[: inner.lower().index(suffix) + len(suffix) - 1])
    return Path(name)


def _describe(path: Path, ds: rasterio.DatasetReader) -> SceneInfo:
    flags = ds.mask_flag_enums
    if all(f == [MaskFlags.all_valid] for f in flags):
        mask_kind = "none"
    elif all(MaskFlags.nodata in f for f in flags):
        mask_kind = "nodata"
    else:
        mask_kind = "mask"
    rows, cols = ds.block_shapes[0] if ds.count else (1, 1)
    return SceneInfo(
        path=path,
        driver=ds.driver,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtype=ds.dtypes[0] if ds.count else "none",
        crs=ds.crs,
        transform=ds.transform,
        nodata=ds.nodata,
        block_shape=(int(rows), int(cols)),
        descriptions=tuple(ds.descriptions),
        mask_kind=mask_kind,
        tags=dict(ds.tags()),
        files=tuple(plain_source(str(f)) for f in ds.files),
    )


class WindowReader:
    """Reads windows of chosen bands with their validity, one rasterio handle per thread.

    The engine's reader threads call :meth:`read` for exactly the windows they need (GDAL decodes
    only the internal blocks they touch and releases the GIL while it does).
    """

    def __init__(self, info: SceneInfo, indexes: tuple[int, ...]):
        self.info = info
        self.indexes = list(indexes)
        self._local = threading.local()
        self._opened: list[rasterio.DatasetReader] = []
        self._lock = threading.Lock()

    def _dataset(self) -> rasterio.DatasetReader:
        ds = getattr(self._local, "dataset", None)
        if ds is None:
            ds = self._local.dataset = open_quiet(str(self.info.path))
            with self._lock:
                self._opened.append(ds)
        return ds

    def close(self) -> None:
        """Close every thread's handle, once no thread reads any more (the engine's reader threads outlive a
        run: their handles would stay open until this reader is collected)."""
        with self._lock:
            opened, self._opened = self._opened, []
        for ds in opened:
            ds.close()
        self._local = threading.local()

    def read(self, row0: int, row1: int, col0: int, col1: int, out: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(band, row, col)`` values in the file's dtype (into ``out`` when given) and a
        ``(row, col)`` bool validity mask, or None where every pixel is valid by construction (an
        integer file with neither nodata nor masks)."""
        window = Window(col0, row0, col1 - col0, row1 - row0)
        ds = self._dataset()
        try:
            values = ds.read(self.indexes, window=window, out=out)
            if self.info.mask_kind == "mask":
                valid = valid_from_masks(ds, self.indexes, window)
            elif self.info.mask_kind == "none" and np.dtype(self.info.dtype).kind != "f":
                valid = None
            else:
                valid = valid_from_values(values, nodata_value(self.info))
        except RasterioIOError as exc:
            first = str(exc).splitlines()[0] if str(exc) else "read error"
            if self.info.remote_files:
                failing = failing_source(self.info.remote_files, ds.window_bounds(window))
                if failing is not None:
                    raise SceneError(f"{failing}: cannot be read (a remote source of {self.info.path}, rows "
                                     f"{row0}-{row1}, columns {col0}-{col1}: {first}); the server failed or did not "
                                     f"answer in time (GDAL_HTTP_TIMEOUT, GDAL_HTTP_MAX_RETRY): check the network and "
                                     f"the URL") from None
            fix = ("a remote source failed or did not answer in time (GDAL_HTTP_TIMEOUT): check the network and "
                   "the source's URL" if self.info.remote_files else
                   "the file is damaged or incomplete: re-download or re-export it")
            raise SceneError(f"{self.info.path}: pixels at rows {row0}-{row1}, columns {col0}-{col1} cannot "
                             f"be read ({first}); {fix}") from None
        return values, valid

    def read_into(self, row0: int, row1: int, col0: int, col1: int, out: np.ndarray) -> np.ndarray | None:
        """Read a window into ``out``; return its validity (the engine's :data:`geoseg.engine.plan.ReadFn`)."""
        return self.read(row0, row1, col0, col1, out)[1]


#: The most remote sources :func:`failing_source` tries before it gives up naming one.
MAX_PROBED_SOURCES = 32


def failing_source(sources: tuple[str, ...], bounds: tuple[float, float, float, float]) -> str | None:
    """The first of a VRT's remote ``sources`` whose pixels inside ``bounds`` (the VRT's CRS) cannot be read now,
    to name it in the error of a read that failed; None if each reads (the failure passed) or there are too many."""
    from rasterio.windows import from_bounds

    for source in sources[:MAX_PROBED_SOURCES]:
        try:
            with open_quiet(source) as ds:
                window = from_bounds(*bounds, transform=ds.transform).round_offsets().round_lengths()
                try:
                    window = window.intersection(Window(0, 0, ds.width, ds.height))
                except rasterio.errors.WindowError:  # this source does not reach the failed window
                    continue
                ds.read(1, window=window)
        except (RasterioIOError, SceneError):
            return shown_source(source)
    return None


def nodata_value(info: SceneInfo) -> float | None:
    """The value that marks no data, when the file's validity comes from one (not from mask bands)."""
    return info.nodata if info.mask_kind == "nodata" else None


def valid_from_masks(ds: rasterio.DatasetReader, indexes: list[int], window: Window) -> np.ndarray:
    return np.all(ds.read_masks(indexes, window=window) > 0, axis=0)


def valid_from_values(values: np.ndarray, nodata: float | None) -> np.ndarray:
    valid = np.ones(values.shape[1:], dtype=bool)
    if values.dtype.kind == "f":
        valid &= ~np.isnan(values).any(axis=0)
    if nodata is not None and not math.isnan(nodata):
        valid &= ~(values == values.dtype.type(nodata)).any(axis=0)
    return valid


def open_quiet(path: str) -> rasterio.DatasetReader:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        return rasterio.open(path)
