"""Where does a warm run's time go on the Python side? cProfile of one `segment_scene`, top functions.

Warms up on ``--warmup`` (same model and settings), then profiles the run of ``scene`` and prints
the functions with the most own time, plus the engine's stage timings.

    python benchmarks/profile_run.py SCENE.tif --model MODEL_DIR --warmup SMALL.tif --device cuda
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geoseg.config import RunConfig
from geoseg.engine.device import DeviceSession
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
    args = parser.parse_args()
    DeviceSession.tune_for_many_scenes()
    loaded = load_model(args.model)
    config = RunConfig(device=args.device, batch_size=16, overwrite=True,
                       match_resolution=not args.no_match_resolution)
    segment_scene(args.warmup, args.out, config, model=loaded)
    profile = cProfile.Profile()
    profile.enable()
    summary = segment_scene(args.scene, args.out, config, model=loaded)
    profile.disable()
    print(f"{summary.seconds:.2f} s; stages {summary.stage_seconds}; model {summary.model_seconds:.2f} s")
    pstats.Stats(profile).sort_stats(args.sort).print_stats(args.top)


if __name__ == "__main__":
    main()
