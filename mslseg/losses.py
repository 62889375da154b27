"""Target-domain losses of the MSL paper and its baselines: pure functions on logits.

Shapes: logits (B, C, H, W); valid (B, H, W) bool, True where a pixel counts (None: all).
Softmax is taken inside, over dim=1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from mslseg.methods import METHODS

IGNORE_INDEX = 255


def _valid_mask(logits: Tensor, valid: Tensor | None) -> Tensor:
    if valid is None:
        return torch.ones(logits.shape[0], *logits.shape[2:], dtype=torch.bool, device=logits.device)
    if valid.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"valid mask {tuple(valid.shape)} does not match logits {tuple(logits.shape)}")
    return valid.bool()


def max_square_loss(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Maximum Squares Loss (Chen, Xue, Cai, ICCV 2019): -1/2 * mean of p^2 over N, C, H, W.

    The paper writes -1/(2N) sum_n sum_c p^2 over N pixels; the official code also divides by the
    number of classes C (a mean over N, C, H, W). This function uses the official normalisation,
    so the paper's lambda_T = 0.1 carries over. Uniform logits give -1/(2C^2); a one-hot prediction
    gives -1/(2C). Invalid pixels are left out of the mean.
    """
    mask = _valid_mask(logits, valid)
    p = F.softmax(logits.float(), dim=1)
    num = mask.sum() * logits.shape[1]
    sq = (p * p * mask.unsqueeze(1)).sum()
    return -sq / (2 * num.clamp(min=1))


def iw_max_square_loss(logits: Tensor, ratio: float = 0.2, valid: Tensor | None = None) -> Tensor:
    """Image-wise class-balanced max-squares (the MSL paper, Sec. 3.3).

    Per image: N_k = valid pixels whose argmax is class k, N = valid pixels;
    w_k = 1 / max(N_k^ratio * N^(1 - ratio), 1), detached. Each pixel takes the weight of its
    argmax class on all C channels; loss = -sum(w * p^2) / (B * C), i.e. the mean over the batch
    of the per-image losses (the official code is only right at batch size 1). A negative ratio
    (the SYNTHIA recipe) works.
    """
    b, c = logits.shape[:2]
    mask = _valid_mask(logits, valid)
    p = F.softmax(logits.float(), dim=1)
    with torch.no_grad():
        label = p.argmax(dim=1)  # (B, H, W)
        flat = (label + torch.arange(b, device=label.device).view(b, 1, 1) * c)[mask]
        counts = torch.bincount(flat, minlength=b * c).view(b, c).float()  # N_k per image
        n = mask.flatten(1).sum(1, keepdim=True).float()  # N per image
        w = 1.0 / torch.clamp(counts.pow(ratio) * n.pow(1.0 - ratio), min=1.0)  # (B, C)
        pixel_w = torch.gather(w, 1, label.flatten(1)).view_as(label) * mask  # (B, H, W)
    return -(pixel_w.unsqueeze(1) * p * p).sum() / (b * c)


def entropy_loss(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """MinEnt (Vu et al., ADVENT 2019): per-pixel entropy / log C, averaged over valid pixels."""
    mask = _valid_mask(logits, valid)
    logp = F.log_softmax(logits.float(), dim=1)
    ent = -(logp.exp() * logp).sum(1) / math.log(logits.shape[1])
    return (ent * mask).sum() / mask.sum().clamp(min=1)


def multi_level_guidance_loss(main_logits: Tensor, aux_logits: Tensor,
                              threshold: float = 0.95) -> Tensor:
    """Multi-level self-produced guidance (the MSL paper, Sec. 3.4).

    Pseudo-label: argmax of (p_main + p_aux) / 2 where max p_main > threshold or max p_aux >
    threshold, ignored elsewhere; cross-entropy of the aux logits against it, gradients only into
    the aux logits. When no pixel passes, the loss is 0 (the reference code returns NaN there).
    """
    with torch.no_grad():
        p_main = F.softmax(main_logits.float(), dim=1)
        p_aux = F.softmax(aux_logits.float(), dim=1)
        confident = (p_main.amax(1) > threshold) | (p_aux.amax(1) > threshold)
        target = ((p_main + p_aux) / 2).argmax(1)
        target = torch.where(confident, target, torch.full_like(target, IGNORE_INDEX))
    if not bool(confident.any()):
        return aux_logits.sum() * 0.0
    return F.cross_entropy(aux_logits.float(), target, ignore_index=IGNORE_INDEX)


def no_target_loss(logits: Tensor, valid: Tensor | None = None) -> Tensor:
    """Source only: no loss on the target domain."""
    return logits.sum() * 0.0


TARGET_LOSSES: dict[str, Callable[..., Tensor]] = {
    "none": no_target_loss,
    "minent": entropy_loss,
    "msl": max_square_loss,
    "iw-msl": iw_max_square_loss,
}


def target_loss_fn(method: Any) -> Callable[[Tensor], Tensor]:
    """The target loss of `method` (a MethodConfig), with the parameters its registry entry
    (mslseg.methods.METHODS) says it takes bound: logits (B, C, H, W) -> a scalar."""
    entry = METHODS[method.target_loss]
    fn = TARGET_LOSSES[entry.loss]
    kwargs = entry.loss_kwargs(method)
    return partial(fn, **kwargs) if kwargs else fn
