"""Start-up on a GPU (issue 30), one run: the bare floor, cold ``geoseg run`` before and after, the warm
steady run, runs through ``geoseg serve``, and the break-evens of the one-time costs.

* **break-evens** (a fresh child): the network on batches of 16 patches under bf16 autocast: a call on
  cuDNN's heuristics, the first call with cuDNN timing (its cost: that call less a heuristic one) and
  calls after it, CUDA-graph capture (warm-up + capture) and replays, and the first call of the
  batch-size probe's shape. Break-even = one-time cost / time saved per patch (geoseg/engine/costs.py).
* **bare floor**: a fresh process that imports torch and smp, builds the network and runs one bf16
  forward pass of 16 patches (the issue's floor), wall time from the parent.
* **cold** ``geoseg run`` (fresh processes, wall, interleaved rounds) of SMALL and of a SIZE² scene made
  from it: the code given by ``--before`` (a checkout of geoseg before this work), then this code in a
  process with an empty cache (it builds the network and caches its trace) and with the trace cached.
  With ``--reproducible`` the two kinds of cold process must give equal masks.
* **warm / steady**: ``segment_scene`` in one process, the scene again (steady).
* **service**: ``geoseg serve start --gpus 1``, then ``geoseg run`` of each scene through it (client wall),
  and a ``--reproducible`` mask through it against ``--local``.

    python benchmarks/one_time_costs.py SMALL.tif --model MODEL_DIR --size 16384 --before OLD_CHECKOUT
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BATCH = 16


def child_costs(model: Path) -> dict:
    """The break-evens' measurements (run in a fresh child)."""
    import torch

    from geoseg.models.architectures import build_network
    from geoseg.models.card import ModelCard

    card = ModelCard.load(model / "config.json")
    dev = torch.device("cuda")
    net = build_network(card).eval().to(dev).to(memory_format=torch.channels_last)
    x = torch.zeros((BATCH, len(card.bands), card.tile_size, card.tile_size), device=dev)
    x = x.contiguous(memory_format=torch.channels_last)

    def call(batch: torch.Tensor = x) -> torch.Tensor:
        with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
            return torch.softmax(net(batch).float(), dim=1)

    def timed(fn, n: int = 1) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / n

    out = {}
    torch.backends.cudnn.benchmark = False
    out["first call, heuristics s"] = timed(call)
    out["call, heuristics s"] = timed(call, 10)
    torch.backends.cudnn.benchmark = True
    out["first call, cuDNN timing s"] = timed(call)
    out["call, timed algorithms s"] = timed(call, 10)
    side = torch.cuda.Stream()
    graph = torch.cuda.CUDAGraph()

    def capture() -> None:
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            call()
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(graph):
            call()

    out["graph capture s"] = timed(capture)
    out["call, graph replay s"] = timed(graph.replay, 10)
    probe = torch.zeros((2, *x.shape[1:]), device=dev).contiguous(memory_format=torch.channels_last)
    with torch.backends.cudnn.flags(enabled=True, benchmark=False):
        out["probe shape, first call s"] = timed(lambda: call(probe))
    return out


def child_floor(model: Path) -> dict:
    """The issue's bare floor: import torch and smp, build the network, one bf16 forward of 16 patches."""
    import segmentation_models_pytorch  # noqa: F401
    import torch

    from geoseg.models.architectures import build_network
    from geoseg.models.card import ModelCard

    card = ModelCard.load(model / "config.json")
    net = build_network(card).eval().cuda().to(memory_format=torch.channels_last)
    x = torch.zeros((BATCH, len(card.bands), card.tile_size, card.tile_size), device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        net(x.contiguous(memory_format=torch.channels_last))
    torch.cuda.synchronize()
    return {}


def child_warm(scenes: list[Path], model: Path, out: Path) -> dict:
    """Each scene twice in this process after a warm-up on the first: warm, then steady."""
    from geoseg.config import RunConfig
    from geoseg.models import load_model
    from geoseg.run import segment_scene

    loaded = load_model(str(model))
    config = RunConfig(model=str(model), device="cuda", overwrite=True, output_format="gtiff", batch_size=BATCH)
    segment_scene(scenes[0], out, config, model=loaded)
    result = {}
    for scene in scenes:
        runs = [segment_scene(scene, out, config, model=loaded).seconds for _ in range(3)]
        result[scene.name] = {"warm s": runs[0], "steady s": statistics.median(runs[1:])}
    return result


def spawn_child(kind: str, *args: str) -> dict:
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", kind, *args], cwd=ROOT,
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{kind} child failed: {proc.stderr.strip()[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed_run(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> tuple[float, str]:
    """Seconds ``cmd`` took and what it printed on stdout; its failure ends the benchmark."""
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()[-3000:]}")
    return seconds, proc.stdout


def wall(cmd: list[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> float:
    return timed_run(cmd, env, cwd)[0]


def wall_json(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, dict]:
    """:func:`wall` of a command run with ``--json``, and the summary it printed (an empty dict where it printed
    none)."""
    seconds, out = timed_run(cmd, env)
    try:
        return seconds, json.loads(out)
    except ValueError:
        return seconds, {}


def geoseg_cmd(scene: Path, out: Path, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "geoseg.cli", "run", str(scene), "-o", str(out), "--model", str(model),
            "--overwrite", "--quiet", "--format", "gtiff", "--batch-size", str(BATCH), *extra]


def same_mask(a: Path, b: Path) -> bool:
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return bool((x.read(1) == y.read(1)).all())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("small", type=Path, nargs="?")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--before", type=Path, help="a folder holding the geoseg package before this work")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--parts", nargs="*", default=["costs", "cold", "warm", "serve"])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-startup"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        result = {"costs": lambda: child_costs(args.model), "floor": lambda: child_floor(args.model),
                  "warm": lambda: child_warm([Path(p) for p in rest], args.model, args.workdir / "warm.tif")}[
            args.child]()
        print(json.dumps(result))
        return

    import torch

    from benchmarks.make_scene import build_scene
    from benchmarks.runbench.common import ensure_weights, table

    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    args.small, args.model = args.small.resolve(), args.model.resolve()
    ensure_weights(args.model)
    large = build_scene(args.small, work / f"s2-{args.size}.tif", args.size)
    scenes = [args.small, large]
    print(f"device: {torch.cuda.get_device_name()}; {os.cpu_count()} CPU cores; {time.strftime('%Y-%m-%d %H:%M')}")
    floor = statistics.median(wall([sys.executable, str(Path(__file__).resolve()), "--child", "floor", "--model",
                                    str(args.model)]) for _ in range(args.rounds))
    print(f"bare floor (fresh process: import torch + smp, build, one bf16 forward of {BATCH} patches): {floor:.2f} s",
          flush=True)

    if "costs" in args.parts:
        from geoseg.engine.costs import break_even

        c = spawn_child("costs", "--model", str(args.model))
        tune_cost = c["first call, cuDNN timing s"] - c["call, heuristics s"]
        tune_saves = (c["call, heuristics s"] - c["call, timed algorithms s"]) / BATCH
        graph_saves = (c["call, timed algorithms s"] - c["call, graph replay s"]) / BATCH
        rows = [[k, f"{v * 1e3:.1f}"] for k, v in c.items()]
        rows.append(["cuDNN timing: break-even patches", str(break_even(tune_cost, tune_saves))])
        rows.append(["graph capture: break-even patches", str(break_even(c["graph capture s"], graph_saves))])
        table(f"one-time costs, batches of {BATCH} (ms)", ("what", "ms"), rows)
        print(json.dumps(c), file=sys.stderr, flush=True)

    cold: dict[str, list[float]] = {}
    if "cold" in args.parts:
        kinds = (["before"] if args.before else []) + ["after, no trace cached", "after, trace cached"]
        for r in range(args.rounds):
            for scene in scenes:
                for kind in kinds:
                    env, cwd = {}, ROOT
                    if kind == "before":  # run from the old checkout: `python -m` imports from the working folder
                        env, cwd = {"GEOSEG_CACHE_DIR": str(work / "cache-before")}, args.before.resolve()
                    elif kind == "after, no trace cached":
                        fresh = work / f"cache-fresh-{r}-{scene.stem}"
                        shutil.rmtree(fresh, ignore_errors=True)
                        env = {"GEOSEG_CACHE_DIR": str(fresh)}
                    else:
                        env = {"GEOSEG_CACHE_DIR": str(work / f"cache-fresh-{r}-{scene.stem}")}
                    seconds = wall(geoseg_cmd(scene, work / "cold.tif", args.model), env, cwd)
                    cold.setdefault(f"{scene.name}: {kind}", []).append(seconds)
                    print(f"cold {scene.name} {kind}: {seconds:.2f} s", file=sys.stderr, flush=True)
        equal = {}
        for scene in scenes:  # the two kinds of cold process, --reproducible: the same mask
            cache = {"GEOSEG_CACHE_DIR": str(work / f"cache-repro-{scene.stem}")}
            shutil.rmtree(cache["GEOSEG_CACHE_DIR"], ignore_errors=True)
            wall(geoseg_cmd(scene, work / "built.tif", args.model, "--reproducible"), cache)
            wall(geoseg_cmd(scene, work / "traced.tif", args.model, "--reproducible"), cache)
            equal[scene.name] = same_mask(work / "built.tif", work / "traced.tif")
        table(f"cold geoseg run, fresh processes (median of {args.rounds} interleaved rounds)",
              ("scene: code", "seconds", "runs"),
              [[k, f"{statistics.median(v):.2f}", ", ".join(f"{x:.2f}" for x in v)] for k, v in cold.items()])
        print(f"--reproducible masks, network built vs trace loaded: {equal}")

    steady = {}
    if "warm" in args.parts:
        steady = spawn_child("warm", "--model", str(args.model), "--workdir", str(work), *map(str, scenes))
        table("warm process (segment_scene)", ("scene", "warm s", "steady s"),
              [[k, f"{v['warm s']:.2f}", f"{v['steady s']:.2f}"] for k, v in steady.items()])

    served: dict[str, list[float]] = {}
    inside: dict[str, list[float]] = {}  # the service's own seconds for each served run
    if "serve" in args.parts:
        env = {"XDG_STATE_HOME": str(work / "state"), "XDG_CONFIG_HOME": str(work / "config")}
        started = wall([sys.executable, "-m", "geoseg.cli", "serve", "start", "--gpus", "1", "--model",
                        str(args.model.resolve())], env)
        try:
            for scene in scenes:
                for k in range(args.rounds + 1):
                    # --json instead of --quiet: the service's own run time beside the client's wall
                    cmd = [c for c in geoseg_cmd(scene, work / "served.tif", args.model) if c != "--quiet"]
                    seconds, summary = wall_json([*cmd, "--json"], env)
                    served.setdefault(scene.name, []).append(seconds)
                    own = summary.get("seconds")
                    if own is not None:
                        inside.setdefault(scene.name, []).append(float(own))
                    print(f"served {scene.name} run {k + 1}: client wall {seconds:.2f} s, the service's run "
                          f"{float('nan') if own is None else float(own):.2f} s; stages "
                          f"{summary.get('stage_seconds')}", flush=True)
            wall(geoseg_cmd(large, work / "served-repro.tif", args.model, "--reproducible"), env)
            wall(geoseg_cmd(large, work / "local-repro.tif", args.model, "--reproducible", "--local"), env)
            same = same_mask(work / "served-repro.tif", work / "local-repro.tif")
        finally:
            wall([sys.executable, "-m", "geoseg.cli", "serve", "stop"], env)
        table(f"through geoseg serve (start took {started:.2f} s; client walls, first run first; the service's "
              f"own seconds for the run inside them)",
              ("scene", "first s", "later s (median)", "the service's run: first s", "later s (median)"),
              [[k, f"{v[0]:.2f}", f"{statistics.median(v[1:]):.2f}",
                f"{inside[k][0]:.2f}" if len(inside.get(k, [])) == len(v) else "",
                f"{statistics.median(inside[k][1:]):.2f}" if len(inside.get(k, [])) == len(v) else ""]
               for k, v in served.items()])
        print(f"--reproducible {large.name}: through the service equals --local: {same}")

    if cold and steady and served:
        small_cold = statistics.median(cold[f"{args.small.name}: after, trace cached"])
        large_cold = statistics.median(cold[f"{large.name}: after, trace cached"])
        large_steady = steady[large.name]["steady s"]
        rows = [["cold small ≤ 1.5x bare floor", f"{small_cold:.2f} s vs {1.5 * floor:.2f} s",
                 str(small_cold <= 1.5 * floor)],
                ["cold large ≤ floor + 1.3x steady", f"{large_cold:.2f} s vs {floor + 1.3 * large_steady:.2f} s",
                 str(large_cold <= floor + 1.3 * large_steady)],
                ["service large ≤ 1.3x steady + 0.5 s",
                 f"{statistics.median(served[large.name][1:]):.2f} s vs {1.3 * large_steady + 0.5:.2f} s",
                 str(statistics.median(served[large.name][1:]) <= 1.3 * large_steady + 0.5)],
                ["service small ≤ 1.0 s", f"{statistics.median(served[args.small.name][1:]):.2f} s",
                 str(statistics.median(served[args.small.name][1:]) <= 1.0)]]
        table("targets (issue 30)", ("target", "measured", "met"), rows)


if __name__ == "__main__":
    main()
