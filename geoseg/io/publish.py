"""A product's files under temporary names, published together: the final path only ever holds a finished file.

Every file of a product (the mask, its probabilities, its sidecars) is written under a temporary name beside its
final path (``.NAME.partial-PID~HOST``, :func:`partial_path`) and published together by :class:`Staging` once all
are complete and checked (:mod:`geoseg.io.integrity`), the mask last: a mask at its final path means its sidecars
are there too. On any error or interrupt the temporary files are removed; those of a killed process are removed
by the next run or batch in the folder (:func:`clean_leftovers`).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from geoseg.errors import OutputError
from geoseg.io.integrity import PARTIAL_MARK, check_pixels, check_tiff, low_space, sync_file, sync_folder

__all__ = ["PARTIAL_MARK", "Staging", "clean_leftovers", "parse_process_tag", "partial_path", "process_tag"]


def process_tag() -> str:
    """This process in temporary file names: ``PID~HOST``, so that a batch on one machine never takes a
    temporary file of a live process on another (shared output folders, dask workers) for a leftover."""
    return f"{os.getpid()}~{socket.gethostname().split('.')[0].replace('~', '-')}"


def parse_process_tag(text: str) -> tuple[int, str | None] | None:
    """``(pid, host)`` of a :func:`process_tag` (host None in names written before hosts were tagged)."""
    pid, _, host = text.partition("~")
    return (int(pid), host or None) if pid.isdigit() else None


def partial_path(final: Path, step: str = "") -> Path:
    """The temporary name of ``final`` while this process writes it (``step`` tells scratch files apart)."""
    return final.with_name(f".{final.name}{'.' + step if step else ''}{PARTIAL_MARK}{process_tag()}")


class Staging:
    """The files of one product, written under temporary names and published together (module docstring).

    :meth:`stage` names a file to publish, :meth:`scratch` one to throw away; :meth:`publish` renames
    the staged files into place, ``last`` after all others; leaving the ``with`` block removes
    whatever is still temporary (everything, after an error)."""

    def __init__(self) -> None:
        self._staged: dict[Path, Path] = {}  # final -> temporary
        self._scratch: list[Path] = []

    def stage(self, final: Path) -> Path:
        self._staged[final] = partial_path(final)
        return self._staged[final]

    def scratch(self, final: Path, step: str) -> Path:
        self._scratch.append(partial_path(final, step))
        return self._scratch[-1]

    def publish(self, last: Path, overwrite: bool = True) -> None:
        """Check every staged file to its end (flushed to the disk; a GeoTIFF's tiles all inside the file:
        :mod:`geoseg.io.integrity`), then rename them into place, ``last`` last. Without ``overwrite`` a
        file that appeared at a final path since the run started is never replaced (:class:`OutputError`)."""
        low = bool(self._staged) and low_space(last.parent)
        for final, temporary in self._staged.items():
            sync_file(temporary, final)
            if _is_tiff(temporary):
                check_tiff(temporary, final)
                if low:  # a write may have failed without a trace: decode it all (geoseg.io.integrity)
                    check_pixels(temporary, final)
        for final in [*(f for f in self._staged if f != last), last]:
            _publish_one(self._staged[final], final, overwrite)
            self._staged.pop(final)
        sync_folder(last.parent)

    def __enter__(self) -> Staging:
        return self

    def __exit__(self, *exc: object) -> None:
        for path in [*self._staged.values(), *self._scratch]:
            path.unlink(missing_ok=True)
        self._staged.clear()


def _is_tiff(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def _publish_one(temporary: Path, final: Path, overwrite: bool) -> None:
    """Rename ``temporary`` to ``final``; without ``overwrite``, only where nothing is there (a hard link
    fails if ``final`` exists: no check-then-rename race), else replacing it."""
    try:
        if overwrite:
            os.replace(temporary, final)
            return
        try:
            os.link(temporary, final)
        except FileExistsError:
            raise OutputError(f"{final}: appeared while this run wrote it (another program or run); it was left as "
                              f"it is: pass --overwrite to replace it or choose -o") from None
        except OSError:  # a file system without hard links
            if final.exists():
                raise OutputError(f"{final}: appeared while this run wrote it; it was left as it is: pass "
                                  f"--overwrite to replace it or choose -o") from None
            os.replace(temporary, final)
            return
        temporary.unlink()
    except OutputError:
        raise
    except OSError as exc:
        raise OutputError(f"{final}: cannot be put in place ({exc.strerror}); check the folder's permissions") from None


def clean_leftovers(folder: Path) -> list[Path]:
    """Remove ``.NAME.partial-PID~HOST`` files (and ``...~HOST.ext``) in ``folder`` whose process on this host
    is gone (a run or batch killed with SIGKILL); return what was removed. Another host's temporary files
    are left alone."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    host = socket.gethostname().split(".")[0]
    for path in folder.glob(f".*{PARTIAL_MARK}*"):
        tag = parse_process_tag(path.name.rsplit(PARTIAL_MARK, 1)[1].split(".")[0])  # NAME.partial-PID~HOST[.ext]
        if tag is not None and tag[1] in (None, host) and not _alive(tag[0]):
            try:
                path.unlink(missing_ok=True)
            except OSError:  # a read-only folder: nothing can be written there either
                continue
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
