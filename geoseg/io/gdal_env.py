"""GDAL's settings for inputs geoseg did not write, applied once when :mod:`geoseg.io` is imported.

A VRT is a recipe GDAL follows, and a scene may come from anyone: unhardened, a ``VRTRawRasterBand``
reads any file on the machine as pixels (``/etc/passwd`` segmented as a scene), and a source on a stalled
HTTP server hangs a run for ever. :data:`GDAL_DEFAULTS` turns raw VRT bands and Python pixel functions
off and gives every HTTP request a timeout and a few retries, so a dead server ends a run in one line.
Each is set only where the environment does not set it already: a user who trusts their VRTs sets
``GDAL_VRT_ENABLE_RAWRASTERBAND=YES`` (README, "Inputs geoseg did not write"). Remote sources inside a VRT
stay allowed (users mosaic remote COGs); ``geoseg info`` and the run summary list them
(:attr:`geoseg.io.scene.SceneInfo.remote_files`).
"""

from __future__ import annotations

import os

#: GDAL configuration options geoseg sets where the environment leaves them unset (module docstring).
GDAL_DEFAULTS: dict[str, str] = {
    "GDAL_VRT_ENABLE_RAWRASTERBAND": "NO",
    "GDAL_VRT_ENABLE_PYTHON": "NO",
    "GDAL_HTTP_CONNECTTIMEOUT": "15",
    "GDAL_HTTP_TIMEOUT": "60",
    "GDAL_HTTP_MAX_RETRY": "3",
    "GDAL_HTTP_RETRY_DELAY": "1",
}


def apply_defaults() -> None:
    """Set :data:`GDAL_DEFAULTS` in this process's environment, where unset (GDAL reads it at each use)."""
    for key, value in GDAL_DEFAULTS.items():
        os.environ.setdefault(key, value)
