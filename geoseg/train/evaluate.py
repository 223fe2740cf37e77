"""``geoseg evaluate MASK LABELS``: a mask's accuracy against reference labels, window by window.

Both rasters must share a grid. Label values are mapped to the mask's classes by the labels' own class
table (:func:`geoseg.train.labels.open_labels`) matched *by name* to the mask's ``CLASSES``; without
names on both sides, by value. Unlabelled and nodata pixels (in the labels or the mask) are left out.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.errors import ConfigError
from geoseg.io.scene import open_scene
from geoseg.train.labels import open_labels
from geoseg.train.metrics import IGNORE, Accuracy, confusion

#: Rows per window: the mask and labels are never read whole.
WINDOW_ROWS = 1024


def mask_classes(path: Path) -> tuple[str, ...]:
    with rasterio.open(path) as ds:
        tags = ds.tags()
        try:
            names = json.loads(tags.get("CLASSES", "null"))
        except json.JSONDecodeError:
            names = None
        if isinstance(names, list) and names:
            return tuple(str(n) for n in names)
        top = 0
        for _, window in ds.block_windows(1):
            data = ds.read(1, window=window)
            valid = data[data != (ds.nodata if ds.nodata is not None else IGNORE)]
            top = max(top, int(valid.max()) if valid.size else 0)
        return tuple(f"class {v}" for v in range(top + 1))


def evaluate_mask(mask: Path, labels: Path, classes: list | dict | None = None, label_field: str = "class",
                  window_rows: int = WINDOW_ROWS) -> Accuracy:
    scene = open_scene(mask)
    names = mask_classes(mask)
    source, table = open_labels(labels, scene, classes, label_field)
    # label class index -> mask class value, by name where the names meet, else by value
    by_name = {n: i for i, n in enumerate(names)}
    label_names = list(table.values())
    if any(n in by_name for n in label_names):
        remap = np.array([by_name.get(n, IGNORE) for n in label_names] + [IGNORE] * (256 - len(label_names)),
                         np.uint8)
    else:
        values = list(table)
        remap = np.array([v if v < len(names) else IGNORE for v in values] + [IGNORE] * (256 - len(values)), np.uint8)
    if not (remap[: len(label_names)] != IGNORE).any():
        raise ConfigError(f"{labels}: none of its classes ({', '.join(label_names)}) is a class of {mask} "
                          f"({', '.join(names)}); pass --classes to name the label values")
    matrix = np.zeros((len(names), len(names)), np.int64)
    with rasterio.open(mask) as ds:
        nodata = ds.nodata
        for row0 in range(0, ds.height, window_rows):
            rows = min(window_rows, ds.height - row0)
            predicted = ds.read(1, window=Window(0, row0, ds.width, rows))
            if nodata is not None:
                predicted = np.where(predicted == nodata, IGNORE, predicted)
            reference = remap[source.read(row0, 0, rows, ds.width)]
            matrix += confusion(reference, predicted, len(names))
    return Accuracy(matrix, names)
