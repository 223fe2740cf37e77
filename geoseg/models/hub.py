"""``geoseg models pull``: a model from the Hugging Face Hub (an smp-format repository) as a geoseg package.

segmentation-models-pytorch publishes networks as Hub repositories of smp's ``config.json`` and
``model.safetensors`` (``model.save_pretrained(...)`` / ``push_to_hub``); a geoseg package is that plus
``geoseg.json``. :func:`pull` fetches such a repository through huggingface_hub into geoseg's cache
(``CACHE/hub``, huggingface_hub's own layout, so ``HF_HUB_OFFLINE=1`` and a copied cache work), then writes the
package to ``CACHE/packages/NAME``, which ``--model NAME`` finds. Only JSON, YAML, Markdown and safetensors
files are fetched: never a pickle. What the repository does not say and a geoseg card needs (the input bands
in order, the class names) comes from ``--bands`` / ``--sensor`` and ``--classes``; without them the pull
stops with one line naming what is missing (the files stay in the cache, so the next try is offline).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geoseg.errors import ConfigError, ModelError, OutputError
from geoseg.models.cache import HUB_FOLDER, cache_dir, packages_dir
from geoseg.models.card import ClassInfo

#: What a pull fetches (never pickles).
ALLOWED = ["*.json", "*.safetensors", "*.md", "*.yaml", "*.yml"]
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class Pulled:
    repo: str
    revision: str  # the commit the snapshot is of
    snapshot: Path
    package: Path
    card: Any  # ModelCard

    def to_dict(self) -> dict[str, Any]:
        return {"repo": self.repo, "revision": self.revision, "snapshot": str(self.snapshot),
                "package": str(self.package), "name": self.package.name, "bands": list(self.card.bands),
                "classes": [c.name for c in self.card.classes]}


def repo_id(ref: str) -> str:
    """``owner/name`` from ``owner/name``, ``hf://owner/name`` or ``https://huggingface.co/owner/name[/...]``."""
    text = ref.strip()
    for prefix in ("hf://", "https://huggingface.co/", "http://huggingface.co/", "huggingface.co/"):
        if text.startswith(prefix):
            text = "/".join(text[len(prefix):].split("/")[:2])
            break
    if not _REPO.match(text):
        raise ConfigError(f"{ref!r} is not a Hugging Face model repository; give OWNER/NAME or "
                          f"https://huggingface.co/OWNER/NAME")
    return text


def pull(ref: str, *, name: str | None = None, revision: str | None = None, bands: tuple[str, ...] | None = None,
         classes: tuple[ClassInfo, ...] | None = None, sensor: str | None = None,
         overwrite: bool = False) -> Pulled:
    """Fetch ``ref`` (see :func:`repo_id`) and write its package (see module docstring)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    from geoseg.models.importing import import_model, read_source

    repo = repo_id(ref)
    target = packages_dir() / (name or repo.split("/")[1])
    if target.exists() and not overwrite:
        raise OutputError(f"{target}: a package of that name was pulled before; pass --overwrite to replace it, or "
                          f"--name another")
    try:
        snapshot = Path(snapshot_download(repo, revision=revision, cache_dir=cache_dir() / HUB_FOLDER,
                                          allow_patterns=ALLOWED))
    except (LocalEntryNotFoundError, OfflineModeIsEnabled):
        raise ModelError(f"{repo}: not in geoseg's cache ({cache_dir() / HUB_FOLDER}) and the Hub cannot be reached "
                         f"(offline: HF_HUB_OFFLINE, or no network); pull it where the Hub is reachable and copy the "
                         f"cache folder") from None
    except HfHubHTTPError as exc:
        status = getattr(getattr(exc, "response", None), "status_code", None)
        raise ModelError(f"{repo}: the Hub refused it ({status or type(exc).__name__}); check the name, the "
                         f"revision, and HF_TOKEN for a private repository") from None
    except OSError as exc:
        raise ModelError(f"{repo}: could not be fetched ({exc}); check the network and free space") from None
    found = read_source(snapshot, False)
    base = found.card
    missing = [what for what, given, known in (("input bands in order (--bands red,green,blue,... or --sensor)",
                                                bands or sensor, base and base.bands),
                                               ("class names (--classes a,b,...)", classes, base and base.classes))
               if not given and not known]
    if missing:
        raise ConfigError(f"{repo}: fetched into {snapshot}, but a geoseg package also needs its "
                          f"{' and '.join(missing)}; run the pull again with them (no download this time)")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{target.parent}: cannot be created ({exc.strerror}); set GEOSEG_CACHE_DIR to a writable "
                          f"folder") from None
    card = import_model(snapshot, target, bands=bands, classes=classes, sensor=sensor, name=target.name,
                        overwrite=overwrite)
    return Pulled(repo, snapshot.name, snapshot, target, card)
