"""Input sanity: is what the network will receive like what the model was trained on?

Checked before any work, on a sample of windows spread over the scene (never the whole scene): each
input band's mean after scaling against the card's mean and std, the average input against the card's
average (a scaling meant for other pixel values: 8-bit values scaled as 16-bit reflectance, raw DNs),
and the ground resolution against the card's. Each finding is one
warning line; ``--strict-inputs`` turns them into an error. A card with identity normalisation
(mean 0, std 1 for every band: statistics unknown) skips the per-band test.
"""

from __future__ import annotations

import numpy as np

from geoseg.io.scene import SceneInfo, WindowReader
from geoseg.io.threads import default_workers, reader_threads
from geoseg.models import ModelCard

#: How many card standard deviations a band's sampled mean may be from the card's mean.
MAX_DEVIATIONS = 4.0
#: How far the average input (over bands) may be from the card's average, as a ratio: a dark water scene
#: stays inside, 8-bit values scaled as 16-bit reflectance (0.01) or unscaled DNs (1000s) do not.
MAX_RATIO = 10.0
#: Windows sampled (a grid of up to SAMPLES x SAMPLES windows of WINDOW pixels).
SAMPLES, WINDOW = 3, 256


def sample_means(scene: SceneInfo, bands: tuple[int, ...], card: ModelCard, workers: int | None = None
                 ) -> np.ndarray | None:
    """Per input band, the mean value after the card's scaling over the valid pixels of the sample
    windows; None when the sample has no valid pixel.

    The windows are read at once on the process's reader threads (:func:`geoseg.io.threads.reader_threads`,
    ``workers`` of them: the run's own, whose GDAL state is then warm): every run pays this check before its first
    strip, and read one after another the nine windows cost about 0.04 s on the development machine."""
    reader = WindowReader(scene, bands)
    scale, offset = card.scaling.factors(scene.dtype)
    size = min(WINDOW, scene.height), min(WINDOW, scene.width)
    # Spread over the scene, each window starting on a block of the file: a window of a remote COG then fetches
    # one tile, not the four it would straddle.
    block_rows, block_cols = (max(1, b) for b in scene.block_shape)
    rows = [min(r // block_rows * block_rows, scene.height - size[0])
            for r in np.linspace(0, scene.height - size[0], SAMPLES).astype(int)]
    cols = [min(c // block_cols * block_cols, scene.width - size[1])
            for c in np.linspace(0, scene.width - size[1], SAMPLES).astype(int)]
    windows = [(int(r), int(r) + size[0], int(c), int(c) + size[1]) for r in sorted(set(rows))
               for c in sorted(set(cols))]
    threads = reader_threads(workers or default_workers())
    try:
        parts = [f.result() for f in [threads.submit(_window_sums, reader, w) for w in windows]]
    finally:
        threads.finish()
        reader.close()
    sums = np.sum([p[0] for p in parts], axis=0)
    count = sum(p[1] for p in parts)
    if count == 0:
        return None
    return sums / count * scale + offset


def _window_sums(reader: WindowReader, window: tuple[int, int, int, int]) -> tuple[np.ndarray, int]:
    """Per band, the sum of the window's valid values (exact: integers in int64, floats in float64), and how many
    pixels are valid."""
    values, valid = reader.read(*window)
    data = values.reshape(len(values), -1)
    if data.dtype.kind != "f":  # integer samples are finite: no float copy of the window
        if valid is None:
            return data.sum(axis=1, dtype=np.int64).astype(np.float64), data.shape[1]
        keep = valid.reshape(-1)
        return data[:, keep].sum(axis=1, dtype=np.int64).astype(np.float64), int(keep.sum())
    keep = np.isfinite(data).all(axis=0)
    if valid is not None:
        keep &= valid.reshape(-1)
    return data[:, keep].sum(axis=1, dtype=np.float64), int(keep.sum())


def check_inputs(scene: SceneInfo, bands: tuple[int, ...], card: ModelCard, factor: int, workers: int | None = None
                 ) -> list[str]:
    """Warnings (one line each, naming the scene) where the inputs look unlike the model's training data; the sample
    is read on ``workers`` reader threads (:func:`sample_means`)."""
    found: list[str] = []
    identity = all(m == 0 for m in card.mean) and all(s == 1 for s in card.std)
    means = None if identity else sample_means(scene, bands, card, workers)
    if means is not None:
        off = [(name, m, mu, sd) for name, m, mu, sd in zip(card.bands, means, card.mean, card.std, strict=True)
               if abs(m - mu) > MAX_DEVIATIONS * sd]
        if off:
            shown = "; ".join(f"{n} {m:.4g} (model: {mu:.3g} ± {sd:.3g})" for n, m, mu, sd in off[:4])
            scale, offset = card.scaling.factors(scene.dtype)
            found.append(f"{scene.path}: {len(off)} of {len(means)} inputs are far from what model {card.name!r} was "
                         f"trained on, after scaling {scene.dtype} values by {scale:g}"
                         f"{f' + {offset:g}' if offset else ''}: {shown}; check --sensor, --scale and --bands")
        typical, expected = float(np.mean(np.abs(means))), float(np.mean(np.abs(card.mean)))
        if expected > 0 and not 1 / MAX_RATIO <= typical / expected <= MAX_RATIO:
            scale, offset = card.scaling.factors(scene.dtype)
            found.append(f"{scene.path}: values after scaling {scene.dtype} pixels by {scale:g} average {typical:.3g}, "
                         f"but model {card.name!r} was trained on inputs averaging {expected:.3g} "
                         f"({typical / expected:.2g}x): the scaling looks wrong for this scene; "
                         f"name its sensor with --sensor or pass --scale")
    if card.resolution_m and scene.pixel_size_m:
        effective = scene.pixel_size_m * factor
        ratio = effective / card.resolution_m
        if not 0.5 <= ratio <= 2:
            found.append(f"{scene.path}: the model sees {effective:.3g} m pixels but was trained at "
                         f"{card.resolution_m:g} m ({ratio:.2g}x); objects will look "
                         f"{'smaller' if ratio > 1 else 'larger'} than in training"
                         + ("; --match-resolution averages finer scenes to the model's resolution"
                            if ratio < 1 else ""))
    return found
