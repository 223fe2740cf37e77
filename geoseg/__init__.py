"""geoseg: segment large satellite and aerial GeoTIFFs into seamless georeferenced masks."""

__version__ = "0.1.0"

from geoseg.errors import GeosegError
from geoseg.run import RunConfig, RunSummary, segment_scene
from geoseg.scene import SceneInfo, open_scene

__all__ = ["GeosegError", "RunConfig", "RunSummary", "SceneInfo", "__version__", "open_scene", "segment_scene"]
