"""Evaluation over a whole labelled split: one confusion matrix, then IoU per class and mIoU."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import replace

import cv2
import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mslseg.runtime.errors import DataError
from mslseg.training.metrics import Scores, confusion_matrix, scores_from_confusion
from mslseg.training.sampling import unwrap_worker_errors

log = logging.getLogger(__name__)


def resize_labels(pred: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(N, h, w) class ids -> (N, H, W), nearest neighbour with OpenCV: what the runtime does."""
    h, w = int(hw[0]), int(hw[1])
    out = [cv2.resize(p.astype(np.uint16), (w, h), interpolation=cv2.INTER_NEAREST)
           for p in pred.cpu().numpy()]
    return torch.from_numpy(np.stack(out).astype(np.int64))


def protocol_of(dataset: Dataset, amp_dtype: torch.dtype | None = None) -> str:
    """Where `evaluate` runs the model on `dataset` and where it scores, in words.

    The one rule every mIoU line states (training's evaluations, `mslseg evaluate`): two numbers
    agree only under the same protocol. Scoring at the run size (labels resized nearest, the
    MaxSquareLoss reference) and at the labels' own resolution (ADVENT, `mslseg evaluate`'s
    default) differ by a few tenths of a point on Cityscapes.
    """
    augment = getattr(dataset, "augment", None)
    size = getattr(augment, "size", None)
    ran = str(size) if size else "native"
    scored = ran if size and augment.resize_labels else "label resolution"
    amp = f", {str(amp_dtype).removeprefix('torch.')} autocast" if amp_dtype is not None else ""
    return f"model run at {ran}, scored at {scored}{amp}"


@torch.no_grad()
def predict_logits(model: nn.Module, image: torch.Tensor, *, flip: bool = False) -> torch.Tensor:
    """(N, 3, H, W) -> (N, C, H, W) logits; with flip, the mean of the image and its mirror."""
    logits = model(image)
    if flip:
        logits = (logits + model(image.flip(-1)).flip(-1)) / 2
    return logits


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, device: torch.device, num_classes: int,
             class_names: tuple[str, ...], flip: bool = False, batch_size: int = 1, workers: int = 0,
             amp_dtype: torch.dtype | None = None,
             on_batch: Callable[[dict, torch.Tensor], None] | None = None) -> tuple[Scores, torch.Tensor]:
    """Scores (their `protocol` says how, see `protocol_of`) and the (K, K) confusion matrix of `model` on `dataset`.

    Scored at the labels' resolution: where the dataset resized the images only
    (`resize_labels: false`), each prediction is resized to its label (nearest neighbour, as the
    runtime resizes labels back to a frame's size).
    """
    if len(dataset) == 0:
        raise DataError("the evaluation split is empty; check its root, split and list file")
    was_training = model.training
    model.eval()
    conf = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers)
    autocast = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext())
    try:
        for batch in unwrap_worker_errors(loader):
            if "label" not in batch:
                raise DataError("the evaluation split has no labels; give a labelled split")
            image = batch["image"].to(device)
            with autocast:
                logits = predict_logits(model, image, flip=flip)
            pred = logits.float().argmax(1)
            label = batch["label"].to(device)
            if pred.shape[-2:] != label.shape[-2:]:
                pred = resize_labels(pred, label.shape[-2:]).to(device)
            conf += confusion_matrix(pred, label, num_classes)
            if on_batch is not None:
                on_batch(batch, pred.cpu())
    finally:
        model.train(was_training)
    scores = replace(scores_from_confusion(conf, class_names), protocol=protocol_of(dataset, amp_dtype))
    return scores, conf
