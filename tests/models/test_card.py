from dataclasses import replace

import pytest

from geoseg.errors import ModelError
from geoseg.models.card import MAX_CLASSES, ClassInfo
from tests.helpers import tiny_card


def test_a_card_with_more_classes_than_a_uint8_mask_holds_is_refused() -> None:
    card = tiny_card()
    classes = tuple(ClassInfo(v, f"c{v}", (v % 256, 0, 0)) for v in range(MAX_CLASSES))
    assert replace(card, classes=classes).num_classes == 255  # values 0..254: 255 stays nodata
    with pytest.raises(ModelError, match=r"256 classes, but masks are uint8 with 255 as nodata"):
        replace(card, classes=(*classes, ClassInfo(255, "one too many", (0, 0, 0))))


def test_class_values_must_run_from_zero() -> None:
    with pytest.raises(ModelError, match=r"class values must be 0..N-1 in order, got \[1, 2\]"):
        replace(tiny_card(), classes=(ClassInfo(1, "a", (0, 0, 0)), ClassInfo(2, "b", (0, 0, 0))))
