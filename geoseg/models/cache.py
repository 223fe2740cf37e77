"""Where converted weights are kept between runs, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

if TYPE_CHECKING:
    import torch

#: Overrides the cache location (tests, read-only homes, shared caches on clusters).
CACHE_ENV = "GEOSEG_CACHE_DIR"


def cache_dir() -> Path:
    """``$GEOSEG_CACHE_DIR`` or the user's cache directory (``~/.cache/geoseg`` on Linux)."""
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("geoseg"))


#: Under the cache: huggingface_hub's cache of the repositories ``geoseg models pull`` fetched, and the packages
#: made from them (:mod:`geoseg.models.hub`), which ``--model NAME`` finds.
HUB_FOLDER, PACKAGES_FOLDER = "hub", "packages"


def packages_dir() -> Path:
    return cache_dir() / PACKAGES_FOLDER


def pulled_package(name: str) -> Path | None:
    """The folder of the package ``geoseg models pull`` made under ``name``, if there is one."""
    if not name or "/" in name or "\\" in name or name.startswith(".") or name.lower().endswith(".onnx"):
        return None
    folder = packages_dir() / name
    return folder if folder.is_dir() else None


def save_weights(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write safetensors to ``path`` via a temporary name, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    from safetensors.torch import save_file

    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
