"""The input rows: pixels developed in slices equal those developed at once, and patch regions' reflected
edges put together from runs equal the gather they replace."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.engine import input_rows
from geoseg.engine.input_rows import MAX_RUNS, InputRows, _gather, _runs
from geoseg.engine.plan import plan_layout, reflect_index
from tests.helpers import tiny_card


@pytest.mark.parametrize("dtype", ["uint16", "int16", "float32"])
def test_pixels_widened_in_slices_develop_as_at_once(monkeypatch, dtype) -> None:
    """The CPU widens a resampled scene's rows a few cells at a time through one reused buffer: every
    cell's mean must come out as from the whole slice (values above 32767, no-data cells and pixels, and a
    partial last cell included)."""
    rng = np.random.default_rng(1)
    rows, cols, f = 100, 71, 3  # 33 whole cells and one of a single row; a partial column of cells too
    pixels = rng.integers(0, 65535 if dtype == "uint16" else 32767, (3, rows, cols)).astype(dtype)
    valid = torch.from_numpy(rng.random((rows, cols)) > 0.1)
    valid[:6, :6] = False  # whole cells without data
    inputs = InputRows(plan_layout(rows, cols, f, 64, 16), tiny_card(), torch.device("cpu"), dtype)
    raw = inputs.transfer(pixels)
    monkeypatch.setattr(input_rows, "WIDEN_ROWS", 6)
    sliced = inputs.developed(raw, valid)
    inputs._widened = None  # the GPU's way: all at once, no reused buffer
    whole = inputs.developed(raw, valid)
    assert sliced.shape == (3, 34, 24) and torch.equal(sliced, whole)


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


@pytest.mark.parametrize(("height", "width", "block"), [(300, 700, 128), (40, 30, 64), (1000, 200, 256)])
def test_every_blocks_region_is_its_footprint_gathered(height, width, block) -> None:
    """:meth:`InputRows.patch_region` cuts the rows to the footprint's span before it reflects them (a block at the
    top or bottom edge no longer copies rows as wide as the scene): every block's region, corners and scenes
    smaller than a patch included, is still the developed rows at its footprint's reflected positions."""
    from geoseg.engine.plan import plan_blocks

    layout = plan_layout(height, width, 1, 64, 16, block_size=block)
    inputs = InputRows(layout, tiny_card(), torch.device("cpu"), "float32")
    inputs.model_rows = torch.randn(3, layout.rows.size, layout.cols.size)
    blocks = [b for row in plan_blocks(layout) for b in row.blocks if b.origins]
    edges = 0
    for b in blocks:
        want = inputs.model_rows.index_select(1, torch.from_numpy(b.src_rows)).index_select(
            2, torch.from_numpy(b.src_cols))
        assert torch.equal(inputs.patch_region(b), want)
        edges += bool(b.src_rows.min() != b.footprint.row0 or b.src_cols.max() != b.footprint.col1 - 1)
    assert edges > 0  # some footprints reach past the scene


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "float32"])
@pytest.mark.parametrize(("scale", "offset", "mean", "std"), [(1.0, 0.0, 0.0, 1.0), (1e-4, 0.0, 0.2, 0.25),
                                                             (1e-4, -0.1, 0.0, 1.0), (-1.0, 0.0, 0.0, 1.0),
                                                             (1.0, 0.0, 0.5, 1.0)])
@pytest.mark.parametrize("factor", [1, 2])
def test_developed_pixels_have_every_steps_bits(dtype, scale, offset, mean, std, factor) -> None:
    """The steps that change no value (times 1, plus 0, minus 0, over 1) are left out of :meth:`InputRows.developed`;
    the pixels keep the bits of ``where(valid, (x * scale + offset - mean) / std, 0)`` step by step, -0.0 included
    (a float scene's -0.0 plus 0 is +0.0, and so is an integer 0 times a negative scale plus 0). At f = 1 integers
    are widened inside the multiply (one pass, not two): the same bits as widening first."""
    from dataclasses import replace

    from geoseg.models.card import Scaling

    rng = np.random.default_rng(3)
    rows, cols = 12, 10
    if dtype == "float32":
        pixels = rng.normal(size=(3, rows, cols)).astype("float32")
        pixels[:, :2] = -0.0
        pixels[0, 2, :3] = [np.inf, -np.inf, 0.0]
    else:
        info = np.iinfo(dtype)
        pixels = rng.integers(info.min, info.max, (3, rows, cols), endpoint=True).astype(dtype)
        pixels[:, :2] = 0
    valid = torch.from_numpy(rng.random((rows, cols)) > 0.2)
    card = replace(tiny_card(), mean=(mean,) * 3, std=(std,) * 3,
                   scaling=Scaling(integer_scale=scale, integer_offset=offset, float_scale=scale))
    inputs = InputRows(plan_layout(rows, cols, factor, 64, 16), card, torch.device("cpu"), dtype)
    raw = inputs.transfer(pixels)
    got = inputs.developed(raw, valid)
    out = torch.full_like(got, 7.0)
    inputs.developed(raw, valid, out=out)
    from geoseg.engine.resample import coarsen

    x, v = coarsen(torch.from_numpy(pixels.astype("float32")), valid, factor)
    s, o = card.scaling.factors(dtype)
    want = torch.where(v, (x * s + o - inputs.mean) / inputs.std, 0.0)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))
    assert torch.equal(out.view(torch.int32), want.view(torch.int32))
    if dtype != "float32":  # an integer scene without nodata or masks: no `where`, the last step into `out`
        every = torch.ones_like(valid)
        inputs.all_valid = True
        got, out = inputs.developed(raw, every), torch.full_like(got, 7.0)
        inputs.developed(raw, every, out=out)
        x, _ = coarsen(torch.from_numpy(pixels.astype("float32")), every, factor)
        want = (x * s + o - inputs.mean) / inputs.std
        assert torch.equal(got.view(torch.int32), want.view(torch.int32))
        assert torch.equal(out.view(torch.int32), want.view(torch.int32))
