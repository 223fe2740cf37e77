"""The resume record: what a finished mask was made from, embedded in the mask itself.

Every mask carries a ``GEOSEG_RECORD`` tag (JSON): the input's identity (resolved path, size,
modification time), the model's identity (built-in name and version, or the weight file's path,
size and modification time) and every setting that changes the result
(:data:`geoseg.config.RESULT_SETTINGS`). Because the mask only appears at its final path once
complete, a mask whose record equals the one a rerun would write is finished work: ``geoseg batch``
skips it. Settings that cannot change the mask (batch size, block size, threads, device) are left
out, so a rerun with other speed settings still skips.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import rasterio
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from geoseg.config import RESULT_SETTINGS, RunConfig

RECORD_TAG = "GEOSEG_RECORD"


def input_identity(path: Path) -> dict[str, Any]:
    stat = path.stat()
    return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def make_record(scene: Path, model_identity: str, config: RunConfig) -> dict[str, Any]:
    settings = {k: v for k, v in asdict(config).items() if k in RESULT_SETTINGS}
    settings["bands"] = list(settings["bands"]) if settings["bands"] is not None else None
    return {"input": input_identity(scene), "model": model_identity, "settings": settings}


def encode(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def read_record(output: Path) -> dict[str, Any] | None:
    """The record embedded in ``output``, or None if it has none or cannot be read."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(output) as ds:
                text = ds.tags().get(RECORD_TAG)
        return json.loads(text) if text else None
    except (RasterioIOError, ValueError, OSError):
        return None


def same_record(found: dict[str, Any] | None, record: dict[str, Any]) -> bool:
    """True if ``found`` (from :func:`read_record`) says: made from exactly this input, model and settings."""
    return found is not None and found == json.loads(encode(record))


def is_geoseg_output(path: Path) -> bool:
    """Whether ``path`` is a raster geoseg wrote (a mask or its probabilities): it carries the record tag.
    Only regular files are opened (a FIFO would block for ever)."""
    try:
        if not path.is_file():
            return False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                tags = ds.tags()
    except (RasterioIOError, OSError):
        return False
    return RECORD_TAG in tags or "GEOSEG_PRODUCT" in tags
