"""The mean teacher of self-training (DACS, DAFormer, MIC): an EMA copy of the network and its
pseudo-labels.

Facts from the reference code (vikolss/DACS `trainUDA.py`, lhoyer/DAFormer `mmseg/models/uda/dacs.py`):

- EMA of the *parameters* with alpha_t = min(1 - 1/(t + 1), alpha_max): the true running mean of
  the student's weights until that exceeds alpha_max (DAFormer: alpha_max 0.999, updated at the
  start of step t >= 1, i.e. after t optimiser steps; DACS hard-codes 0.99 in its loop).
- Neither repository averages the BatchNorm buffers: their teacher runs in train mode, so its BN
  normalises each target batch with that batch's own statistics (DACS `ema_model.train()`;
  DAFormer switches only dropout and DropPath off). This teacher runs in eval mode instead and
  *copies* the student's buffers (running mean/var, num_batches_tracked) at each update, which
  is what a teacher that is exported and evaluated needs; `pseudo_label(batch_stats=True)` gives
  the references' behaviour (batch statistics) without touching the stored buffers.
- Confidence weight: the share of a batch's pixels whose max probability is >= 0.968 (the
  reference code uses `ge`), one scalar for the whole batch; here per image by default
  (`per_image=False` pools like the references; with their batch of 2 the two differ little).
  DAFormer zeroes the weight of the top 15 and bottom 120 rows on Cityscapes (the ego car,
  rectification artefacts).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mslseg.classes import IGNORE_INDEX
from mslseg.models.base import split_output

ALPHA_MAX = 0.999  # DAFormer's and MIC's teacher momentum
THRESHOLD = 0.968  # DACS's and DAFormer's pseudo-label confidence threshold


def unwrap(model: nn.Module) -> nn.Module:
    """The module itself under DDP / DataParallel (`.module`) and torch.compile (`._orig_mod`)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):  # torch._dynamo's OptimizedModule
            model = model._orig_mod
        else:
            return model


def ema_alpha(iteration: int, alpha_max: float = ALPHA_MAX) -> float:
    """DACS/DAFormer's schedule: min(1 - 1/(iteration + 1), alpha_max); 0 at iteration 0 (a copy)."""
    return min(1.0 - 1.0 / (iteration + 1), alpha_max)


class EmaTeacher:
    """An exponential moving average of a student network, used only to make pseudo-labels.

    `EmaTeacher(student)` deep-copies the (unwrapped) student: eval mode, no gradients. After each
    optimiser step call `update(student, iteration)` with the number of steps the student has taken
    (the loop's 1-based `iteration`), on every rank: DDP keeps the students identical, so the
    teachers stay identical without communication.
    """

    def __init__(self, student: nn.Module, alpha_max: float = ALPHA_MAX):
        if not 0.0 <= alpha_max < 1.0:
            raise ValueError(f"alpha_max must be in [0, 1), got {alpha_max}")
        self.alpha_max = alpha_max
        self.model = copy.deepcopy(unwrap(student))
        self.model.eval()
        self.model.requires_grad_(False)

    @torch.no_grad()
    def update(self, student: nn.Module, iteration: int) -> float:
        """teacher <- alpha * teacher + (1 - alpha) * student for parameters; buffers copied. Returns alpha."""
        alpha = ema_alpha(iteration, self.alpha_max)
        src = unwrap(student)
        t_params, s_params = list(self.model.parameters()), list(src.parameters())
        if len(t_params) != len(s_params):
            raise ValueError("the student's parameters do not match the teacher's")
        t_float = [t for t in t_params if t.is_floating_point()]
        s_float = [s.detach() for s, t in zip(s_params, t_params, strict=True) if t.is_floating_point()]
        if t_float:
            # lerp(t, s, 1 - alpha) = alpha * t + (1 - alpha) * s, as torch.optim.swa_utils' EMA
            torch._foreach_lerp_(t_float, s_float, 1.0 - alpha)
        for t, s in zip(self.model.buffers(), src.buffers(), strict=True):
            t.copy_(s)
        return alpha

    def state_dict(self) -> dict[str, Tensor]:
        """Plain CPU tensors (for last.pt's training state, loadable with weights_only=True)."""
        return {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.model.load_state_dict(state)

    @torch.no_grad()
    def __call__(self, images: Tensor) -> Tensor:
        """Main logits of the teacher, (N, C, h, w)."""
        return split_output(self.model(images), "the teacher")[0]


@contextlib.contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """BatchNorm layers normalise with the batch's statistics; their stored buffers stay untouched.

    momentum 0 makes train-mode BN keep its running stats (running = 1 * running + 0 * batch);
    num_batches_tracked is restored afterwards.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            tracked = m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None
            saved.append((m, m.training, m.momentum, tracked))
            m.train(True)
            m.momentum = 0.0
    try:
        yield
    finally:
        for m, training, momentum, tracked in saved:
            m.train(training)
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


def confidence_weight(max_prob: Tensor, *, threshold: float = THRESHOLD, ignore_top: int = 0,
                      ignore_bottom: int = 0, per_image: bool = True) -> Tensor:
    """DACS/DAFormer pseudo-label weight as a pixel map.

    max_prob: (N, H, W) the teacher's max softmax probability. Returns (N, H, W) float: each pixel
    of image n weighs the share of image n's pixels with max_prob >= threshold (`per_image=False`:
    the share over the whole batch, as the reference code); the top `ignore_top` and bottom
    `ignore_bottom` rows weigh 0.
    """
    confident = (max_prob >= threshold).float()  # (N, H, W)
    share = confident.mean(dim=(1, 2)) if per_image else confident.mean().expand(max_prob.shape[0])  # (N,)
    weight = share[:, None, None].expand_as(max_prob).clone()  # (N, H, W)
    if ignore_top > 0:
        weight[:, :ignore_top, :] = 0
    if ignore_bottom > 0:
        weight[:, max_prob.shape[1] - ignore_bottom:, :] = 0
    return weight


def pseudo_label_from_logits(logits: Tensor, size: tuple[int, int] | None = None, **weight_kw: Any
                             ) -> tuple[Tensor, Tensor]:
    """(labels (N, H, W) long, weight (N, H, W) float) from teacher logits (N, C, h, w).

    Logits are resized bilinearly to `size` (H, W) when given and different; the softmax is taken
    at that size, as DAFormer's `encode_decode` does. `weight_kw`: see `confidence_weight`.
    """
    logits = logits.detach().float()
    if size is not None and tuple(logits.shape[-2:]) != tuple(size):
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    max_prob, labels = torch.softmax(logits, dim=1).max(dim=1)  # (N, H, W) each
    return labels, confidence_weight(max_prob, **weight_kw)


@torch.no_grad()
def pseudo_label(teacher: EmaTeacher | nn.Module, images: Tensor, *, threshold: float = THRESHOLD,
                 ignore_top: int = 0, ignore_bottom: int = 0, per_image: bool = True,
                 batch_stats: bool = False) -> tuple[Tensor, Tensor]:
    """The teacher's pseudo-labels for target `images` (N, 3, H, W) at the image size.

    Returns labels (N, H, W) long (the argmax of the softmax) and weight (N, H, W) float
    (`confidence_weight`). `batch_stats`: BN with the batch's statistics, as the references'
    train-mode teacher.
    """
    model = teacher.model if isinstance(teacher, EmaTeacher) else teacher
    with batch_statistics(model) if batch_stats else contextlib.nullcontext():
        logits = split_output(model(images), "the teacher")[0]
    return pseudo_label_from_logits(logits, tuple(images.shape[-2:]), threshold=threshold,
                                    ignore_top=ignore_top, ignore_bottom=ignore_bottom, per_image=per_image)


def pseudo_label_loss(logits: Tensor, labels: Tensor, weight: Tensor) -> Tensor:
    """Pixel-weighted cross-entropy (DACS `CrossEntropyLoss2dPixelWiseWeighted`): mean of w * CE.

    logits (N, C, H, W); labels (N, H, W) long, 255 ignored (counts as 0 in the mean, as the
    reference); weight (N, H, W). Mean over all N*H*W pixels.
    """
    ce = F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="none")  # (N, H, W)
    return (ce * weight).mean()
