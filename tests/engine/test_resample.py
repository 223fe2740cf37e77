"""Resampling between the scene's grid and the model's: the phased column interpolation gives the gathers' bits."""

from __future__ import annotations

import pytest
import torch

from geoseg.engine.resample import ColumnPhases, bilinear_taps


def gathered(values: torch.Tensor, width: int, factor: int) -> torch.Tensor:
    c0, c1, ct = (torch.from_numpy(a) for a in bilinear_taps(0, width, factor, values.shape[-1]))
    return values.index_select(-1, c0) * (1 - ct) + values.index_select(-1, c1) * ct


@pytest.mark.parametrize("factor", [2, 3, 4, 7])
@pytest.mark.parametrize("width", [1, 2, 5, 11, 513, 10980])
def test_phases_equal_the_gathers_bit_for_bit(width: int, factor: int) -> None:
    size = -(-width // factor)
    phases = ColumnPhases.of(width, factor, size)
    assert phases is not None
    values = torch.rand(3, 5, size, generator=torch.Generator().manual_seed(width * factor))
    assert torch.equal(phases(values), gathered(values, width, factor))


def test_taps_that_are_not_phases_are_refused() -> None:
    # A model grid narrower than the scene needs: the right edge clips more than one pad column can stand for.
    assert ColumnPhases.of(100, 3, 20) is None
