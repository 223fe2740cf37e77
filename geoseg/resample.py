"""Moving between the scene's grid and the model's grid (its training resolution).

When a scene is finer than the model by a clear factor ``f`` (Sentinel-2's 10 m bands for a 30 m
model), geoseg averages ``f x f`` cells of valid pixels into one model-grid pixel, infers there,
and brings the blended probabilities back with bilinear interpolation between model-grid pixel
centres. Cells are aligned to the scene's origin, so a block's result never depends on how the
scene is cut into blocks.
"""

from __future__ import annotations

import math

import numpy as np
import torch

#: The scene must be at least this many times finer than the model before geoseg resamples.
MIN_FACTOR = 1.5


def resolution_factor(scene_m: float | None, model_m: float | None) -> int:
    """Integer factor between the model's and the scene's resolution, 1 where none is clear."""
    if not scene_m or not model_m:
        return 1
    ratio = model_m / scene_m
    return round(ratio) if ratio >= MIN_FACTOR else 1


def coarsen(values: torch.Tensor, valid: torch.Tensor, factor: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of the valid pixels of each ``factor x factor`` cell; cells with none are invalid.

    ``values`` is ``(band, row, col)`` float32 starting on a cell boundary and ``valid`` ``(row, col)``
    bool, on any device; the last cell of an axis may be partial.
    """
    if factor == 1:
        return values, valid
    bands, rows, cols = values.shape
    out_r, out_c = math.ceil(rows / factor), math.ceil(cols / factor)
    pad = (0, out_c * factor - cols, 0, out_r * factor - rows)
    weight = torch.nn.functional.pad(valid.to(values.dtype), pad)
    summed = torch.nn.functional.pad(torch.where(valid, values, 0.0), pad)
    summed = summed.reshape(bands, out_r, factor, out_c, factor).sum(dim=(2, 4))
    count = weight.reshape(out_r, factor, out_c, factor).sum(dim=(1, 3))
    return summed / count.clamp(min=1), count > 0


def bilinear_taps(start: int, stop: int, factor: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For scene pixels ``start..stop-1``: the two model-grid pixels around each and the weight of the second.

    Scene pixel ``r`` has its centre at model-grid coordinate ``(r + 0.5) / f - 0.5``; positions
    beyond the first or last model-grid centre take the edge value.
    """
    u = (np.arange(start, stop, dtype=np.float64) + 0.5) / factor - 0.5
    base = np.floor(u)
    t = (u - base).astype(np.float32)
    i0 = np.clip(base.astype(np.int64), 0, size - 1)
    i1 = np.clip(base.astype(np.int64) + 1, 0, size - 1)
    return i0, i1, t
