"""Test-time augmentation: a patch's class probabilities averaged over symmetric copies of it.

Each transform is a symmetry of the square patch (the dihedral group D4: flips and quarter turns). The
network sees the transformed batch, its probabilities are turned back onto the patch's own pixels, and the
copies' probabilities are summed in a fixed order and divided by their number. Each patch's result
depends only on its own pixels, so the blending's exactness contract holds (bit-identical across block,
batch and chunk sizes: tests/engine/test_exactness.py) and the cost is the network's time times the
number of copies.

``flips`` is the patch, its left-right and up-down mirrors and both (x4); ``d4`` adds the four
transposed copies (the quarter turns and the diagonal mirrors, x8), as geoai's 8-fold TTA does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from geoseg.config import TTA_MODES

H, W = -2, -1  # the patch's row and column axes in NCHW


@dataclass(frozen=True)
class Symmetry:
    """Transpose first (rows <-> columns), then mirror rows and / or columns; its own inverse in reverse."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.transpose:
            x = x.transpose(H, W)
        dims = [d for d, on in ((H, self.flip_rows), (W, self.flip_cols)) if on]
        return x.flip(dims) if dims else x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        dims = [d for d, on in ((H, self.flip_rows), (W, self.flip_cols)) if on]
        if dims:
            x = x.flip(dims)
        return x.transpose(H, W) if self.transpose else x


FLIPS = (Symmetry(), Symmetry(flip_cols=True), Symmetry(flip_rows=True), Symmetry(flip_rows=True, flip_cols=True))
#: The copies each ``--tta`` mode averages, the patch itself first, by the names
#: :data:`geoseg.config.TTA_MODES` declares.
TTA: dict[str, tuple[Symmetry, ...]] = dict(zip(TTA_MODES, (
    (Symmetry(),),
    FLIPS,
    FLIPS + tuple(Symmetry(True, s.flip_rows, s.flip_cols) for s in FLIPS),
), strict=True))


def averaged(probabilities: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor,
             mode: str) -> torch.Tensor:
    """``probabilities(batch)`` averaged over ``mode``'s copies of each patch (NCHW in, NKHW float32 out)."""
    copies = TTA[mode]
    total = probabilities(batch)
    if len(copies) == 1:
        return total
    total = total.clone()  # the first result may live in a buffer the next call overwrites
    for symmetry in copies[1:]:
        total += symmetry.inverse(probabilities(symmetry.forward(batch).contiguous()))
    return total / len(copies)
