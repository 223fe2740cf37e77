"""A service worker's warm-up: ``geoseg serve start --model NAME`` runs the model once before the first scene.

A fresh worker's first scene pays for what every later scene finds ready: the CUDA context, the network
placed on the device, cuDNN's plans for the batch's shape and the kernels loaded. On the lent H100 the first
1536 x 768 scene through a new service took 8.15 s of the service's time, the next ones 0.20 s
(benchmarks/RESULTS.md, "Cold start"). ``--model`` therefore loads the model *and* segments a small synthetic
scene with it, on the worker's device thread (where the scenes run:
:meth:`geoseg.engine.resident.ResidentModels.on_device_thread`) and with the settings a plain ``geoseg run``
sends. The scene holds a little more than one automatic batch of patches, so it runs at the automatic batch
size, the shape every later scene of this model uses (a small scene at a batch size the process has run at:
:mod:`geoseg.engine.costs`), and pays none of the one-time costs that only a large scene repays (cuDNN timing,
CUDA-graph capture); a large scene still decides those itself.
The scene and its mask live in a temporary folder that is removed.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

#: The warm-up scene's edge, in patches: more patches than one automatic batch holds
#: (:data:`~geoseg.engine.predictor.MAX_AUTO_BATCH`), so that it runs at the automatic batch size, the shape later
#: scenes use (a small one reuses it: :mod:`geoseg.engine.costs`).
WARM_UP_EDGE = 5


def warm_up(model: str, dask_worker: Any = None) -> str:
    """On a worker (``Client.run``, which passes ``dask_worker``): load ``model`` into the worker's resident
    models and segment a synthetic scene with it (see module docstring); what it did, for the service's log."""
    import numpy as np
    import rasterio
    from rasterio.transform import from_origin

    from geoseg.config import RunConfig
    from geoseg.engine.resident import RESIDENT, ModelRef
    from geoseg.run import segment_scene

    started = time.perf_counter()
    card = RESIDENT.model(ModelRef(model, False)).card
    # WARM_UP_EDGE² patches: n = ceil((side + overlap) / stride) along each axis (geoseg.engine.grid)
    side = WARM_UP_EDGE * (card.tile_size - card.overlap) - card.overlap
    pixels = np.random.default_rng(0).integers(1, 10_000, (len(card.bands), side, side), dtype=np.uint16)
    threads = dask_worker.state.nthreads if dask_worker is not None else 1
    config = RunConfig(model=model, output_format="gtiff", workers=max(1, threads))
    with tempfile.TemporaryDirectory(prefix="geoseg-warm-up-") as folder:
        scene = Path(folder) / "warm-up.tif"
        pixel = card.resolution_m or 10.0  # at the model's own resolution: the scene's grid, as most scenes run
        with rasterio.open(scene, "w", driver="GTiff", width=side, height=side, count=len(card.bands),
                           dtype="uint16", crs="EPSG:32633", transform=from_origin(500_000, 5_500_000, pixel, pixel)
                           ) as out:
            out.write(pixels)
        summary = RESIDENT.on_device_thread(lambda: segment_scene(
            scene, Path(folder) / "mask.tif", config, loader=lambda name, trust: RESIDENT.model(ModelRef(name, trust)),
            session=RESIDENT.session))
    return (f"{summary.patches} patches of {summary.tile_size} px on {summary.device} ({summary.backend}, "
            f"{summary.precision}, batches of {summary.batch_size}) in {time.perf_counter() - started:.1f} s")
