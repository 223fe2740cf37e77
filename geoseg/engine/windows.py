"""Blend windows: how much each patch pixel counts where patches overlap.

A window is separable, ``w2d[row, col] = w(row) * w(col)``, so the summed weights over the whole
grid are a product of two 1-D sums (see :meth:`geoseg.engine.grid.AxisGrid.weight_sum`). Each entry of
:data:`BLEND_WINDOWS` maps ``(patch, overlap)`` to a strictly positive float64 vector of length
``patch``; strictly positive means every pixel has a defined blended value.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from geoseg.config import BLEND_WINDOW_NAMES
from geoseg.errors import ConfigError

WindowFn = Callable[[int, int], np.ndarray]


def cosine_window(patch: int, overlap: int) -> np.ndarray:
    """Flat centre with sin^2 ramps of ``overlap`` pixels at each end.

    Where two neighbouring patches overlap by exactly ``overlap`` pixels, the falling ramp of one
    and the rising ramp of the next sum to 1 (a partition of unity), so the blend is seamless.
    """
    w = np.ones(patch, dtype=np.float64)
    ramp = min(overlap, patch // 2)
    if ramp:
        rise = np.sin(0.5 * np.pi * (np.arange(ramp) + 0.5) / ramp) ** 2
        w[:ramp] = rise
        w[patch - ramp :] = rise[::-1]
    return w


def gaussian_window(patch: int, overlap: int) -> np.ndarray:
    """Gaussian centred on the patch, sigma = patch / 8 (as MONAI's sliding window default)."""
    del overlap  # the shape depends on the patch only
    centre = (patch - 1) / 2
    sigma = patch / 8
    return np.exp(-0.5 * ((np.arange(patch) - centre) / sigma) ** 2)


def flat_window(patch: int, overlap: int) -> np.ndarray:
    """All ones: overlapping predictions are averaged plainly."""
    del overlap
    return np.ones(patch, dtype=np.float64)


#: Blend windows by the names :data:`geoseg.config.BLEND_WINDOW_NAMES` declares.
BLEND_WINDOWS: dict[str, WindowFn] = dict(zip(BLEND_WINDOW_NAMES, (cosine_window, gaussian_window, flat_window),
                                              strict=True))


def get_window(blend: str | WindowFn, patch: int, overlap: int) -> np.ndarray:
    """The 1-D window for ``blend`` (a name from :data:`BLEND_WINDOWS` or a callable)."""
    if callable(blend):
        fn = blend
    else:
        try:
            fn = BLEND_WINDOWS[blend]
        except KeyError:
            raise ConfigError(
                f"unknown blend window {blend!r}; choose one of {', '.join(BLEND_WINDOWS)}"
            ) from None
    w = np.asarray(fn(patch, overlap), dtype=np.float64)
    if w.shape != (patch,) or not np.all(w > 0):
        raise ConfigError(f"blend window {blend!r} must give {patch} strictly positive weights")
    return w
