"""The model protocol every stage works with, and the adapters that bring any network to it.

Max-squares adaptation needs logits on target images and nothing else, so a model is anything
that maps (N, 3, H, W) normalised floats to logits (N, C, h, w) at any stride, optionally with an
auxiliary output for multi-level guidance. `SegModel` is that contract as the loop, the
checkpoints and the export see it:

- `forward(x)` -> main logits at the input size (one tensor: what export traces);
  `forward(x, with_aux=True)` -> (main, aux), aux None for a model without an auxiliary head;
- `arch` (its registry name), `num_classes`, `has_aux`, `spec_dict()` (plain data that, with
  `arch`, rebuilds the module: stored in every checkpoint);
- `is_head(name)`: whether a parameter belongs to a head (which learns `head_lr_mult` x faster);
- `feature_encoder()`: the encoder and how to read its bottleneck features from its output (None
  for a network that names none);
- `set_bn_mode("train" | "frozen")`: BatchNorm with batch statistics and trainable affine (the
  MSL recipe), or as constants. LayerNorm and GroupNorm keep no statistics; they are untouched.

`split_output` reads the output shapes networks give: a tensor, `(main, aux)`, a dict with
`out`/`aux` (torchvision's segmentation models), an object with `.logits` (transformers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from mslseg.runtime.errors import ModelFormatError

BN_MODES = ("train", "frozen")
_NORMS = (_BatchNorm, nn.LayerNorm, nn.GroupNorm)


class SegModel(nn.Module):
    """Base of every trainable model: the protocol above, with the BatchNorm handling shared."""

    arch: str = ""
    bn_mode: str = "train"
    # what the encoder's weights started from, set by the training loop's build_model: "imagenet",
    # "segmentation" (a trained segmenter's), None (random); DAFormer's feature distance needs the first
    encoder_from: str | None = None

    @property
    def num_classes(self) -> int:
        raise NotImplementedError

    @property
    def has_aux(self) -> bool:
        raise NotImplementedError

    def spec_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def is_head(self, name: str) -> bool:
        raise NotImplementedError

    def feature_encoder(self) -> tuple[nn.Module, Any] | None:
        """(encoder module, function of its output -> bottleneck features (N, C, h, w)), for losses on
        the encoder's features (DAFormer's feature distance); None: this network names no encoder."""
        return None

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        """(main, aux) logits at the input size; aux is None for a model without an auxiliary head."""
        return self.forward(x, with_aux=True)

    def set_bn_mode(self, mode: str) -> None:
        """train: batch statistics and trainable affine (the MSL recipe); frozen: BN as constants."""
        if mode not in BN_MODES:
            raise ModelFormatError(f"unknown BatchNorm mode '{mode}'; valid: {', '.join(BN_MODES)}")
        self.bn_mode = mode
        for m in self.modules():
            if isinstance(m, _BatchNorm) and m.affine:  # SyncBatchNorm too, which is no BatchNorm2d
                m.weight.requires_grad_(mode == "train")
                m.bias.requires_grad_(mode == "train")
        self.train(self.training)

    def train(self, mode: bool = True) -> SegModel:
        super().train(mode)
        if self.bn_mode == "frozen":
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def param_groups(self, lr: float, head_lr_mult: float = 10.0, *,
                     norm_decay: bool = True) -> list[dict[str, Any]]:
        """Backbone at `lr`, heads at `head_lr_mult` x lr; frozen parameters left out.

        `norm_decay=False` puts the normalisation layers' parameters in groups of their own with
        no weight decay (SegFormer's recipe)."""
        norms = set() if norm_decay else {id(p) for m in self.modules() if isinstance(m, _NORMS)
                                          for p in m.parameters(recurse=False)}
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {(h, n): [] for h in (False, True) for n in (False, True)}
        for name, p in self.named_parameters():
            if p.requires_grad:
                groups[(self.is_head(name), id(p) in norms)].append(p)
        out = [
            {"params": groups[(False, False)], "lr": lr, "lr_mult": 1.0},
            {"params": groups[(True, False)], "lr": lr * head_lr_mult, "lr_mult": head_lr_mult},
        ]
        if not norm_decay:
            out += [{"params": groups[(False, True)], "lr": lr, "lr_mult": 1.0, "weight_decay": 0.0},
                    {"params": groups[(True, True)], "lr": lr * head_lr_mult, "lr_mult": head_lr_mult,
                     "weight_decay": 0.0}]
        return out


def count_bn(model: nn.Module) -> int:
    """How many BatchNorm layers `model` has: what BN-only adaptation (and `bn` modes) can touch."""
    return sum(isinstance(m, _BatchNorm) for m in model.modules())


def split_output(out: Any, where: str = "the model") -> tuple[Tensor, Tensor | None]:
    """(main, aux) from the output shapes networks give; ModelFormatError for anything else."""
    if isinstance(out, Tensor):
        return out, None
    if isinstance(out, (tuple, list)) and 1 <= len(out) <= 2 and all(
            isinstance(t, Tensor) or t is None for t in out) and isinstance(out[0], Tensor):
        return out[0], out[1] if len(out) == 2 else None
    if isinstance(out, Mapping) and isinstance(out.get("out"), Tensor):
        aux = out.get("aux")
        return out["out"], aux if isinstance(aux, Tensor) else None
    logits = getattr(out, "logits", None)
    if isinstance(logits, Tensor):
        aux = getattr(out, "aux_logits", None)
        return logits, aux if isinstance(aux, Tensor) else None
    raise ModelFormatError(
        f"{where} returned {type(out).__name__}; a segmentation model must return logits (N, C, h, w): "
        "a tensor, (main, aux), a dict with 'out' (and 'aux'), or an object with .logits"
    )


def to_input_size(logits: Tensor, like: Tensor, *, align_corners: bool = False) -> Tensor:
    """Logits at any stride -> bilinearly resized to `like`'s height and width (no-op when equal)."""
    if not torch.jit.is_tracing() and logits.shape[-2:] == like.shape[-2:]:  # traced: resize for any size
        return logits
    return F.interpolate(logits, size=like.shape[-2:], mode="bilinear", align_corners=align_corners)
