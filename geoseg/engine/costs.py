"""One-time costs a GPU run pays only where they repay: decided from the scene's patch count.

Each costs seconds once per process (or per network) and saves a little on every later call:

* **cuDNN's timing** (``cudnn.benchmark``): it times its algorithms for the batch shape before the first
  call; worth it from :data:`TUNE_MIN_PATCHES`. Below, cuDNN's heuristics choose.
* **CUDA-graph capture**: a warm-up pass and a captured one, then each call is one replay instead of
  hundreds of kernel launches; worth it from :data:`GRAPH_MIN_PATCHES`. Captured graphs stay with the
  network for the next scene of a batch or service, which then pays nothing.
* **the batch-size probe**: a forward pass of another shape (new cuDNN plans and kernels) to measure the
  memory a patch takes. A scene of at most :data:`~geoseg.engine.predictor.MAX_AUTO_BATCH` patches is one
  batch, known without probing (out of memory, the predictor halves it): of a batch size the network has
  already run at in this process where there is one that holds the scene (a warm service, a batch's later
  scenes: padding a call costs milliseconds, a new shape seconds: on the lent H100 a 1536 x 768 scene through
  a warm service took 3.96 s at a new batch size and 0.20 s at a warm one, benchmarks/RESULTS.md "Cold start"),
  else of exactly its patches.

The break-evens come from ``benchmarks/one_time_costs.py`` on the lent GPUs (benchmarks/RESULTS.md,
"Start-up"): each is the cost measured once, divided by what it saves per patch, rounded up. A setting
given by the user (``--cuda-graphs``/``--no-cuda-graphs``, ``--batch-size``, ``--reproducible``) wins.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import torch

from geoseg.engine.predictor import MAX_AUTO_BATCH

#: Patches from which cuDNN times its algorithms (benchmarks/one_time_costs.py measured 1101 on the H100,
#: 2026-12-06, a saving within the noise; see module docstring).
TUNE_MIN_PATCHES = 1024
#: Patches from which CUDA graphs are captured when the user has not said: capture 52 ms, a replay 1.2 ms
#: faster than an eager call of 16 patches (H100, 2026-12-06; see module docstring).
GRAPH_MIN_PATCHES = 705


@dataclass(frozen=True)
class OneTimeCosts:
    """What a run pays once: cuDNN timing, CUDA-graph capture, and its batch size (None: probe for it)."""

    tune: bool
    cuda_graphs: bool | None
    batch_size: int | None


def one_time_costs(patches: int, device: torch.device, *, cuda_graphs: bool | None, batch_size: int | None,
                   reproducible: bool, warm_batches: Collection[int] = ()) -> OneTimeCosts:
    """The one-time work a run of ``patches`` patches on ``device`` repays (see module docstring); the
    user's ``cuda_graphs`` and ``batch_size`` win, and ``reproducible`` keeps the fixed batch it needs.
    ``warm_batches``: the batch sizes the network has already run at in this process."""
    if device.type != "cuda":
        return OneTimeCosts(tune=False, cuda_graphs=cuda_graphs, batch_size=batch_size)
    graphs = cuda_graphs if cuda_graphs is not None else patches >= GRAPH_MIN_PATCHES
    batch = batch_size
    if batch is None and not reproducible and patches <= MAX_AUTO_BATCH:
        # one call of the whole scene, nothing to probe for: at a warm batch size where one holds it
        batch = min((b for b in warm_batches if b >= patches), default=max(1, patches))
    return OneTimeCosts(tune=patches >= TUNE_MIN_PATCHES, cuda_graphs=graphs, batch_size=batch)


def break_even(cost_s: float, saved_per_patch_s: float) -> int | None:
    """Patches after which a one-time cost of ``cost_s`` is repaid at ``saved_per_patch_s`` a patch (None:
    it never is)."""
    if saved_per_patch_s <= 0:
        return None
    return math.ceil(cost_s / saved_per_patch_s)
