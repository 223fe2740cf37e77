"""geoseg's cache: what runs keep for later runs (converted weights, exports, traces, probes, pulled
packages), each file written atomically; :func:`cache_usage` and :func:`clear_derived` for ``geoseg models cache``."""

from __future__ import annotations

import os
from dataclasses import dataclass
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


def save_weights(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write safetensors to ``path`` via a temporary name, so a crash never leaves half a file.

    Serialised in memory and written by Python: safetensors' own writer reports a full disk as a
    ``SafetensorError``, where Python raises ``OSError`` (ENOSPC, EFBIG) that callers can tell apart."""
    from safetensors.torch import save

    data = save({k: v.contiguous() for k, v in tensors.items()}, metadata=metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


#: The cache's folders geoseg makes again by itself when they are missing (``geoseg models cache --clear``
#: empties them), and what each holds.
DERIVED_FOLDERS = {
    "models": "built-in weights converted from their installed package",
    "onnx": "networks exported to ONNX for the CPU backends",
    "openvino": "OpenVINO's compiled networks",
    "traced": "networks traced for a fast cold start on the GPU",
    "probes": "batch sizes measured per GPU, network and patch",
}
#: Folders of what ``geoseg models pull`` fetched: not made again offline, so ``--clear`` keeps them.
FETCHED_FOLDERS = {
    HUB_FOLDER: "repositories fetched from the Hugging Face Hub",
    PACKAGES_FOLDER: "packages made from them (--model NAME)",
}


@dataclass(frozen=True)
class CacheFolder:
    """One of the cache's folders: what it holds, its files and their bytes (links not followed)."""

    name: str
    holds: str
    files: int
    bytes: int
    derived: bool  # made again when missing (cleared by --clear)


def _files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()]


def cache_usage() -> list[CacheFolder]:
    """What each of the cache's folders holds (see :data:`DERIVED_FOLDERS`, :data:`FETCHED_FOLDERS`)."""
    root = cache_dir()
    usage = []
    for folders, derived in ((DERIVED_FOLDERS, True), (FETCHED_FOLDERS, False)):
        for name, holds in folders.items():
            files = _files(root / name)
            usage.append(CacheFolder(name, holds, len(files), sum(p.lstat().st_size for p in files), derived))
    return usage


def clear_derived() -> tuple[int, int]:
    """Remove the files of the folders geoseg makes again (:data:`DERIVED_FOLDERS`), keeping the folders
    themselves; what was pulled stays. The files and bytes removed. A run going on meanwhile keeps the
    files it has open; the next run makes what it needs again."""
    files = removed = 0
    for name in DERIVED_FOLDERS:
        for path in _files(cache_dir() / name):
            size = path.lstat().st_size
            try:
                path.unlink()
            except FileNotFoundError:  # removed by another process meanwhile
                continue
            files, removed = files + 1, removed + size
    return files, removed
