"""Where GDAL reads an input, as plain strings (no rasterio: the service's client uses them): remote names
(``https://``, ``s3://``, ``/vsicurl/`` ...), how geoseg's stack VRTs name a remote COG, and how a name is shown
to a user."""

from __future__ import annotations

import re
from pathlib import Path


def quiet_source(name: str) -> str:
    """A remote COG as geoseg's stack VRTs name it: ``/vsicurl/URL`` with GDAL's directory listing and side-car
    probes (``.aux.xml``, ``.ovr``, ``.msk``) off, ``/vsicurl?empty_dir=yes&url=...``. On object storage each
    probe is a request that fails: 43 of a 4096² Item's 289 requests (benchmarks/bench_remote.py)."""
    if name.startswith("/vsicurl/"):
        from urllib.parse import quote

        return "/vsicurl?empty_dir=yes&url=" + quote(name.removeprefix("/vsicurl/"), safe="")
    return name


def plain_source(name: str) -> str:
    """``name`` as a user gave it: the inverse of :func:`quiet_source` (``/vsicurl/URL``), anything else as is."""
    if name.startswith("/vsicurl?"):
        from urllib.parse import parse_qs

        url = parse_qs(name.removeprefix("/vsicurl?")).get("url")
        if url:
            return f"/vsicurl/{url[0]}"
    return name


def is_remote(name: str) -> bool:
    """Whether GDAL reads ``name`` over a network (``/vsicurl/``, ``/vsis3/``, ``https://`` ...)."""
    return "://" in name or name.startswith(("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss",
                                             "/vsiswift", "/vsiwebhdfs", "/vsihdfs"))


def shown_source(name: str) -> str:
    """``name`` as a user typed it: a remote source's URL, anything else as is."""
    return plain_source(name).removeprefix("/vsicurl/")


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


def remote_name(path: str | Path) -> str | None:
    """GDAL's name for a remote raster given on the command line (``https://``, ``s3://``, ``/vsicurl/``,
    ``/vsis3/`` ...), else None. A path object folds a URL's ``//`` into ``/``: it is put back."""
    text = re.sub(r"^(/vsicurl/)?(https?|s3):/(?!/)", r"\1\2://", str(path))
    if text.startswith(("http://", "https://", "s3://")):
        return gdal_href(text)
    return text if is_remote(text) else None
