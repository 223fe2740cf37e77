"""One-time costs by the scene's patch count (geoseg.engine.costs): the user's settings win."""

from __future__ import annotations

import torch

from geoseg.engine.costs import GRAPH_MIN_PATCHES, TUNE_MIN_PATCHES, break_even, one_time_costs
from geoseg.engine.predictor import MAX_AUTO_BATCH

CUDA, CPU = torch.device("cuda"), torch.device("cpu")


def _costs(patches: int, device: torch.device = CUDA, **kw: object):
    settings = {"cuda_graphs": None, "batch_size": None, "reproducible": False, **kw}
    return one_time_costs(patches, device, **settings)  # type: ignore[arg-type]


def test_a_small_scene_runs_eagerly_on_heuristics_in_one_batch_of_its_patches() -> None:
    small = _costs(6)
    assert (small.tune, small.cuda_graphs, small.batch_size) == (False, False, 6)
    assert _costs(MAX_AUTO_BATCH + 1).batch_size is None  # more than one batch: the probe sizes it


def test_a_large_scene_pays_for_tuning_and_graphs() -> None:
    large = _costs(max(TUNE_MIN_PATCHES, GRAPH_MIN_PATCHES))
    assert large.tune and large.cuda_graphs and large.batch_size is None
    assert _costs(GRAPH_MIN_PATCHES - 1).cuda_graphs is False


def test_the_users_settings_win() -> None:
    assert _costs(6, cuda_graphs=True).cuda_graphs is True
    assert _costs(10_000, cuda_graphs=False).cuda_graphs is False
    assert _costs(6, batch_size=2).batch_size == 2
    assert _costs(6, reproducible=True).batch_size is None  # --reproducible keeps its one fixed batch size


def test_a_cpu_run_pays_none_of_them() -> None:
    cpu = _costs(10_000, CPU)
    assert not cpu.tune and cpu.cuda_graphs is None and cpu.batch_size is None


def test_break_even() -> None:
    assert break_even(1.0, 0.01) == 100
    assert break_even(1.0, 0.0) is None


def test_a_small_scene_reuses_a_batch_size_the_network_has_run_at() -> None:
    """In a warm process a new shape costs seconds of cuDNN plans and kernels, padding a call milliseconds."""
    assert _costs(6, warm_batches={16}).batch_size == 16
    assert _costs(6, warm_batches={8, 16}).batch_size == 8  # the smallest warm one that holds the scene
    assert _costs(6, warm_batches={4}).batch_size == 6  # none holds it: exactly its patches
    assert _costs(6, warm_batches={16}, batch_size=2).batch_size == 2  # the user's setting wins
    assert _costs(6, warm_batches={16}, reproducible=True).batch_size is None
    assert _costs(MAX_AUTO_BATCH + 1, warm_batches={16}).batch_size is None  # a large scene: the automatic size
    assert _costs(6, CPU, warm_batches={16}).batch_size is None
