"""Which pixels does a lower precision flip, and how close were they to a tie?

Runs the engine twice on one scene (PyTorch fp32, then bf16, fp16 or fp32 in PyTorch or another
backend), keeping the fp32 run's blended probabilities, and reports the share of pixels whose class
changed and the fp32 margin (top probability minus the runner-up) of those pixels: a precision change
should only flip near-ties.

    python benchmarks/precision.py SCENE.tif --model csmask-6b-l1c --device cpu --against bf16
    python benchmarks/precision.py SCENE.tif --against bf16 --backend openvino
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geoseg.config import RunConfig
from geoseg.engine.blender import Blender
from geoseg.engine.device import resolve_device
from geoseg.engine.input_rows import InputRows
from geoseg.engine.pipeline import run_pipeline
from geoseg.engine.predictor import Predictor
from geoseg.io.scene import WindowReader
from geoseg.io.threads import default_workers
from geoseg.io.writing import NODATA
from geoseg.models import LoadedModel, load_model
from geoseg.prepare import prepare_run


def labels_and_margins(scene_path: Path, loaded: LoadedModel, precision: str, device: str,
                       batch_size: int | None = None, backend: str = "torch") -> tuple[np.ndarray, np.ndarray]:
    """The mask geoseg writes for ``scene_path`` and each pixel's top-two probability margin."""
    # The output is never written: the strips land in memory below.
    prepared = prepare_run(scene_path, Path(tempfile.gettempdir()) / "geoseg-precision.tif",
                           RunConfig(overwrite=True), loaded.card)
    scene, card, layout = prepared.scene, prepared.card, prepared.layout
    predictor = Predictor(loaded.network, resolve_device(device), precision, batch_size,
                          channels=len(card.bands), patch=layout.patch, backend=backend)
    inputs, blender = InputRows(layout, card, predictor.device, scene.dtype), Blender(layout, card, predictor)
    labels = np.empty((scene.height, scene.width), np.uint8)
    margins = np.empty((scene.height, scene.width), np.float32)

    def keep_margin(row0: int, probs: torch.Tensor) -> None:
        top2 = probs.topk(2, dim=0).values
        margins[row0 : row0 + probs.shape[1]] = (top2[0] - top2[1]).cpu().numpy()

    def write(row0: int, strips: dict[str, np.ndarray]) -> None:
        labels[row0 : row0 + len(strips["labels"])] = strips["labels"]

    blender.probe = keep_margin
    run_pipeline(layout, inputs, blender, WindowReader(scene, prepared.bands).read_into, write, default_workers(),
                 block_shape=scene.block_shape)
    return labels, margins


def flip_report(scene_path: Path, loaded: LoadedModel, device: str, against: str = "bf16",
                batch_size: int | None = None, backend: str = "torch") -> dict[str, float]:
    """Share of valid pixels whose class differs between PyTorch fp32 and ``against`` in ``backend``, and
    their fp32 margins."""
    ref, margin = labels_and_margins(scene_path, loaded, "fp32", device, batch_size)
    low, _ = labels_and_margins(scene_path, loaded, against, device, batch_size, backend)
    valid = ref != NODATA
    flipped = valid & (ref != low)
    worst = float(margin[flipped].max()) if flipped.any() else 0.0
    return {"pixels": int(valid.sum()), "flipped": int(flipped.sum()),
            "flipped share": float(flipped.sum() / max(1, valid.sum())),
            "largest fp32 margin flipped": worst,
            "p99 fp32 margin flipped": float(np.quantile(margin[flipped], 0.99)) if flipped.any() else 0.0,
            "pixels within that margin": float((valid & (margin <= worst)).sum() / max(1, valid.sum()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", type=Path)
    parser.add_argument("--model", default="csmask-6b-l1c", help="built-in model name or model folder")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--against", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--backend", default="torch", choices=["torch", "onnxruntime", "openvino"],
                        help="the backend of the run compared with PyTorch fp32")
    args = parser.parse_args()
    report = flip_report(args.scene, load_model(args.model), args.device, args.against, backend=args.backend)
    for key, value in report.items():
        print(f"{key}: {value:.6g}" if isinstance(value, float) else f"{key}: {value}")


if __name__ == "__main__":
    main()
