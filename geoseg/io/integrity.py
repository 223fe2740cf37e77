"""Files checked to their end before they are published: flushed to the disk, and GeoTIFFs whose tile
tables are whole.

GDAL does not always report a failed write: with the disk full, GDAL 3.10's GeoTIFF and COG drivers left
a file whose tiles were cut short or overwritten by the next ones and returned success, because libtiff's
``_tiffWriteProc: No space left on device`` went to libtiff's own handler (stderr), not to GDAL. So:

* :class:`TiffErrors` takes libtiff's error handler over (once per process) and counts write errors; a
  run checks the count around its writes (:meth:`TiffErrors.check`);
* before a product's files are renamed into place (:class:`geoseg.io.publish.Staging`), :func:`sync_file`
  flushes each one to the disk (where a delayed allocation fails, the error comes here), and
  :func:`check_tiff` reads every image file directory (the mask, its overviews, its probabilities) and
  checks that every tile lies inside the file and that no two overlap: directories only, milliseconds on
  a gigapixel mask;
* where the disk is nearly full after writing (:data:`LOW_SPACE_BYTES`), :func:`check_pixels` also decodes
  every tile, since a write may have failed without a trace anywhere else.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import threading
from pathlib import Path
from typing import ClassVar

import numpy as np

from geoseg.errors import OutputError


def sync_file(path: Path, shown: Path) -> None:
    """Flush ``path`` to the disk; an error (a full disk, an I/O error) is an :class:`OutputError` naming
    ``shown`` (the final path a user knows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OutputError(f"{shown}: could not be flushed to the disk ({exc.strerror}); check free space and "
                          f"the disk") from None


def sync_folder(folder: Path) -> None:
    """Flush a folder's entries (the renames that published a product); quietly nothing where the system
    cannot open folders for that."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text(path: Path, text: str, shown: Path, what: str = "",
               fix: str = "check free space and permissions") -> None:
    """Write ``text`` to ``path`` and flush it to the disk; any error is an :class:`OutputError`
    ("SHOWN: WHAT cannot be written (why); FIX")."""
    try:
        with path.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise OutputError(f"{shown}: {what}cannot be written ({exc.strerror}); {fix}") from None


#: Marks a file still being written under a temporary name (``.NAME.partial-PID``), removed by the next run.
PARTIAL_MARK = ".partial-"


def publish_text(path: Path, text: str, what: str = "", fix: str = "check free space and permissions") -> None:
    """``text`` at ``path``, whole or not at all: written under a temporary name, flushed and renamed. A failed
    write (a full disk, a read-only folder) is one :class:`OutputError` ("PATH: WHAT cannot be written (why);
    FIX") and leaves nothing behind."""
    partial = path.with_name(f".{path.name}{PARTIAL_MARK}{os.getpid()}")
    try:
        write_text(partial, text, path, what, fix)
        os.replace(partial, path)
    except OutputError:  # write_text's own message (an OutputError is an OSError without a strerror)
        raise
    except OSError as exc:
        raise OutputError(f"{path}: {what}cannot be written ({exc.strerror}); {fix}") from None
    finally:
        if partial.exists():  # (unlink's missing_ok does not cover a parent that is a file)
            partial.unlink()


def check_tiff(path: Path, shown: Path) -> None:
    """Raise :class:`OutputError` unless every tile (or strip) of every image in the TIFF at ``path`` lies
    inside the file, none overlaps another, and every directory can be read.

    Two tiles at the same offset with the same length are allowed (a writer may store a repeated block
    once); a tile with no bytes is allowed only where the file is sparse by design (GDAL's SPARSE_OK)."""
    import tifffile

    size = path.stat().st_size
    extents: list[tuple[np.ndarray, np.ndarray]] = []
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                extents.append((np.asarray(page.dataoffsets, np.int64), np.asarray(page.databytecounts, np.int64)))
    except Exception as exc:  # tifffile raises several kinds for a damaged directory
        raise OutputError(f"{shown}: the written file is damaged ({type(exc).__name__}: {exc}); the disk may be "
                          f"full: free some space and run again") from None
    offsets = np.concatenate([o for o, _ in extents]) if extents else np.zeros(0, np.int64)
    counts = np.concatenate([c for _, c in extents]) if extents else np.zeros(0, np.int64)
    stored = counts > 0
    offsets, counts = offsets[stored], counts[stored]
    if offsets.size and int((offsets + counts).max()) > size:
        raise OutputError(f"{shown}: the written file is cut short ({size:,} bytes, its tiles need "
                          f"{int((offsets + counts).max()):,}); the disk may be full: free some space and run again")
    order = np.lexsort((counts, offsets))
    offsets, counts = offsets[order], counts[order]
    distinct = np.ones(offsets.size, bool)
    distinct[1:] = (offsets[1:] != offsets[:-1]) | (counts[1:] != counts[:-1])
    offsets, counts = offsets[distinct], counts[distinct]
    if offsets.size > 1 and bool(((offsets[:-1] + counts[:-1]) > offsets[1:]).any()):
        raise OutputError(f"{shown}: the written file is damaged (tiles overlap: a write failed half-way); the "
                          f"disk may be full: free some space and run again")


#: Below this much free space in a product's folder after writing, its rasters are decoded whole before
#: they are published (:func:`check_pixels`).
LOW_SPACE_BYTES = 64 * 2**20


def low_space(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < LOW_SPACE_BYTES
    except OSError:
        return True


def check_pixels(path: Path, shown: Path) -> None:
    """Decode every tile of every band (and overview) of the raster at ``path``, a strip at a time; raise
    :class:`OutputError` if any cannot be read."""
    import rasterio
    from rasterio.windows import Window

    try:
        with rasterio.open(path) as ds:
            levels = [None, *range(len(ds.overviews(1)))]
        for level in levels:
            with rasterio.open(path, overview_level=level) as ds:
                rows = max(1, (64 * 2**20) // max(1, ds.width * ds.count))
                for row0 in range(0, ds.height, rows):
                    ds.read(window=Window(0, row0, ds.width, min(rows, ds.height - row0)))
    except Exception as exc:  # rasterio's errors and GDAL's CPLE_* kinds
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise OutputError(f"{shown}: the written file cannot be read back ({first}); the disk may be full: free "
                          f"some space and run again") from None


#: libtiff modules whose errors mean a file being written is not what GDAL believes it is.
_WRITE_MODULES = ("write", "seek", "append", "rewrite", "flush")
_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_void_p)


class TiffErrors:
    """libtiff's process-wide error handler, taken over to count write errors (module docstring).

    :meth:`mark` before writing and :meth:`check` after: a write error in between is an
    :class:`OutputError`. Other libtiff errors go on to the handler that was there before. Where libtiff
    cannot be found in the process (another GDAL build), nothing is counted and the other checks remain."""

    _lock = threading.Lock()
    _installed = False
    _count = 0
    _last = ""
    _keep: ClassVar[list[object]] = []  # the C callback and the previous handler, alive for the process

    @classmethod
    def install(cls) -> None:
        with cls._lock:
            if cls._installed:
                return
            cls._installed = True
            import rasterio  # noqa: F401  (loads GDAL, and the libtiff it uses)

            libc_name = ctypes.util.find_library("c")
            if libc_name is None:
                return
            libc = ctypes.CDLL(libc_name)
            # Every libtiff in the process (Pillow and others may bring their own beside GDAL's).
            for library in _loaded_libraries("libtiff"):
                try:
                    tiff = ctypes.CDLL(library)
                    tiff.TIFFSetErrorHandler.restype = ctypes.c_void_p
                    tiff.TIFFSetErrorHandler.argtypes = [_HANDLER]
                except (OSError, AttributeError):
                    continue
                previous: list[object] = [None]
                callback = _HANDLER(cls._handler(libc, previous))
                old = tiff.TIFFSetErrorHandler(callback)
                previous[0] = _HANDLER(old) if old else None
                cls._keep += [callback, previous]

    @classmethod
    def _handler(cls, libc: ctypes.CDLL, previous: list[object]) -> object:
        def handler(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
            text = ctypes.create_string_buffer(512)
            if fmt is not None:
                libc.vsnprintf(text, 512, fmt, ctypes.c_void_p(args))
            name = (module or b"").decode(errors="replace")
            if any(word in name.lower() for word in _WRITE_MODULES):
                with cls._lock:
                    cls._count += 1
                    cls._last = f"{name}: {text.value.decode(errors='replace')}"
            elif previous[0] is not None:
                previous[0](module, fmt, args)  # type: ignore[operator]

        return handler

    @classmethod
    def mark(cls) -> int:
        cls.install()
        return cls._count

    @classmethod
    def check(cls, mark: int, shown: Path) -> None:
        if cls._count != mark:
            raise OutputError(f"{shown}: writing failed ({cls._last}); check free space and the disk")


def _loaded_libraries(stem: str) -> list[str]:
    """The paths of this process's shared libraries whose names start with ``stem`` (Linux; none elsewhere)."""
    found: list[str] = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                path = line.split()[-1] if line.strip() else ""
                name = Path(path).name
                if (name.startswith((stem + "-", stem + ".so"))) and path not in found:
                    found.append(path)
    except OSError:
        return []
    return found
