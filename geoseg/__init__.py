"""geoseg: segment large satellite and aerial GeoTIFFs into seamless georeferenced masks.

The package is layered; each folder is a subsystem and imports only from the layers below it
(tests/test_layout.py keeps it so)::

    errors, version, config          what every layer may name
    models/   io/                    model cards and networks; scenes, masks and records on disk
    engine/   export/                plan, device session, input band, blender, pipeline; legend, stats,
                                     vectors, STAC
    bands, prepare, run, info        one run, from a path to a summary
    batch/                           many runs, jobs and resume
    cli/                             the command line over all of the above
"""

from geoseg.config import RunConfig
from geoseg.errors import GeosegError
from geoseg.io.scene import SceneInfo, open_scene
from geoseg.run import RunSummary, segment_scene
from geoseg.version import __version__

__all__ = ["GeosegError", "RunConfig", "RunSummary", "SceneInfo", "__version__", "open_scene", "segment_scene"]
