"""Where a run may write: every output checked against the inputs and each other before work, and one
writer per output at a time.

:func:`check_outputs` refuses, before a pixel is read, any output that is an input (by name, through a
link, or as a file a VRT reads), two outputs of one run at the same path (``-o m.tif --vector m.json``
would be the STAC Item's name), an existing file without ``overwrite``, and a folder that is missing or
not writable. :class:`OutputLock` makes runs to one output exclusive: the second gets an
:class:`~geoseg.errors.OutputError` at once instead of the last writer silently winning.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from geoseg.errors import OutputError

LOCK_SUFFIX = ".lock"
#: An output named as a URL (``s3://``, which a path shortens to ``s3:/``) or a GDAL virtual path (``/vsis3/``).
_REMOTE = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.-]*:/|/vsi[a-z0-9_]+/)")


#: Name endings of other formats. The mask is always a GeoTIFF: one named ``mask.png`` would be a GeoTIFF that the
#: name, a file manager and a STAC reader take for something else, so such a name is refused.
OTHER_FORMATS = frozenset({".png", ".jpg", ".jpeg", ".jp2", ".j2k", ".gif", ".bmp", ".webp", ".vrt", ".img", ".nc",
                           ".h5", ".hdf", ".asc", ".xyz", ".zarr", ".gpkg", ".fgb", ".parquet", ".shp", ".geojson",
                           ".json", ".qml", ".xml", ".csv", ".txt", ".html"})


def same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same path once resolved, or the same inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return False


def check_outputs(outputs: Mapping[str, Path], inputs: Iterable[Path], overwrite: bool) -> None:
    """Refuse the outputs of one run (by role: mask, probabilities, style, ...) that would overwrite an input,
    collide with each other, replace an existing file without ``overwrite``, or cannot be created (module
    docstring)."""
    inputs = [Path(p) for p in inputs]
    roles = list(outputs.items())
    for role, path in roles:
        for source in inputs:
            if same_file(path, source):
                what = "is the input scene" if source == inputs[0] else f"is an input of the run ({source})"
                raise OutputError(f"{path}: {what}; the {role} would overwrite it: choose another output with -o")
    for i, (role, path) in enumerate(roles):
        for other_role, other in roles[i + 1:]:
            if same_file(path, other):
                raise OutputError(f"{path}: the {role} and the {other_role} of this run would both be written there; "
                                  f"choose another name for one of them")
    for role, path in roles:
        if path.is_dir():
            raise OutputError(f"{path}: is a directory; give a file name for the {role}, e.g. {path / 'mask.tif'}")
        if path.exists() and not overwrite:
            raise OutputError(f"{path}: already exists; pass --overwrite to replace it or choose -o")
        parent = path.parent
        if not parent.is_dir():
            if looks_remote(path):
                raise OutputError(f"{path}: geoseg writes the {role} to a local folder, not to a URL or GDAL virtual "
                                  f"path; write it here and copy it with your storage's tool (aws s3 cp, gsutil cp, "
                                  f"rclone)")
            raise OutputError(f"{path}: folder {parent} does not exist; create it first")
        if not os.access(parent, os.W_OK):
            raise OutputError(f"{path}: folder {parent} is not writable; choose another output with -o")


def looks_remote(path: Path | str) -> bool:
    """Whether ``path`` names a URL or a GDAL virtual file rather than a local one (outputs are local only)."""
    return _REMOTE.match(str(path)) is not None


def lock_path(output: Path) -> Path:
    return output.with_name(f".{output.name}{LOCK_SUFFIX}")


class OutputLock:
    """Exclusive right to write ``output`` (``flock`` on ``.NAME.lock`` beside it, removed on release).

    The kernel drops the lock when the process dies, so a killed run never blocks the next one. A lock
    file that was replaced while waiting is taken again, so two runs never hold locks on different
    files of one name."""

    def __init__(self, output: Path):
        self.output = output
        self.path = lock_path(output)
        self._fd: int | None = None

    def __enter__(self) -> OutputLock:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise OutputError(f"{self.output}: cannot be locked for writing ({exc.strerror}); check that its "
                                  f"folder is writable") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputError(f"{self.output}: another geoseg run is writing it now; wait for it to finish or "
                                  f"choose another output with -o") from None
            try:
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    self._fd = fd
                    return self
            except FileNotFoundError:  # its holder removed it as we took it: take the new one
                pass
            os.close(fd)

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self.path.unlink(missing_ok=True)
            os.close(self._fd)
            self._fd = None
