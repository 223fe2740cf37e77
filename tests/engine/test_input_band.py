"""The input band's patch regions: reflected edges put together from runs equal the gather they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.engine.input_band import MAX_RUNS, _gather, _runs
from geoseg.engine.plan import reflect_index


@pytest.mark.parametrize("size", [1, 2, 3, 5, 17, 50])
def test_reflected_footprints_equal_index_select(size) -> None:
    x = torch.randn(3, 4, 50)
    put_together = 0
    for start in range(-60, 60, 7):
        for length in (1, 2, 5, 30, 120):
            index = reflect_index(np.arange(start, start + length), size)
            assert torch.equal(_gather(x, 2, index), x.index_select(2, torch.from_numpy(index))), index
            put_together += _runs(index) is not None
    assert put_together > 0


@pytest.mark.parametrize("index", [[3, 3, 4, 5], [5, 4, 4, 3], [0, 2, 4], [7], [1, 0, 1, 2, 3, 4, 4, 3],
                                   [2, 1, 0, 1, 2, 3]])
def test_any_positions_equal_index_select(index) -> None:
    x, index = torch.randn(2, 9, 3), np.array(index)
    assert torch.equal(_gather(x, 1, index), x.index_select(1, torch.from_numpy(index)))


def test_runs_of_a_reflected_edge() -> None:
    assert _runs(np.array([2, 1, 0, 1, 2, 3])) == [(0, 3, -1), (3, 6, 1)]
    assert _runs(np.arange(4, 9)) == [(0, 5, 1)]
    assert _runs(np.array([0, 1] * (MAX_RUNS + 1))) is None  # a tiny scene reflected many times: gathered
