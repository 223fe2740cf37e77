"""Where a cold ``geoseg run`` spends its seconds (issue 14): a fresh process, phase by phase.

A child process times, from its own start: importing torch; importing segmentation-models-pytorch
(which brings timm, torchvision and, through torchvision.ops, torch._dynamo); the rest of geoseg; the
device's start (CUDA context); building the network and loading its weights; placing it on the device;
the first forward pass of a batch (CUDA loads its kernels lazily, cuDNN picks its algorithms) and a
second one; then ``segment_scene`` three times on the same scene: cold (what is left: the run's own
first-time costs, CUDA graph capture), warm and steady. The parent also times ``python -c pass`` and
``geoseg run`` as a fresh command-line process, interleaved with the children, and prints medians.

    python benchmarks/cold_start.py SCENE.tif --model MODEL_DIR [--device cuda] [--rounds 3]
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def child(scene: Path, model: str, device_name: str, out: Path, batch: int, fmt: str) -> dict[str, float]:
    """The phases of one fresh process, in seconds (run in the child)."""
    spent: dict[str, float] = {}
    clock = STARTED

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        spent[name] = now - clock
        clock = now

    import torch

    lap("import torch")
    import segmentation_models_pytorch  # noqa: F401

    lap("import smp (timm, torchvision, torch._dynamo)")
    sys.path.insert(0, str(ROOT))
    from geoseg.config import RunConfig
    from geoseg.engine.predictor import Predictor
    from geoseg.models import load_model
    from geoseg.run import segment_scene

    lap("import geoseg (the rest)")
    device = torch.device(device_name)
    if device.type == "cuda":
        torch.cuda.init()
        torch.empty(1, device=device)
        torch.cuda.synchronize(device)
    lap("device start (CUDA context)")
    loaded = load_model(model)
    lap("build the network, load its weights")
    card = loaded.card
    predictor = Predictor(loaded.network, device, "auto", batch, channels=len(card.bands), patch=card.tile_size,
                          cuda_graphs=False, tune=False)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    lap("place it on the device")
    zeros = torch.zeros((predictor.batch_size, len(card.bands), card.tile_size, card.tile_size), device=device)
    for name in ("first forward pass (kernels load, cuDNN picks)", "second forward pass"):
        predictor(zeros)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        lap(name)
    del predictor, zeros
    config = RunConfig(model=model, device=device_name, overwrite=True, output_format=fmt, batch_size=batch)
    for name in ("segment_scene, first (graph capture, first-time costs)", "segment_scene, warm",
                 "segment_scene, steady"):
        segment_scene(scene, out, config)
        lap(name)
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", type=Path)
    parser.add_argument("--model", required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--format", default="gtiff", choices=["gtiff", "cog"])
    parser.add_argument("--out", type=Path, default=Path("/tmp/geoseg-cold.tif"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.scene, args.model, args.device, args.out, args.batch_size, args.format)))
        return

    me = [sys.executable, str(Path(__file__).resolve()), str(args.scene), "--model", args.model, "--device",
          args.device, "--batch-size", str(args.batch_size), "--format", args.format, "--out", str(args.out), "--child"]
    cli = [sys.executable, "-m", "geoseg.cli", "run", str(args.scene), "-o", str(args.out), "--model", args.model,
           "--overwrite", "--quiet", "--device", args.device, "--batch-size", str(args.batch_size),
           "--format", args.format]
    phases: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {"python -c pass": [], "geoseg run, fresh process (cold)": [],
                                     "phase child, fresh process": []}
    for _ in range(args.rounds):  # interleaved: the machine's drift hits every kind alike
        for name, cmd in (("python -c pass", [sys.executable, "-c", "pass"]),
                          ("geoseg run, fresh process (cold)", cli), ("phase child, fresh process", me)):
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            walls[name].append(time.perf_counter() - start)
            if proc.returncode:
                raise SystemExit(f"{name} failed: {proc.stderr.strip()[-2000:]}")
            if cmd is me:
                for phase, seconds in json.loads(proc.stdout.strip().splitlines()[-1]).items():
                    phases.setdefault(phase, []).append(seconds)
    print(f"cold start of {args.scene.name} on {args.device}, median of {args.rounds} interleaved rounds")
    print("| step | seconds |\n|---|---|")
    for name, values in [*walls.items(), *phases.items()]:
        print(f"| {name} | {statistics.median(values):.2f} ({', '.join(f'{v:.2f}' for v in values)}) |")
    cold = statistics.median(walls["geoseg run, fresh process (cold)"])
    warm = statistics.median(phases["segment_scene, warm"])
    print(f"cold command / warm run: {cold / warm:.1f}x (target 3x)")


if __name__ == "__main__":
    main()
