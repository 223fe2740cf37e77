"""geoseg: segment large satellite and aerial GeoTIFFs into seamless georeferenced masks.

The package is layered: each folder is a subsystem and imports only from the layers below it. The one
picture of the layers is docs/architecture.md (tests/test_layout.py checks it against the code).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from geoseg.version import __version__

if TYPE_CHECKING:
    from geoseg.array import segment_array
    from geoseg.config import RunConfig
    from geoseg.errors import GeosegError
    from geoseg.io.scene import SceneInfo, open_scene
    from geoseg.run import segment_scene
    from geoseg.summary import RunSummary

#: Public names and the modules that hold them: imported on first use, so that ``import geoseg`` (and
#: the command line's help) does not pay for torch.
_LAZY = {"GeosegError": "geoseg.errors", "RunConfig": "geoseg.config", "RunSummary": "geoseg.summary",
         "SceneInfo": "geoseg.io.scene", "open_scene": "geoseg.io.scene", "segment_scene": "geoseg.run",
         "segment_array": "geoseg.array"}

__all__ = ["GeosegError", "RunConfig", "RunSummary", "SceneInfo", "__version__", "open_scene", "segment_array",
           "segment_scene"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geoseg' has no attribute {name!r}")
