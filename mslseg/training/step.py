"""One optimisation step of source-supervised, target-adapted training. Methods differ by their
target loss, which their registry entry names (mslseg.methods, `losses.target_loss_fn`), and the
self-training family by its mean teacher (mslseg.training.self_training)."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mslseg.classes import IGNORE_INDEX
from mslseg.losses import multi_level_guidance_loss, target_loss_fn
from mslseg.methods import METHODS
from mslseg.training.config import MethodConfig, OptimConfig
from mslseg.training.feature_distance import FeatureDistance
from mslseg.training.self_training import SelfTrainer


@dataclass
class StepStats:
    iteration: int
    lr: float
    loss_source: float
    loss_source_aux: float = 0.0
    loss_fd: float | None = None  # DAFormer's ImageNet feature distance (method.lambda_fd > 0), weighted
    loss_target: float = 0.0
    loss_guidance: float = 0.0
    # self-training only (absent from metrics.jsonl otherwise)
    loss_pseudo: float | None = None  # the student's weighted CE on ClassMix images
    loss_mic: float | None = None  # MIC's masked-image loss (0 for methods without it)
    confident: float | None = None  # share of target pixels the teacher labels above the threshold
    teacher_alpha: float | None = None  # the teacher's EMA momentum at this step

    @property
    def finite(self) -> bool:
        return all(math.isfinite(v) for v in (self.loss_source, self.loss_source_aux, self.loss_target,
                                                self.loss_guidance, self.loss_pseudo or 0.0, self.loss_mic or 0.0,
                                                self.loss_fd or 0.0))

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD or AdamW (`cfg.optimizer`) with the heads at `head_lr_mult` x the backbone's learning rate."""
    lr = cfg.lr * cfg.lr_scale
    if cfg.norm_decay:  # the two groups DeepLab-v2 has always had
        groups = model.param_groups(lr, cfg.head_lr_mult)
    else:
        groups = model.param_groups(lr, cfg.head_lr_mult, norm_decay=False)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=(cfg.momentum, 0.999), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


WARMUP_RATIO = 1e-6  # DAFormer's (mmcv's) linear warm-up starts at this share of the lr


def set_poly_lr(optimizer: torch.optim.Optimizer, cfg: OptimConfig, iteration: int, total: int,
                warmup: int = 0) -> float:
    """lr = base * (1 - it / total) ** power, per group times its multiplier; returns the base.

    `warmup` > 0: over the first `warmup` iterations the lr rises linearly from 1e-6 x that value
    (mmcv's linear warm-up, as DAFormer trains)."""
    lr = cfg.lr * cfg.lr_scale * (1 - iteration / total) ** cfg.poly_power
    if iteration < warmup:
        lr *= 1 - (1 - WARMUP_RATIO) * (1 - iteration / warmup)
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_mult", 1.0)
    return lr


def adapt_step(model: nn.Module, optimizer: torch.optim.Optimizer, source: dict[str, Tensor],
               target: dict[str, Tensor] | None, method: MethodConfig, *, iteration: int, lr: float,
               device: torch.device, amp_dtype: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None, channels_last: bool = False,
               self_training: SelfTrainer | None = None,
               feature_distance: FeatureDistance | None = None) -> StepStats:
    """Source CE (+ aux CE), then the target loss (+ guidance), one SGD step.

    Two backward passes, as the reference: source and target activations are never held together,
    which halves the peak memory at the paper's crop sizes. Under DDP the first pass skips the
    gradient all-reduce (`no_sync`), so each step communicates once.

    `self_training`: the target pass is the mean teacher's (ClassMix pseudo-labels, MIC), with the
    method's own target loss beside it where it has one (iw-msl+daformer); the teacher follows the
    student after the optimiser step. `feature_distance`: DAFormer's loss on the source pass's
    encoder features, added to the source loss.
    """
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else nullcontext()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    optimizer.zero_grad(set_to_none=True)
    scale = scaler.scale if scaler is not None else (lambda t: t)

    image = source["image"].to(device, non_blocking=True).contiguous(memory_format=fmt)
    label = source["label"].to(device, non_blocking=True)
    sync_later = target is not None and hasattr(model, "no_sync")
    with model.no_sync() if sync_later else nullcontext():
        if feature_distance is not None:
            feature_distance.arm()
        with autocast:
            main, aux = _forward(model, image, with_aux=method.multi_level)
            loss_src = F.cross_entropy(main.float(), label, ignore_index=IGNORE_INDEX)
            loss_aux = (F.cross_entropy(aux.float(), label, ignore_index=IGNORE_INDEX)
                        if aux is not None else torch.zeros((), device=device))
            loss = loss_src + method.lambda_seg * loss_aux
            loss_fd = feature_distance.loss(image, label) if feature_distance is not None else None
            if loss_fd is not None:
                loss = loss + loss_fd
        scale(loss).backward()
    stats = StepStats(iteration, lr, loss_src.item(), loss_aux.item(),
                      loss_fd=loss_fd.item() if loss_fd is not None else None)

    if target is not None:
        image_t = target["image"].to(device, non_blocking=True).contiguous(memory_format=fmt)
        total_t = torch.zeros((), device=device)
        if self_training is not None:
            loss_st, st = self_training.losses(model, image, label, image_t, iteration, autocast)
            total_t = total_t + loss_st
            stats.loss_pseudo, stats.loss_mic, stats.confident = st.loss_pseudo, st.loss_mic, st.confident
        if self_training is None or METHODS[method.target_loss].loss != "none":
            with autocast:
                main_t, aux_t = _forward(model, image_t, with_aux=method.multi_level)
                loss_t = target_loss_fn(method)(main_t)
                loss_g = (multi_level_guidance_loss(main_t, aux_t, method.threshold)
                          if aux_t is not None else torch.zeros((), device=device))
                total_t = total_t + method.lambda_target * loss_t + method.lambda_seg * method.lambda_target * loss_g
            stats.loss_target, stats.loss_guidance = loss_t.item(), loss_g.item()
        # a graph that no parameter needs (method none: BN statistics only) still runs backward
        # so that DDP's all-reduce happens on every rank
        scale(total_t).backward()

    if stats.finite:
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if self_training is not None:
            stats.teacher_alpha = self_training.update(model, iteration)
    return stats


def _forward(model: nn.Module, image: Tensor, *, with_aux: bool) -> tuple[Tensor, Tensor | None]:
    return model(image, with_aux=True) if with_aux else (model(image), None)
