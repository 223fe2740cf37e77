"""The plan: blocks own every patch once, and reads cover every file block exactly once."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.engine.plan import ReadChunking, plan_blocks, plan_layout, plan_reads, spread_cols


@pytest.mark.parametrize("block_shape", [(64, 64), (512, 512), (1, 555), (16, 555), (32, 96)],
                         ids=["tiles-64", "tiles-larger-than-scene", "strips-1", "strips-16", "tiles-32x96"])
@pytest.mark.parametrize("factor", [1, 3])
@pytest.mark.parametrize(("last_row_patches", "workers", "grow"), [(0, 0, 1), (1, 3, 1), (1, 3, 2)],
                         ids=["plain", "thin-last-spread", "growing-spread"])
def test_reads_decode_every_file_block_exactly_once(block_shape, factor, last_row_patches, workers, grow) -> None:
    """The read chunks partition the scene, each made of whole file blocks, and every row of blocks
    finds the rows it needs already read and not yet dropped (also with a thin last row of blocks, the
    first strip cut to the reader threads, and rows growing after the first, their strips cut too)."""
    height, width = 701, 555
    layout = plan_layout(height, width, factor, 64, 16, block_size=128 * factor)
    plan = plan_blocks(layout, 1, last_row_patches, grow)
    strips = plan_reads(layout, plan, block_shape, pixel_bytes=12, chunking=ReadChunking(12 * 64 * 64, 100),
                        workers=workers)
    seen = np.zeros((height, width), np.int32)
    bh, bw = min(block_shape[0], height), min(block_shape[1], width)
    for chunk in (c for s in strips for c in s.chunks):
        seen[chunk.row0 : chunk.row1, chunk.col0 : chunk.col1] += 1
        assert chunk.row0 % bh == 0 and chunk.col0 % bw == 0
        assert chunk.row1 % bh == 0 or chunk.row1 == height
        assert chunk.col1 % bw == 0 or chunk.col1 == width
    assert (seen == 1).all()
    if block_shape[0] < height // 4:  # small file blocks: many chunks, so the test means something
        assert sum(len(s.chunks) for s in strips) > 2 * len(plan)
    for i, (row, strip) in enumerate(zip(plan, strips, strict=True)):
        assert strip.need[1] <= strip.rows[1]  # read by the time the row runs
        dropped = strips[i - 1].need[0] if i else 0
        assert dropped <= strip.need[0]  # and not dropped after the previous row
        for block in row.blocks:
            assert strip.need[0] <= block.native.row0 and block.native.row1 <= strip.need[1]


@pytest.mark.parametrize(("height", "width", "factor"), [(37, 53, 1), (701, 555, 1), (701, 555, 3)])
@pytest.mark.parametrize(("first", "last", "grow"), [(2, 0, 1), (1, 1, 1), (3, 2, 1), (1, 30, 1), (1, 0, 2),
                                                    (1, 1, 3)])
def test_blocks_own_every_patch_exactly_once(height, width, factor, first, last, grow) -> None:
    layout = plan_layout(height, width, factor, 64, 16, block_size=128 * factor)
    owned = [origin for row in plan_blocks(layout, first, last, grow) for block in row.blocks
             for origin in block.origins]
    every = [(layout.rows.origin(k), layout.cols.origin(m))
             for k in range(layout.rows.count) for m in range(layout.cols.count)]
    assert sorted(owned) == sorted(every) and len(set(owned)) == len(owned)


@pytest.mark.parametrize(("first", "last", "grow", "rows"), [
    (2, 0, 1, [(0, 96), (96, 224), (224, 352), (352, 480), (480, 608), (608, 701)]),
    (1, 1, 1, [(0, 48), (48, 176), (176, 304), (304, 432), (432, 560), (560, 653), (653, 701)]),
    (1, 30, 1, [(0, 48), (48, 176), (176, 304), (304, 432), (432, 560), (560, 573), (573, 701)]),
    (1, 0, 2, [(0, 48), (48, 144), (144, 272), (272, 400), (400, 528), (528, 656), (656, 701)]),  # 48, 96, block
    (1, 1, 3, [(0, 48), (48, 176), (176, 304), (304, 432), (432, 560), (560, 653), (653, 701)]),  # 144 > block
])
def test_the_first_and_last_rows_of_blocks_are_whole_patch_rows(first, last, grow, rows) -> None:
    """The first row of blocks is ``first`` patch rows (stride 48) high, the rows after it ``grow`` times as high
    as the one before up to a block, the last ``last`` patch rows (one block at most), whole blocks between."""
    layout = plan_layout(701, 555, 1, 64, 16, block_size=128)
    assert [row.core_rows for row in plan_blocks(layout, first, last, grow)] == rows


@pytest.mark.parametrize(("width", "block_cols", "cols", "row_runs", "workers", "expected"), [
    (16384, 512, 1024, 1, 15, 512),  # 32 chunks in 3 rounds of 512 beat 16 in 2 rounds of 1024
    (16384, 512, 1024, 1, 16, 1024),  # one round of 16
    (10980, 512, 1024, 1, 15, 1024),  # 11 chunks, one round: the wider of equals
    (555, 555, 555, 1, 4, 555),  # striped file: one chunk across
])
def test_the_first_strip_is_cut_to_the_reader_threads(width, block_cols, cols, row_runs, workers, expected) -> None:
    assert spread_cols(width, block_cols, cols, row_runs, workers) == expected
