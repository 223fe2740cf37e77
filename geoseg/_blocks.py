"""Private helpers for cutting and pasting rectangular regions across dask chunks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Box:
    """A half-open pixel rectangle ``[row0, row1) x [col0, col1)``."""

    row0: int
    row1: int
    col0: int
    col1: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.row1 - self.row0, self.col1 - self.col0

    def intersects(self, other: Box) -> bool:
        return (self.row0 < other.row1 and other.row0 < self.row1
                and self.col0 < other.col1 and other.col0 < self.col1)


def chunk_starts(chunks: tuple[int, ...]) -> np.ndarray:
    """Start of each chunk and the end of the last: ``len(chunks) + 1`` offsets."""
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


def chunks_in(starts: np.ndarray, lo: int, hi: int) -> range:
    """Indexes of the chunks (with ``starts`` from :func:`chunk_starts`) that meet ``[lo, hi)``."""
    first = int(np.searchsorted(starts, lo, side="right")) - 1
    last = int(np.searchsorted(starts, hi, side="left"))
    return range(max(first, 0), min(last, len(starts) - 1))


def paste(out: np.ndarray, out_box: Box, piece: np.ndarray, piece_box: Box, add: bool = False) -> None:
    """Copy (or add) the part of ``piece`` that falls inside ``out``; leading axes are copied whole."""
    r0, r1 = max(out_box.row0, piece_box.row0), min(out_box.row1, piece_box.row1)
    c0, c1 = max(out_box.col0, piece_box.col0), min(out_box.col1, piece_box.col1)
    if r0 >= r1 or c0 >= c1:
        return
    src = piece[..., r0 - piece_box.row0 : r1 - piece_box.row0, c0 - piece_box.col0 : c1 - piece_box.col0]
    dst = (Ellipsis, slice(r0 - out_box.row0, r1 - out_box.row0), slice(c0 - out_box.col0, c1 - out_box.col0))
    if add:
        out[dst] += src
    else:
        out[dst] = src


def assemble(pieces: list[np.ndarray], boxes: list[Box], box: Box) -> np.ndarray:
    """The region ``box`` cut from chunks ``pieces`` that lie at ``boxes`` and together cover it."""
    first = pieces[0]
    out = np.empty((*first.shape[:-2], *box.shape), dtype=first.dtype)
    for piece, piece_box in zip(pieces, boxes, strict=True):
        paste(out, box, piece, piece_box)
    return out
