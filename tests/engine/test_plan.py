"""The plan: blocks own every patch once, and reads cover every file block exactly once."""

from __future__ import annotations

import numpy as np
import pytest

from geoseg.engine.plan import ReadChunking, plan_blocks, plan_layout, plan_reads


@pytest.mark.parametrize("block_shape", [(64, 64), (512, 512), (1, 555), (16, 555), (32, 96)],
                         ids=["tiles-64", "tiles-larger-than-scene", "strips-1", "strips-16", "tiles-32x96"])
@pytest.mark.parametrize("factor", [1, 3])
def test_reads_decode_every_file_block_exactly_once(block_shape, factor) -> None:
    """The read chunks partition the scene, each made of whole file blocks, and every row of blocks
    finds the rows it needs already read and not yet dropped."""
    height, width = 701, 555
    layout = plan_layout(height, width, factor, 64, 16, block_size=128 * factor)
    plan = plan_blocks(layout)
    strips = plan_reads(layout, plan, block_shape, pixel_bytes=12, chunking=ReadChunking(12 * 64 * 64, 100))
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
def test_blocks_own_every_patch_exactly_once(height, width, factor) -> None:
    layout = plan_layout(height, width, factor, 64, 16, block_size=128 * factor)
    owned = [origin for row in plan_blocks(layout) for block in row.blocks for origin in block.origins]
    every = [(layout.rows.origin(k), layout.cols.origin(m))
             for k in range(layout.rows.count) for m in range(layout.cols.count)]
    assert sorted(owned) == sorted(every) and len(set(owned)) == len(owned)
