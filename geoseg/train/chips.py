"""Chips for training: windows read from the images and labels as needed, with a spatial split.

Each image is cut into square *cells* of ``2 x chip`` pixels (images smaller than that, as in chip datasets,
into cells as large as the smallest image, at least one chip). A fixed share of the cells, spread over
each image (every k-th cell in a shuffled order from a fixed seed), is held out for validation. Where
the images are too small for that (a chip dataset: most images hold fewer cells than k), whole images
are held out instead, the same share of them, so that validation is never empty while there are two
images. Training chips are drawn at random offsets *inside* training cells, so no training chip touches
a validation pixel; validation chips are the held-out cells' fixed windows. Nothing ever loads a whole
scene.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import rasterio
import torch
from rasterio.windows import Window

from geoseg.io.scene import SceneInfo, nodata_value, valid_from_values
from geoseg.train.labels import RasterLabels, VectorLabels
from geoseg.train.metrics import IGNORE


@dataclass(frozen=True)
class Cell:
    image: int  # index into the training images
    row0: int
    col0: int
    size: int


@dataclass
class TrainImage:
    scene: SceneInfo
    bands: tuple[int, ...]  # 1-based scene bands in the model's input order
    labels: RasterLabels | VectorLabels


#: How :func:`split_cells` held out validation: cells spread over each image, or whole images.
SPLIT_CELLS, SPLIT_IMAGES = "cells within each image", "whole images"


def split_cells(images: list[TrainImage], chip: int, val_share: float, seed: int = 0,
                min_labelled: float = 0.02) -> tuple[list[Cell], list[Cell], str]:
    """Training and validation cells, and how they were split (see module docstring); cells with fewer
    than ``min_labelled`` of their pixels labelled are left out of both."""
    # a cell is two chips wide; images smaller than that (chip datasets of 256² files and --chip-size 256) are one
    # cell each, as large as the smallest of them allows (at least a chip), so that every cell has the same size
    size = max(chip, min(2 * chip, *(min(img.scene.height, img.scene.width) for img in images)))
    rng = np.random.default_rng(seed)
    every = max(2, round(1 / val_share)) if val_share > 0 else 0
    per_image = []
    for i, img in enumerate(images):
        cells = [Cell(i, r, c, size) for r in range(0, img.scene.height - size + 1, size)
                 for c in range(0, img.scene.width - size + 1, size)]
        per_image.append([c for c in cells
                          if (img.labels.read(c.row0, c.col0, size, size) != IGNORE).mean() >= min_labelled])
    with_cells = [i for i, cells in enumerate(per_image) if cells]
    if every and len(with_cells) >= 2 and np.median([len(per_image[i]) for i in with_cells]) < every:
        order = rng.permutation(with_cells)
        held = set(order[: min(len(order) - 1, max(1, round(len(order) * val_share)))].tolist())
        train = [c for i in with_cells if i not in held for c in per_image[i]]
        val = [c for i in with_cells if i in held for c in per_image[i]]
        return train, val, SPLIT_IMAGES
    train, val = [], []
    for cells in per_image:
        order = rng.permutation(len(cells))
        for rank, k in enumerate(order):
            (val if every and rank % every == every - 1 else train).append(cells[k])
    if every and not val and len(train) >= 2:  # images of fewer than `every` cells each: still one to validate on
        val.append(train.pop(int(rng.integers(len(train)))))
    return train, val, SPLIT_CELLS


class ChipReader:
    """Reads one chip (inputs scaled and normalised, labels as class indexes) from an image's window."""

    def __init__(self, images: list[TrainImage], scale: float, offset: float, mean: np.ndarray, std: np.ndarray):
        self.images = images
        self.scale, self.offset = scale, offset
        self.mean = mean.reshape(-1, 1, 1).astype(np.float32)
        self.std = std.reshape(-1, 1, 1).astype(np.float32)
        self._open: dict[int, rasterio.DatasetReader] = {}

    def raw(self, image: int, row0: int, col0: int, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        """Scaled (not normalised) inputs ``(band, row, col)`` float32 and class indexes (IGNORE where the
        image has no data)."""
        img = self.images[image]
        ds = self._open.get(image)
        if ds is None:
            ds = self._open[image] = rasterio.open(img.scene.path)
        values = ds.read(list(img.bands), window=Window(col0, row0, cols, rows))
        valid = valid_from_values(values, nodata_value(img.scene))
        labels = img.labels.read(row0, col0, rows, cols).copy()
        labels[~valid] = IGNORE
        x = values.astype(np.float32) * self.scale + self.offset
        x[:, ~valid] = 0
        return np.nan_to_num(x), labels

    def chip(self, image: int, row0: int, col0: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        x, y = self.raw(image, row0, col0, size, size)
        return (x - self.mean) / self.std, y

    def __getstate__(self) -> dict:  # DataLoader workers open their own datasets
        return {**self.__dict__, "_open": {}}


class TrainChips(torch.utils.data.Dataset):
    """``length`` random chips per epoch inside the training cells, with flips and 90° rotations.

    Index ``epoch * length + i`` is chip ``i`` of ``epoch`` (seeded by both), so loader processes that
    live across epochs (``persistent_workers``) draw new chips each epoch: :class:`EpochSampler` hands
    out one epoch's indexes.
    """

    def __init__(self, reader: ChipReader, cells: list[Cell], chip: int, length: int, seed: int = 0):
        self.reader, self.cells, self.chip, self.length, self.seed = reader, cells, chip, length, seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, i = divmod(index, self.length)
        rng = np.random.default_rng((self.seed, epoch, i))
        cell = self.cells[rng.integers(len(self.cells))]
        room = cell.size - self.chip
        r, c = cell.row0 + int(rng.integers(room + 1)), cell.col0 + int(rng.integers(room + 1))
        x, y = self.reader.chip(cell.image, r, c, self.chip)
        k = int(rng.integers(4))
        x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
        if rng.integers(2):
            x, y = x[:, :, ::-1], y[:, ::-1]
        return torch.from_numpy(x.copy()), torch.from_numpy(y.astype(np.int64))


class EpochSampler(torch.utils.data.Sampler[int]):
    """The indexes of :class:`TrainChips` for ``self.epoch`` (set by the training loop before each epoch)."""

    def __init__(self, length: int):
        self.length, self.epoch = length, 0

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        return iter(range(self.epoch * self.length, (self.epoch + 1) * self.length))


class ValChips(torch.utils.data.Dataset):
    """The held-out cells, whole, in a fixed order."""

    def __init__(self, reader: ChipReader, cells: list[Cell]):
        self.reader, self.cells = reader, cells

    def __len__(self) -> int:
        return len(self.cells)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        c = self.cells[i]
        x, y = self.reader.chip(c.image, c.row0, c.col0, c.size)
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))


def band_statistics(reader: ChipReader, cells: list[Cell], limit: int = 64, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-band mean and std after scaling, and per-class pixel counts, from up to ``limit`` training cells."""
    rng = np.random.default_rng(seed)
    picked = [cells[k] for k in rng.permutation(len(cells))[:limit]]
    s1 = s2 = None
    n = 0
    counts = np.zeros(IGNORE, np.int64)
    for c in picked:
        x, y = reader.raw(c.image, c.row0, c.col0, c.size, c.size)
        keep = y != IGNORE
        flat = x.reshape(x.shape[0], -1)[:, keep.reshape(-1)].astype(np.float64)
        s1 = flat.sum(1) if s1 is None else s1 + flat.sum(1)
        s2 = (flat**2).sum(1) if s2 is None else s2 + (flat**2).sum(1)
        n += flat.shape[1]
        counts += np.bincount(y[keep].ravel(), minlength=IGNORE)[:IGNORE]
    mean = s1 / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 1e-12))
    return mean, np.maximum(std, 1e-6), counts
