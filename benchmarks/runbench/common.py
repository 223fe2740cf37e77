"""What every part of bench_run.py shares: the batch size, model folders, tables."""

from __future__ import annotations

import sys
from pathlib import Path

from geoseg.engine.plan import plan_layout
from geoseg.io.scene import open_scene
from geoseg.models.card import ModelCard

#: Batch size of every timed run and floor.
BATCH = 16


def ensure_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    if weights.exists():
        return
    from safetensors.torch import save_file

    from geoseg.models.architectures import build_network

    net = build_network(ModelCard.load(folder / "config.json"))
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))


def patches_of(scene: Path, card: ModelCard, factor: int) -> int:
    info = open_scene(scene)
    layout = plan_layout(info.height, info.width, factor, card.tile_size, card.overlap)
    return layout.rows.count * layout.cols.count


def differing(a: Path, b: Path) -> float:
    """Share of pixels whose labels differ between two masks."""
    import rasterio

    with rasterio.open(a) as x, rasterio.open(b) as y:
        return float((x.read(1) != y.read(1)).mean())


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(title: str, head: tuple[str, ...], rows: list[list[str]]) -> None:
    print(f"\n{title}\n")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print("| " + " | ".join(row) + " |")
    sys.stdout.flush()


def describe_device() -> str:
    import torch

    return torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU only"
