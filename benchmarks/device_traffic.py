"""The engine's own device work, counted: bytes each tensor op writes outside the network, on any machine.

At f = 1 on a GPU the network is the wall, and what the engine adds on the device (developing rows, cutting
patch regions, growing and dropping its rolling rows, blending, labels) is the rest of the run (issue 35).
This script runs ``segment_scene`` on the CPU (no GPU needed) over a scene made from the real one, the network
replaced by constant probabilities (its own work is the floor, not counted here) and the patches blended as on a
GPU (a batch at a time), and counts under a ``TorchDispatchMode`` the bytes every aten op writes (views and
allocations write nothing; in-place ops and ``out=`` count, indexed adds as much as their source), by op and by the
geoseg line that called it. Where the CPU takes another way than the GPU (the argmax of the labels), its ops
count. A GPU moves these bytes through its memory at about 3 TB/s (H100), so 3 GB is about 1 ms (twice that where
the op reads as much as it writes).

``--before CHECKOUT`` counts the same run with another checkout of geoseg (a ``git worktree``) in a child
process first, the baseline of the table.

    python benchmarks/device_traffic.py SOURCE.tif --size 8192 --before /tmp/geoseg-before
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent


def count(scene: Path, model: str, classes: int) -> dict[str, object]:
    """Bytes written per op (``op``) and per calling geoseg line (``site``) over one run of ``scene`` (module
    docstring), and where this geoseg was imported from (``geoseg``)."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from geoseg.config import RunConfig
    from geoseg.engine import blender
    from geoseg.engine.predictor import Predictor
    from geoseg.run import segment_scene

    root = str(Path(sys.modules["geoseg"].__file__).resolve().parent)
    by_op: Counter[str] = Counter()
    by_site: Counter[str] = Counter()
    inside = [False]

    def constant(self: Predictor, batch: torch.Tensor, net: object) -> torch.Tensor:  # Predictor._softmax
        n, _, t, _ = batch.shape
        inside[0] = True
        try:
            return torch.full((n, classes, t, t), 1.0 / classes)
        finally:
            inside[0] = False

    class Counting(TorchDispatchMode):
        def __torch_dispatch__(self, func: torch._ops.OpOverload, types: tuple, args: tuple = (),
                               kwargs: dict | None = None) -> object:
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if inside[0] or func.is_view or name in _ALLOCATES:
                return out
            source = _SCATTERS.get(name)
            written = sum(t.numel() * t.element_size() for t in _tensors(out if source is None else args[source]))
            if written:
                by_op[name] += written
                site = next((f"{Path(f.filename).relative_to(Path(root).parent)}:{f.lineno}"
                             for f in reversed(traceback.extract_stack()) if f.filename.startswith(root)), "?")
                by_site[site] += written
            return out

    Predictor._softmax = constant
    blender.BATCHED_BLEND = True  # blend as on a GPU
    with tempfile.TemporaryDirectory() as tmp:
        config = RunConfig(device="cpu", model=model, output_format="gtiff", match_resolution=False,
                           batch_size=16)
        with Counting():
            segment_scene(scene, Path(tmp) / "mask.tif", config)
    return {"op": dict(by_op), "site": dict(by_site), "geoseg": root}


#: Indexed in-place ops write as many values as their source holds (the argument at this position), not their whole
#: destination.
_SCATTERS = {"index_add_": 3, "index_copy_": 3, "scatter_": 3, "scatter_add_": 3, "scatter_reduce_": 3,
             "index_put_": 2}
#: Ops that allocate without writing.
_ALLOCATES = frozenset({"empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided"})


def _tensors(out: object) -> list:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for t in out if isinstance(t, torch.Tensor)]
    return []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="a real scene to build the benchmark scene from")
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--model", default="csmask-6b-l1c", help="its card sets the bands, classes and tiling")
    parser.add_argument("--classes", type=int, default=3, help="the model's class count")
    parser.add_argument("--before", type=Path, help="another checkout of geoseg: the baseline")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "geoseg-traffic")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # counted in this process, JSON to stdout
        print(json.dumps(count(args.child, args.model, args.classes)))
        return
    sys.path.insert(0, str(HERE.parent))
    from benchmarks.make_scene import build_scene

    args.workdir.mkdir(parents=True, exist_ok=True)
    scene = args.workdir / f"scene{args.size}.tif"
    if not scene.exists():
        build_scene(args.source, scene, args.size)
    runs = {}
    for label, checkout in (("before", args.before), ("this", HERE.parent)):
        if checkout is None:
            continue
        env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
        done = subprocess.run([sys.executable, __file__, str(args.source), "--child", str(scene), "--model",
                               args.model, "--classes", str(args.classes)], env=env, check=True,
                              capture_output=True, text=True, cwd=checkout)
        runs[label] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"f = 1, {args.size}² scene, {args.model}'s card, network not counted: GB written outside it")
    labels = list(runs)
    for label in labels:
        print(f"{label}: geoseg from {runs[label]['geoseg']}")
    for key in ("op", "site"):
        names = sorted({n for r in runs.values() for n in r[key]}, key=lambda n: -max(r[key].get(n, 0)
                                                                                          for r in runs.values()))
        print(f"\n| {key} | {' | '.join(labels)} |\n|---|{'---|' * len(labels)}")
        for n in names[:20]:
            print(f"| {n} | {' | '.join(f'{runs[x][key].get(n, 0) / 1e9:.2f}' for x in labels)} |")
        print(f"| **all** | {' | '.join(f'**{sum(runs[x][key].values()) / 1e9:.2f}**' for x in labels)} |")


if __name__ == "__main__":
    main()
