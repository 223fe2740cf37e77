"""What blended probabilities become on the device: the overview halving, the uncertainty layer, the counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geoseg.engine.labels import mode2x2 as device_mode2x2
from geoseg.io.overviews import mode2x2 as host_mode2x2


@pytest.mark.parametrize("shape", [(256, 300), (255, 301), (1, 1)])
def test_device_halving_equals_the_host_one(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    labels = rng.choice(np.array([0, 1, 2, 3, 255], np.uint8), size=shape)
    padded = np.full((shape[0] + shape[0] % 2, shape[1] + shape[1] % 2), 255, np.uint8)
    padded[: shape[0], : shape[1]] = labels
    np.testing.assert_array_equal(device_mode2x2(torch.from_numpy(labels), 255).numpy(), host_mode2x2(padded, 255))


def test_uncertainty_layer_margin_and_entropy() -> None:
    from geoseg.engine.labels import uncertainty_layer

    probs = torch.tensor([[0.5, 1.0, 1 / 3, 0.2], [0.3, 0.0, 1 / 3, 0.2], [0.2, 0.0, 1 / 3, 0.6]])[:, None, :]
    valid = torch.tensor([[True, True, True, False]])
    margin = uncertainty_layer(probs, valid, "margin")[0, 0].tolist()
    assert margin == [round((1 - 0.2) * 250), 0, 250, 255]  # gap 0.2; sure; a tie; no data
    entropy = uncertainty_layer(probs, valid, "entropy")[0, 0].tolist()
    h = -(0.5 * np.log(0.5) + 0.3 * np.log(0.3) + 0.2 * np.log(0.2)) / np.log(3)
    assert entropy == [round(h * 250), 0, 250, 255]


@pytest.mark.parametrize("num_classes", [1, 3, 12])
def test_counts_per_value_equal_bincount(num_classes) -> None:
    """The GPU's way of counting labels (no read-back of the largest value) gives bincount's counts."""
    from geoseg.engine.labels import counts_per_value
    from geoseg.io.writing import NODATA

    rng = np.random.default_rng(num_classes)
    labels = rng.integers(0, num_classes, size=(64, 96)).astype(np.uint8)
    labels[rng.random(labels.shape) < 0.2] = NODATA
    got = counts_per_value(torch.from_numpy(labels), num_classes)
    assert got.dtype == torch.int64 and got.shape == (256,)
    assert np.array_equal(got.numpy(), np.bincount(labels.ravel(), minlength=256))


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
def test_the_gpu_s_argmax_and_the_cpu_s_pass_per_class_pick_the_same_first_largest(dtype) -> None:
    """The GPU takes ``torch.argmax`` over the class axis, the CPU a pass per class: the same labels, ties (frequent
    in coarse scores and in the blend's integer sums) going to the first class, on the blender's strided layouts."""
    from geoseg.engine.labels import argmax_by_class

    gen = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (5, 7, 6, 9), generator=gen).to(dtype)  # (batch, class, row, col): many ties
    by_class = scores.transpose(0, 1)  # the blender's class-major view of a batch
    expected = torch.from_numpy(np.argmax(by_class.numpy(), axis=0).astype(np.uint8))  # numpy: the first largest
    assert torch.equal(argmax_by_class(by_class), expected)
    assert torch.equal(by_class.argmax(dim=0).to(torch.uint8), expected)  # what argmax_classes runs on a GPU
    assert (expected > 0).any() and (by_class == by_class.amax(dim=0)).sum(dim=0).gt(1).any()  # ties were there
