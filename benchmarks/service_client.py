"""The client's share of a run through ``geoseg serve`` (issue 30): the service's door against a dask client.

Starts a one-worker service (``--gpus 1`` where CUDA is visible, else ``--cpu-workers 1``) with the model
loaded, then runs each scene through it in interleaved rounds, two ways:

* **door**: ``geoseg run SCENE`` as a user types it: the scene goes to the service's Unix-socket door
  (:mod:`geoseg.cluster.door`), no dask in the command;
* **dask client** (the route before the door, the baseline): ``geoseg run SCENE --scheduler ADDRESS`` with the
  service's TLS files: the command imports distributed, connects and submits the same task.

Each run prints its JSON summary; the client's share is its wall (from this parent) less the service's own
``seconds``. The first run of each scene warms the worker and is left out of the medians.

    python benchmarks/service_client.py SCENE.tif [MORE.tif] --model MODEL_DIR --rounds 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.one_time_costs import geoseg_cmd, wall, wall_json  # noqa: E402
from benchmarks.runbench.common import describe_device, ensure_weights, table  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenes", type=Path, nargs="+")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-service-client"))
    args = parser.parse_args()
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    model = args.model.resolve()
    ensure_weights(model)
    device = describe_device()
    env = {"XDG_STATE_HOME": str(work / "state"), "XDG_CONFIG_HOME": str(work / "config")}
    workers = ["--gpus", "1"] if device != "CPU only" else ["--cpu-workers", "1"]
    print(f"device: {device}", flush=True)
    started = wall([sys.executable, "-m", "geoseg.cli", "serve", "start", *workers, "--model", str(model)], env)
    try:
        _, status = wall_json([sys.executable, "-m", "geoseg.cli", "serve", "status", "--json"], env)
        credentials = work / "config" / "geoseg" / "service"
        through_dask = ["--scheduler", status["address"], *[x for flag in ("--tls-ca-file", "--tls-cert")
                                                             for x in (flag, str(credentials / "cert.pem"))],
                        "--tls-key", str(credentials / "key.pem")]
        routes = {"door": [], "dask client": through_dask}
        shares: dict[tuple[str, str], list[float]] = {}
        walls: dict[tuple[str, str], list[float]] = {}
        for scene in args.scenes:
            for k in range(args.rounds + 1):
                for route, extra in routes.items():
                    cmd = [c for c in geoseg_cmd(scene.resolve(), work / "served.tif", model) if c != "--quiet"]
                    seconds, summary = wall_json([*cmd, "--json", *extra], env)
                    own = float(summary.get("seconds", "nan"))
                    print(f"{scene.name} {route} run {k + 1}: wall {seconds:.2f} s, the service's run {own:.2f} s",
                          flush=True)
                    if k:  # the first run of each scene warms the worker
                        walls.setdefault((scene.name, route), []).append(seconds)
                        shares.setdefault((scene.name, route), []).append(seconds - own)
    finally:
        wall([sys.executable, "-m", "geoseg.cli", "serve", "stop"], env)
    table(f"geoseg run through a one-worker geoseg serve on {device} (start {started:.1f} s; medians of "
          f"{args.rounds} interleaved runs after a first)", ("scene", "route", "wall s", "client's share s"),
          [[name, route, f"{statistics.median(walls[name, route]):.2f}",
            f"{statistics.median(shares[name, route]):.2f}"] for name, route in walls])
    print(json.dumps({f"{n}: {r}": statistics.median(v) for (n, r), v in shares.items()}), file=sys.stderr)


if __name__ == "__main__":
    main()
