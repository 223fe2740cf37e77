"""``geoseg evaluate MASK LABELS``: a mask's accuracy against reference labels, window by window.

Both rasters must share a grid. Reference classes are matched to the mask's classes by **value** (label
value v is mask class v) or by **name** (the labels' class table, :func:`geoseg.train.labels.open_labels`,
against the mask's ``CLASSES``, compared after :func:`normalise`: case, spaces, ``_`` and ``-``, plurals
and a few synonyms such as "shadow" for "cloud shadow"). ``match="auto"`` takes names where both sides
have them, else values. By name, every reference class must find its mask class or the evaluation stops
with one line naming those that do not: numbers a user publishes never drop a class silently. Labelled
pixels that are not counted (the mask has no data there; a label value outside the class table; a value
the mask has no class for) are counted by reason in the result's ``left_out``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from geoseg.errors import ConfigError
from geoseg.io.scene import open_scene
from geoseg.train.labels import RasterLabels, open_labels
from geoseg.train.metrics import IGNORE, Accuracy, confusion

#: Rows per window: the mask and labels are never read whole.
WINDOW_ROWS = 1024
#: How reference classes meet the mask's: ``auto`` (names where both sides have them, else values).
MATCH_MODES = ("auto", "value", "name")
#: Names that mean the same class, after :func:`normalise`'s other steps.
SYNONYMS = {"shadow": "cloud shadow", "cloud shade": "cloud shadow", "clear sky": "clear", "clear land": "clear",
            "built up": "urban", "built": "urban", "settlement": "urban", "waterbody": "water", "water body": "water",
            "open water": "water", "tree": "forest", "tree cover": "forest", "wood": "forest", "woodland": "forest",
            "cropland": "cropland", "crop": "cropland", "agriculture": "cropland", "nodata": "no data"}
#: Why labelled pixels were left out of the matrix (the keys of ``Accuracy.left_out``).
LEFT_OUT = ("the mask has no data or no class there", "label value outside the class table",
            "label class with no mask class")


def normalise(name: str) -> str:
    """A class name as compared by name: lower case, ``_``/``-`` as spaces, single spaces, a plural's
    trailing s dropped from each word, then :data:`SYNONYMS`."""
    words = re.sub(r"[\s_\-]+", " ", name.strip().lower()).split()
    words = [w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words]
    text = " ".join(words)
    return SYNONYMS.get(text, text)


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
                  window_rows: int = WINDOW_ROWS, match: str = "auto") -> Accuracy:
    """``mask`` against ``labels`` (see module docstring)."""
    if match not in MATCH_MODES:
        raise ConfigError(f"--match {match!r} is not one of {', '.join(MATCH_MODES)}")
    scene = open_scene(mask)
    names = mask_classes(mask)
    mask_named = not all(n == f"class {v}" for v, n in enumerate(names))
    source, table = open_labels(labels, scene, classes, label_field)
    label_named = not all(n == f"class {v}" for v, n in table.items())
    if match == "auto":
        match = "name" if mask_named and label_named else "value"
    if match == "name":
        if not (mask_named and label_named):
            side = mask if not mask_named else labels
            raise ConfigError(f"{side}: has no class names to match by; use --match value, or name the label values "
                              f"with --classes")
        by_name = {normalise(n): i for i, n in enumerate(names)}
        unmatched = [n for n in table.values() if normalise(n) not in by_name]
        if unmatched:
            raise ConfigError(f"{labels}: class(es) {', '.join(map(repr, unmatched))} match no class of {mask} "
                              f"({', '.join(names)}); rename them with --classes, or compare by value with --match "
                              f"value")
        targets = [by_name[normalise(n)] for n in table.values()]
    else:
        targets = [v if v < len(names) else IGNORE for v in table]
    remap = np.array(targets + [IGNORE] * (256 - len(targets)), np.uint8)
    if not (remap[: len(targets)] != IGNORE).any():
        raise ConfigError(f"{labels}: none of its classes ({', '.join(table.values())}) is a class of {mask} "
                          f"({', '.join(names)}); pass --classes to name the label values")
    matrix = np.zeros((len(names), len(names)), np.int64)
    left = dict.fromkeys(LEFT_OUT, 0)
    with rasterio.open(mask) as ds:
        nodata = ds.nodata
        for row0 in range(0, ds.height, window_rows):
            rows = min(window_rows, ds.height - row0)
            predicted = ds.read(1, window=Window(0, row0, ds.width, rows))
            if nodata is not None:
                predicted = np.where(predicted == nodata, IGNORE, predicted)
            if isinstance(source, RasterLabels):
                values = source.read_values(row0, 0, rows, ds.width)
                index = source.classes(values)
                left[LEFT_OUT[1]] += int(((index == IGNORE) & source.labelled(values)).sum())
            else:
                index = source.read(row0, 0, rows, ds.width)
            reference = remap[index]
            left[LEFT_OUT[2]] += int(((index != IGNORE) & (reference == IGNORE)).sum())
            left[LEFT_OUT[0]] += int(((reference != IGNORE) & (predicted >= len(names))).sum())
            matrix += confusion(reference, predicted, len(names))
    return Accuracy(matrix, names, match=match, left_out=left)
