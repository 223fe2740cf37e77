"""Training on a chip dataset (issue 33): chips/s of ``geoseg train IMAGES_DIR --labels LABELS_DIR`` against the
same network's own forward + backward speed, in one process.

The dataset is cut from the real scene and its labels, mirrored and repeated to ``--size`` by ``make_scene.py`` so
that the chips' texture and compression are real: ``--size 12288`` gives 2,304 chips of 256² (images/ and labels/
of the same names, the layout of LandCover.ai, DeepGlobe or OpenEarthMap). Then ``geoseg.train.train`` runs on
the two folders (whole chips held out for validation), and the median chips/s of its epochs after the first is
set against ``bench_train.raw_speed`` (forward + backward + optimiser step on chips already on the device):
the share is what reading thousands of small files leaves of the GPU (target >= 70 %).

    python benchmarks/bench_chips.py S2.tif OSM_LABELS.tif --size 12288 --device cuda --workdir /tmp/chips
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import rasterio
from rasterio.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_train import raw_speed
from benchmarks.make_scene import build_scene
from benchmarks.runbench.common import table
from geoseg.engine.device import resolve_device
from geoseg.train.trainer import TrainConfig, _images, train


def cut_chips(image: Path, labels: Path, folder: Path, chip: int) -> int:
    """``folder/images/chip_R_C.tif`` and ``folder/labels/chip_R_C.tif`` for every whole ``chip``-px window."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    count = 0
    with rasterio.open(image) as img, rasterio.open(labels) as lab:
        names = lab.tags().get("CLASSES")
        for row in range(0, img.height - chip + 1, chip):
            for col in range(0, img.width - chip + 1, chip):
                window = Window(col, row, chip, chip)
                for src, sub in ((img, "images"), (lab, "labels")):
                    path = folder / sub / f"chip_{row // chip:04d}_{col // chip:04d}.tif"
                    if path.exists():
                        continue
                    profile = {**src.profile, "width": chip, "height": chip, "transform": src.window_transform(window),
                               "tiled": False, "compress": "deflate", "BIGTIFF": "NO"}
                    profile.pop("blockxsize", None)
                    profile.pop("blockysize", None)
                    with rasterio.open(path, "w", **profile) as dst:
                        dst.write(src.read(window=window))
                        for i, d in enumerate(src.descriptions, start=1):
                            if d:
                                dst.set_band_description(i, d)
                        if sub == "labels" and names:
                            dst.update_tags(CLASSES=names)
                count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--size", type=int, default=12288, help="edge of the mirrored scene the chips are cut from")
    parser.add_argument("--chip", type=int, default=256)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--chips-per-epoch", type=int)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/geoseg-chips"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    big = build_scene(args.image, args.workdir / f"scene-{args.size}.tif", args.size)
    big_labels = build_scene(args.labels, args.workdir / f"labels-{args.size}.tif", args.size)
    with rasterio.open(args.labels) as src, rasterio.open(big_labels, "r+") as dst:
        dst.update_tags(**src.tags())
    started = time.perf_counter()
    chips = cut_chips(big, big_labels, args.workdir / "chips", args.chip)
    print(f"{chips} chips of {args.chip}² in {args.workdir / 'chips'} ({time.perf_counter() - started:.0f} s)")
    config = TrainConfig(encoder=args.encoder, epochs=args.epochs, batch_size=args.batch_size, chip_size=args.chip,
                         chips_per_epoch=args.chips_per_epoch, patience=args.epochs, device=args.device,
                         workers=args.workers)
    images, labels = [args.workdir / "chips" / "images"], [args.workdir / "chips" / "labels"]
    summary = train(images, labels, args.workdir / "model", config, overwrite=True,
                    progress=lambda kind, done, total, v: kind == "epoch" and print(
                        f"epoch {done}: loss {v['loss']:.3f} {v['chips_per_second']:.0f} chips/s", flush=True))
    found, bands, names = _images(images, labels, config, None, "class")
    loop = statistics.median([h.chips_per_second for h in summary.history[1:]] or
                             [summary.history[0].chips_per_second])
    raw = raw_speed(config, bands, len(names), steps=30)
    table(f"training on {len(found)} chip files ({summary.split})", (
        "device", "chip / batch", "geoseg train chips/s (median of epochs 2+)", "forward+backward alone chips/s",
        "share"), [[str(resolve_device(args.device)), f"{args.chip} / {args.batch_size}", f"{loop:.0f}", f"{raw:.0f}",
                    f"{loop / raw:.0%}"]])


if __name__ == "__main__":
    main()
