"""``geoseg train`` on a real scene: accuracy on a spatial hold-out against two baselines on the same
split, and training speed against the network's own forward + backward speed, in one process.

    python benchmarks/bench_train.py IMAGE LABELS --out DIR [--encoder resnet34] [--epochs 40] \
        [--chip-size 128] [--batch-size 32] [--chips-per-epoch 1024] [--device cuda]

1. ``geoseg.train.train`` into ``DIR/landcover`` (a model package), spatial validation on held-out cells.
2. Baselines trained on the same training cells and scored on the same held-out cells: the majority class,
   and a per-pixel random forest (scikit-learn, 100 trees) on the same bands, scaled the same way.
3. Speed: chips per second of the training epochs (after the first; the loader included, validation not)
   against the same network's forward + backward + optimiser step on chips already on the device (same
   batch, chip size, precision): the share is what data loading leaves of the GPU (target >= 70 %).
4. ``geoseg run --model DIR/landcover`` on the whole image: ``DIR/landcover.mask.tif``, and its accuracy
   against all labels (training cells included, so only a sanity check).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.runbench.common import table
from geoseg.config import RunConfig
from geoseg.engine.device import resolve_device
from geoseg.run import segment_scene
from geoseg.train.chips import ChipReader, split_cells
from geoseg.train.evaluate import evaluate_mask
from geoseg.train.metrics import IGNORE, Accuracy, confusion
from geoseg.train.trainer import TrainConfig, _images, _scaling, build_model, train


def pixels(reader: ChipReader, cells: list, limit: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for c in cells:
        x, y = reader.raw(c.image, c.row0, c.col0, c.size, c.size)
        keep = (y != IGNORE).reshape(-1)
        xs.append(x.reshape(x.shape[0], -1)[:, keep].T)
        ys.append(y.reshape(-1)[keep])
    x, y = np.concatenate(xs), np.concatenate(ys)
    if limit and len(y) > limit:
        pick = np.random.default_rng(seed).choice(len(y), limit, replace=False)
        x, y = x[pick], y[pick]
    return x, y


def raw_speed(config: TrainConfig, bands: tuple[str, ...], classes: int, steps: int) -> float:
    """Chips per second of forward + backward + AdamW step on chips already on the device."""
    device = resolve_device(config.device)
    net = build_model(config, len(bands), classes, bands).to(device).train()
    opt = torch.optim.AdamW(net.parameters(), lr=config.learning_rate)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=IGNORE)
    x = torch.randn(config.batch_size, len(bands), config.chip_size, config.chip_size, device=device)
    y = torch.randint(0, classes, (config.batch_size, config.chip_size, config.chip_size), device=device)
    bf16 = device.type == "cuda"

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = loss_fn(net(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(10):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * config.batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("image", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--chip-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--chips-per-epoch", type=int, default=1024)
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(encoder=args.encoder, epochs=args.epochs, batch_size=args.batch_size,
                         chip_size=args.chip_size, chips_per_epoch=args.chips_per_epoch, patience=args.patience,
                         device=args.device, workers=args.workers)
    package = args.out / "landcover"
    started = time.perf_counter()
    summary = train([args.image], [args.labels], package, config, overwrite=True,
                    progress=lambda kind, done, total, v: kind == "epoch" and print(
                        f"epoch {done}: loss {v['loss']:.3f} val mIoU {v['val_miou']:.3f} "
                        f"{v['chips_per_second']:.0f} chips/s", flush=True))
    train_seconds = time.perf_counter() - started

    images, bands, names_table = _images([args.image], [args.labels], config, None, "class")
    names = tuple(names_table.values())
    scaling, _ = _scaling(images[0].scene.dtype, None, None, args.image)
    reader = ChipReader(images, *scaling.factors(images[0].scene.dtype), np.zeros(len(bands)), np.ones(len(bands)))
    train_cells, val_cells, _ = split_cells(images, config.chip_size, config.val_share, config.seed)
    x_train, y_train = pixels(reader, train_cells, 200_000)
    x_val, y_val = pixels(reader, val_cells, None)
    majority = int(np.bincount(y_train, minlength=len(names)).argmax())
    from sklearn.ensemble import RandomForestClassifier

    forest = RandomForestClassifier(n_estimators=100, n_jobs=-1, random_state=0, min_samples_leaf=2)
    t0 = time.perf_counter()
    forest.fit(x_train, y_train)
    rf_seconds = time.perf_counter() - t0
    scored = {
        "majority class": Accuracy(confusion(y_val, np.full_like(y_val, majority), len(names)), names),
        "random forest (per pixel)": Accuracy(confusion(y_val, forest.predict(x_val).astype(np.uint8), len(names)),
                                              names),
    }
    net = summary.validation
    print(f"\nspatial hold-out: {len(train_cells)} training cells, {len(val_cells)} held-out cells of "
          f"{2 * config.chip_size} px; {len(y_val):,} labelled held-out pixels; geoseg train {train_seconds:.1f} s "
          f"({summary.epochs_run} epochs, best {summary.best_epoch}); random forest fit {rf_seconds:.1f} s on "
          f"{len(y_train):,} pixels")
    rows = []
    for i, n in enumerate(names):
        ref = int(scored["majority class"].matrix[i].sum())
        rows.append([n, f"{ref:,}", *(f"{a.iou[i]:.3f}" if not np.isnan(a.iou[i]) else "-" for a in scored.values()),
                     f"{net['classes'][i]['iou']:.3f}" if net["classes"][i]["iou"] is not None else "-"])
    rows.append(["**mean IoU**", "", *(f"{a.mean_iou:.3f}" for a in scored.values()), f"{net['mean_iou']:.3f}"])
    rows.append(["**overall accuracy**", "", *(f"{a.overall:.3f}" for a in scored.values()),
                 f"{net['overall_accuracy']:.3f}"])
    table("per-class IoU on the held-out cells",
          ("class", "held-out px", *scored, f"geoseg train ({args.encoder} U-Net)"), rows)

    epochs = [h.chips_per_second for h in summary.history[1:]] or [summary.history[0].chips_per_second]
    loop = statistics.median(epochs)
    raw = raw_speed(config, bands, len(names), steps=50)
    table("training speed", ("device", "chip / batch", "geoseg train chips/s (median of epochs 2+)",
                             "forward+backward alone chips/s", "share"),
          [[str(resolve_device(args.device)), f"{config.chip_size} / {config.batch_size}", f"{loop:.0f}",
            f"{raw:.0f}", f"{loop / raw:.0%}"]])

    mask = args.out / "landcover.mask.tif"
    t0 = time.perf_counter()
    run = segment_scene(args.image, mask, RunConfig(model=str(package), device=args.device, overwrite=True))
    whole = evaluate_mask(mask, args.labels)
    print(f"\ngeoseg run --model {package.name}: {time.perf_counter() - t0:.1f} s; whole image against all labels "
          f"(training cells included): overall accuracy {whole.overall:.3f}, mean IoU {whole.mean_iou:.3f}; "
          f"class shares {run.class_shares}")


if __name__ == "__main__":
    main()
