"""Accuracy from a confusion matrix: overall accuracy, Cohen's kappa, per-class IoU, F1, precision, recall.

Rows are the reference (labels), columns the prediction, as in remote-sensing accuracy reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: Label value of pixels that are not scored (unlabelled, nodata).
IGNORE = 255


def confusion(reference: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """``(classes, classes)`` counts of reference row / predicted column over pixels whose reference is a
    class (not :data:`IGNORE`) and whose prediction is one (a mask's nodata 255 is left out too)."""
    keep = (reference < classes) & (predicted < classes)
    index = reference[keep].astype(np.int64) * classes + predicted[keep].astype(np.int64)
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


@dataclass(frozen=True)
class Accuracy:
    matrix: np.ndarray  # reference rows, predicted columns
    names: tuple[str, ...]
    #: How reference classes were matched to the mask's ("value" or "name"); None where not matched (training).
    match: str | None = None
    #: Labelled pixels not in the matrix, by why (each reason with its count, zeros included).
    left_out: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return int(self.matrix.sum())

    @property
    def overall(self) -> float:
        return float(np.trace(self.matrix) / self.total) if self.total else float("nan")

    @property
    def kappa(self) -> float:
        n = self.total
        if not n:
            return float("nan")
        expected = float((self.matrix.sum(0) * self.matrix.sum(1)).sum()) / (n * n)
        return (self.overall - expected) / (1 - expected) if expected < 1 else float("nan")

    def _ratio(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / np.maximum(den, 1), np.nan)

    @property
    def iou(self) -> np.ndarray:
        tp = np.diag(self.matrix).astype(float)
        return self._ratio(tp, self.matrix.sum(0) + self.matrix.sum(1) - tp)

    @property
    def precision(self) -> np.ndarray:
        return self._ratio(np.diag(self.matrix).astype(float), self.matrix.sum(0))

    @property
    def recall(self) -> np.ndarray:
        return self._ratio(np.diag(self.matrix).astype(float), self.matrix.sum(1))

    @property
    def f1(self) -> np.ndarray:
        tp = np.diag(self.matrix).astype(float)
        return self._ratio(2 * tp, self.matrix.sum(0) + self.matrix.sum(1))

    @property
    def mean_iou(self) -> float:
        """Mean IoU over the classes that occur in the reference or the prediction."""
        values = self.iou[~np.isnan(self.iou)]
        return float(values.mean()) if values.size else float("nan")

    def to_dict(self) -> dict:
        def clean(v: float) -> float | None:
            return None if np.isnan(v) else round(float(v), 6)

        return {
            "pixels": self.total, "overall_accuracy": clean(self.overall), "kappa": clean(self.kappa),
            "mean_iou": clean(self.mean_iou),
            "classes": [{"value": i, "name": n, "reference_pixels": int(self.matrix[i].sum()),
                         "predicted_pixels": int(self.matrix[:, i].sum()), "iou": clean(self.iou[i]),
                         "f1": clean(self.f1[i]), "precision": clean(self.precision[i]),
                         "recall": clean(self.recall[i])} for i, n in enumerate(self.names)],
            "confusion_matrix": self.matrix.tolist(),
            # What the matrix's rows and columns are: reference classes down, predicted classes across.
            "confusion_matrix_axes": {"rows": "reference", "columns": "predicted", "labels": list(self.names)},
            **({"match": self.match, "left_out": dict(self.left_out)} if self.match is not None else {}),
        }
