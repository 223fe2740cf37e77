"""Test-time augmentation on real data (issue 32): what ``--tta flips`` and ``d4`` change and cost.

Two measurements, each printing a table, every row from this one run:

1. **Against labels** (the real scene's OpenStreetMap land-use labels): a small land-use U-Net is trained on
   the scene's left half (``geoseg train``), then run on the right half, which it never saw, with each
   ``--tta``; each mask is scored against the right half's labels (``geoseg evaluate``: overall accuracy and
   kappa over the labelled pixels), with the time of the run and of its network.
Each model runs once untimed first (its export and backend session are made once per process).

2. **The built-in cloud model on the whole scene**: each ``--tta``'s time, its class shares and its agreement
   with the plain run (no cloud labels exist for this scene: agreement, not accuracy).

    python benchmarks/tta.py ../shared/data/sentinel2-t33uuu/S2A_..._10m.tif \\
        ../shared/data/sentinel2-t33uuu/S2A_T33UUU_20170216_osm_landuse_labels_10m.tif --device cpu
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from geoseg import RunConfig, segment_scene
from geoseg.models import load_model
from geoseg.train.evaluate import evaluate_mask

MODES = ("none", "flips", "d4")


def cut(src: Path, out: Path, left: bool) -> Path:
    """The left or right half of ``src`` (all bands, tags and descriptions kept)."""
    with rasterio.open(src) as ds:
        half = ds.width // 2
        window = Window(0, 0, half, ds.height) if left else Window(half, 0, ds.width - half, ds.height)
        profile = {**ds.profile, "width": int(window.width), "height": int(window.height),
                   "transform": ds.window_transform(window)}
        with rasterio.open(out, "w", **profile) as dst:
            dst.write(ds.read(window=window))
            dst.update_tags(**ds.tags())
            for i, d in enumerate(ds.descriptions, start=1):
                if d:
                    dst.set_band_description(i, d)
    return out


def table(title: str, head: tuple[str, ...], rows: list[list[str]]) -> None:
    print(f"\n{title}\n\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scene", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--workdir", type=Path)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="geoseg-tta-"))
    work.mkdir(parents=True, exist_ok=True)
    train_img, train_lab = cut(args.scene, work / "left.tif", True), cut(args.labels, work / "left_labels.tif", True)
    test_img, test_lab = cut(args.scene, work / "right.tif", False), cut(args.labels, work / "right_labels.tif", False)
    package = work / "landuse"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "geoseg.cli", "train", str(train_img), "--labels", str(train_lab), "-o",
                    str(package), "--encoder", args.encoder, "--epochs", str(args.epochs), "--device", args.device,
                    "--overwrite", "--json", "--chip-size", "128"], check=True, capture_output=True)
    print(f"trained {package.name} ({args.encoder}, chips of 128 px, {args.epochs} epochs at most) on the left half in "
          f"{time.perf_counter() - started:.0f} s; device {args.device}")

    landuse = load_model(str(package))
    # warm-up: the backend's export and session are made once per process; each timed run below is warm
    segment_scene(test_img, work / "warmup.tif", RunConfig(device=args.device, overwrite=True, match_resolution=False),
                  model=landuse)
    rows, base = [], None
    for mode in MODES:
        out = work / f"right-{mode}.tif"
        summary = segment_scene(test_img, out, RunConfig(device=args.device, tta=mode, overwrite=True,
                                                         match_resolution=False), model=landuse)
        scored = evaluate_mask(out, test_lab).to_dict()
        with rasterio.open(out) as ds:
            mask = ds.read(1)
        base = mask if base is None else base
        rows.append([mode, f"{summary.seconds:.1f}", f"{summary.model_seconds:.1f}",
                     f"{scored['overall_accuracy']:.4f}", f"{scored['kappa']:.4f}", f"{scored['pixels']:,}",
                     f"{(mask == base).mean():.2%}", f"{summary.seam_share:.2%}"])
    table("land use, right half of the real scene (never trained on), against its OSM labels",
          ("--tta", "run s", "network s", "overall accuracy", "kappa", "labelled pixels", "same as none",
           "seam share"), rows)

    segment_scene(args.scene, work / "warmup.tif", RunConfig(device=args.device, overwrite=True))
    rows, base = [], None
    for mode in MODES:
        out = work / f"cloud-{mode}.tif"
        summary = segment_scene(args.scene, out, RunConfig(device=args.device, tta=mode, overwrite=True))
        with rasterio.open(out) as ds:
            mask = ds.read(1)
        base = mask if base is None else base
        shares = ", ".join(f"{k} {v:.2%}" for k, v in summary.class_shares.items())
        rows.append([mode, f"{summary.seconds:.1f}", f"{summary.model_seconds:.1f}", shares,
                     f"{(mask == base).mean():.2%}", f"{summary.seam_share:.2%}"])
    table("built-in cloud model, the whole real scene", ("--tta", "run s", "network s", "class shares",
                                                         "same as none", "seam share"), rows)
    print(f"\n{np.__name__} {np.__version__}; files in {work}")


if __name__ == "__main__":
    main()
