"""Confusion matrix and IoU: the segmentation benchmark's scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mslseg.classes import IGNORE_INDEX, SYNTHIA13_CLASSES, SYNTHIA16_CLASSES


def confusion_matrix(pred: Tensor, label: Tensor, num_classes: int) -> Tensor:
    """(K, K) int64 counts, rows = ground truth, columns = prediction; ignore pixels skipped."""
    valid = (label != IGNORE_INDEX) & (label >= 0) & (label < num_classes)
    idx = label[valid].long() * num_classes + pred[valid].long()
    return torch.bincount(idx, minlength=num_classes**2).view(num_classes, num_classes).cpu()


@dataclass(frozen=True)
class Scores:
    class_names: tuple[str, ...]
    iou: tuple[float, ...]  # per class; nan where the class is absent from labels and predictions
    miou: float  # nanmean of iou
    miou13: float | None  # SYNTHIA's mIoU* over 13 classes, when the class set has them
    pixel_acc: float
    protocol: str = ""  # where the model ran and where it was scored, in words

    def to_dict(self) -> dict:
        return {
            "miou": self.miou, "miou13": self.miou13, "pixel_acc": self.pixel_acc,
            "iou": {n: (None if np.isnan(v) else v) for n, v in zip(self.class_names, self.iou, strict=True)},
        }


def scores_from_confusion(conf: Tensor | np.ndarray, class_names: tuple[str, ...]) -> Scores:
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
    iou[union == 0] = np.nan
    miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
    miou13 = None
    if tuple(class_names) == SYNTHIA16_CLASSES:
        sel = [class_names.index(c) for c in SYNTHIA13_CLASSES]
        miou13 = float(np.nanmean(iou[sel]))
    total = conf.sum()
    acc = float(tp.sum() / total) if total else float("nan")
    return Scores(tuple(class_names), tuple(float(v) for v in iou), miou, miou13, acc)
