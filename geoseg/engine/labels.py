"""What blended probabilities become, per pixel, on the model's device: labels (the first largest class), their
counts, probabilities and uncertainty as uint8 layers, and the labels' overview levels halved. Shared by the
file engine's :class:`geoseg.engine.blender.Blender` and the region engine (:mod:`geoseg.engine.region`).
"""

from __future__ import annotations

import math

import torch

from geoseg.errors import ConfigError
from geoseg.io.writing import NODATA, PROBABILITY_SCALE


def argmax_classes(scores: torch.Tensor) -> torch.Tensor:
    """Index of the first largest of ``(class, row, col)`` scores (any number of trailing axes) as uint8.

    On a GPU, ``torch.argmax`` over the leading axis (two kernels; it too returns the first largest). On the CPU,
    a pass per class: much faster there than ``argmax`` over a leading axis, and the same result for scores that
    are not NaN (the probabilities of a working network, the blend's integer sums).
    """
    if scores.device.type == "cuda":
        return scores.argmax(dim=0).to(torch.uint8)
    return argmax_by_class(scores)


def argmax_by_class(scores: torch.Tensor) -> torch.Tensor:
    """:func:`argmax_classes` a class at a time (the CPU's way)."""
    best, label = scores[0].clone(), torch.zeros(scores.shape[1:], dtype=torch.uint8, device=scores.device)
    for k in range(1, scores.shape[0]):
        better = scores[k] > best
        best = torch.where(better, scores[k], best)
        label.masked_fill_(better, k)
    return label


def label_counts(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Pixels per value (256 of them, int64) of labels that hold classes below ``num_classes`` and NODATA.

    ``torch.bincount`` on the CPU; on a GPU :func:`counts_per_value`, since bincount there reads the largest value
    back to the host first: a wait for the device, which drains the queue of network batches once per strip.
    """
    if labels.device.type != "cuda":
        return torch.bincount(labels.reshape(-1), minlength=256)
    return counts_per_value(labels, num_classes)


def counts_per_value(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """:func:`label_counts` in a reduction per possible value, none of which waits for the device. The counts are
    put together by concatenation: an index from the host (``counts[[...]] = ...``) would be a copy that waits."""
    hits = torch.stack([(labels == v).sum() for v in (*range(num_classes), NODATA)])
    gap, tail = hits.new_zeros(NODATA - num_classes), hits.new_zeros(255 - NODATA)
    return torch.cat([hits[:num_classes], gap, hits[num_classes:], tail])


def quantize(probs: torch.Tensor, valid: torch.Tensor, top: bool) -> torch.Tensor:
    """Probabilities ``(class, row, col)`` as uint8 ``round(p * PROBABILITY_SCALE)`` (0..250), NODATA
    where the scene has no data: ``(1, row, col)`` of the largest when ``top``, else one band per class."""
    picked = probs.amax(dim=0, keepdim=True) if top else probs
    scaled = torch.round(picked.clamp(0, 1) * PROBABILITY_SCALE).to(torch.uint8)
    return torch.where(valid, scaled, NODATA)


def uncertainty_layer(probs: torch.Tensor, valid: torch.Tensor, kind: str) -> torch.Tensor:
    """How unsure blended probabilities ``(class, row, col)`` are, as ``(1, row, col)`` uint8
    ``round(u * PROBABILITY_SCALE)``, NODATA where the scene has no data. ``margin``: u = 1 - (p1 - p2), the two
    likeliest classes' gap taken from 1; ``entropy``: u = -sum(p log p) / log(classes). Both are 0 for a sure
    pixel and 1 for a tie of all (entropy) or of the first two (margin)."""
    classes = probs.shape[0]
    p = probs.clamp(0, 1)
    if classes < 2:
        u = torch.zeros_like(p[0])
    elif kind == "margin":
        top = p.topk(2, dim=0).values
        u = 1 - (top[0] - top[1])
    elif kind == "entropy":
        u = -(p * torch.log(p.clamp_min(1e-12))).sum(dim=0) / math.log(classes)
    else:
        raise ConfigError(f"uncertainty {kind!r} is not one of margin, entropy")
    scaled = torch.round(u.clamp(0, 1) * PROBABILITY_SCALE).to(torch.uint8)
    return torch.where(valid, scaled, NODATA)[None]


def mode2x2(labels: torch.Tensor, nodata: int) -> torch.Tensor:
    """``(row, col)`` -> half the rows and columns (rounded up; odd edges padded with ``nodata``): the
    most frequent valid value of each 2 x 2 cell, ties to the first of top-left, top-right,
    bottom-left, bottom-right; ``nodata`` only where all four are. The device twin of
    :func:`geoseg.io.overviews.mode2x2` (tests/engine/test_labels.py holds them equal)."""
    rows, cols = labels.shape
    if rows % 2 or cols % 2:
        padded = torch.full((rows + rows % 2, cols + cols % 2), nodata, dtype=labels.dtype, device=labels.device)
        padded[:rows, :cols] = labels
        labels = padded
    cells = torch.stack((labels[0::2, 0::2], labels[0::2, 1::2], labels[1::2, 0::2], labels[1::2, 1::2]))
    # how many of its cell's four hold each value (as many kernels for all four as the loop took for one)
    counts = (cells[:, None] == cells[None, :]).sum(dim=1, dtype=torch.uint8) * (cells != nodata)
    best, best_count = cells[0], counts[0]
    for i in range(1, 4):  # the first of the most frequent, in the order of the docstring
        better = counts[i] > best_count
        best = torch.where(better, cells[i], best)
        best_count = torch.maximum(counts[i], best_count)
    return torch.where(best_count == 0, torch.full_like(best, nodata), best)
