"""Files checked to their end before they are published: flushed to the disk, and GeoTIFFs whose tile
tables are whole.

GDAL does not always report a failed write: with the disk full, the COG driver and libtiff have left a
file whose last tiles were cut short or overwritten by the next ones, and returned success. So a
product's files are checked before they are renamed into place (:class:`geoseg.io.writing.Staging`):
:func:`sync_file` flushes each one to the disk (where a delayed allocation fails, the error comes
here), and :func:`check_tiff` reads every image file directory (the mask, its overviews, its
probabilities) and checks that every tile lies inside the file and that no two tiles overlap. That
reads the directories only, never the pixels, so it costs milliseconds on a gigapixel mask.
"""

from __future__ import annotations

import os
from pathlib import Path

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


def write_text(path: Path, text: str, shown: Path) -> None:
    """Write ``text`` to ``path`` and flush it to the disk; any error is an :class:`OutputError`."""
    try:
        with path.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise OutputError(f"{shown}: cannot be written ({exc.strerror}); check free space and permissions") from None


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
