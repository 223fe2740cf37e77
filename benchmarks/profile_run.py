"""Where does a warm run's time go on the Python side? cProfile of one `segment_scene`, top functions.

Warms up on ``--warmup`` (same model and settings), then profiles the run of ``scene`` and prints
the functions with the most own time, plus the engine's stage timings.

``--sync-sites`` instead lists where the run makes the host wait for the GPU (PyTorch's sync debug mode):
each site's thread, its geoseg frames and how often. A wait on the device thread drains the queue of
network batches, so the GPU idles until the thread has queued more.

    python benchmarks/profile_run.py SCENE.tif --model MODEL_DIR --warmup SMALL.tif --device cuda
    python benchmarks/profile_run.py SCENE.tif --model MODEL_DIR --warmup SMALL.tif --sync-sites
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geoseg.config import RunConfig
from geoseg.engine.device import DeviceSession, device_waits
from geoseg.models import load_model
from geoseg.run import segment_scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--warmup", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=Path("/tmp/geoseg-profile.tif"))
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--no-match-resolution", action="store_true", help="run at the scene's own resolution (f = 1)")
    parser.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative)")
    parser.add_argument("--sync-sites", action="store_true", help="list where the run waits for the GPU instead")
    args = parser.parse_args()
    DeviceSession.tune_for_many_scenes()
    loaded = load_model(args.model)
    config = RunConfig(device=args.device, batch_size=16, overwrite=True,
                       match_resolution=not args.no_match_resolution)
    segment_scene(args.warmup, args.out, config, model=loaded)
    if args.sync_sites:
        sites = sync_sites(lambda: segment_scene(args.scene, args.out, config, model=loaded))
        print(f"{sum(sites.values())} waits for the GPU at {len(sites)} sites:")
        for where, n in sites.most_common():
            print(f"{n:6d}  {where}")
        return
    profile = cProfile.Profile()
    profile.enable()
    summary = segment_scene(args.scene, args.out, config, model=loaded)
    profile.disable()
    print(f"{summary.seconds:.2f} s; stages {summary.stage_seconds}; model {summary.model_seconds:.2f} s")
    pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


def sync_sites(run: Callable[[], object]) -> Counter[str]:
    """Run ``run`` with PyTorch's sync debug mode on warn; count each synchronizing call by thread and by its
    three innermost geoseg frames (:func:`geoseg.engine.device.device_waits`)."""
    with device_waits(True) as waits:
        run()
    return waits


if __name__ == "__main__":
    main()
