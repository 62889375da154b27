"""DAFormer's ImageNet feature distance (Hoyer et al. CVPR 2022, section 3.3): on source images,
the student's bottleneck features of thing classes are kept near those of the frozen ImageNet
encoder the run started from, so that self-training does not overwrite what ImageNet taught the
encoder about objects it rarely sees labelled.

    loss = lambda_fd * mean over masked feature pixels of || f_student - f_imagenet ||_2

The mask: the source label pooled to the feature grid, a feature pixel counting where at least
`min_ratio` (DAFormer: 0.75) of the pixels under it are one of `classes` (DAFormer, Cityscapes:
the ten thing classes; no classes: every pixel). A batch without such pixels adds nothing.

It needs the ImageNet encoder, so a run with `method.lambda_fd > 0` must start from one
(`ImageNetEncoder.of`): ImageNet weights imported with `--init-format deeplab-imagenet` /
`torchvision-resnet`, or a SegFormer folder or hub id without a segmentation head (an ImageNet
MiT). Random weights are refused; a segmentation checkpoint's encoder is used where the user asks
for it, and the start line says it is not ImageNet's.

The student's features come from a forward hook on its encoder during the source pass (no second
forward); the frozen copy runs under no_grad in eval mode (ImageNet's BatchNorm statistics), as
DAFormer's. Untested with real ImageNet weights: this project's machines cannot download them.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mslseg.classes import IGNORE_INDEX
from mslseg.runtime.errors import ConfigError

IMAGENET_FORMATS = ("deeplab-imagenet", "torchvision-resnet")  # model.init_format values that bring ImageNet encoders


def encoder_origin(init: str | None, init_format: str | None, headless: bool | None) -> str | None:
    """What the run's encoder starts from: 'imagenet', 'segmentation' (a trained segmenter's), or
    None (random weights). `headless`: a pretrained folder came without a segmentation head."""
    if init is None:
        return None
    if init_format in IMAGENET_FORMATS:
        return "imagenet"
    if init_format is None and headless:
        return "imagenet"
    return "segmentation"


def refuse_without_encoder(origin: str | None, arch: str) -> None:
    """ConfigError where feature distance has no pretrained encoder to keep the student near."""
    if origin is None:
        raise ConfigError(
            "method.lambda_fd (DAFormer's ImageNet feature distance) keeps the encoder near the ImageNet "
            f"encoder the run starts from, but this {arch} starts from random weights; pass ImageNet weights "
            "with --init (--init-format deeplab-imagenet | torchvision-resnet for DeepLab, a MiT folder or "
            "hf:nvidia/mit-b0..b5 for SegFormer), or set method.lambda_fd=0")


class FeatureDistance:
    """The frozen reference encoder and the loss; `arm()` before the student's source forward."""

    def __init__(self, student: nn.Module, *, weight: float, classes: Sequence[int] = (),
                 min_ratio: float = 0.75):
        found = student.feature_encoder()
        if found is None:
            raise ConfigError(f"method.lambda_fd needs an encoder mslseg knows (DeepLab-v2, SegFormer); "
                              f"{getattr(student, 'name', student.arch)} does not name one: set method.lambda_fd=0")
        encoder, self.bottleneck = found
        self.weight, self.min_ratio = weight, min_ratio
        self.classes = torch.tensor(sorted(set(classes)), dtype=torch.long)
        self.reference = copy.deepcopy(encoder).eval().requires_grad_(False)
        self._armed, self._features = False, None
        encoder.register_forward_hook(self._capture)

    def _capture(self, module: nn.Module, args: Any, output: Any) -> None:
        if self._armed:
            self._features = self.bottleneck(output)
            self._armed = False

    def arm(self) -> None:
        """The student's next encoder forward is the source image's: keep its bottleneck features."""
        self._armed, self._features = True, None

    def to(self, device: torch.device) -> FeatureDistance:
        self.reference.to(device)
        return self

    def loss(self, image: Tensor, label: Tensor) -> Tensor:
        """lambda_fd x the masked mean feature distance on the armed source forward (0 without pixels)."""
        student = self._features
        self._features = None
        if student is None:
            raise RuntimeError("FeatureDistance.loss without an armed source forward")
        with torch.no_grad():
            reference = self.bottleneck(self.reference(image)).float()
        distance = (student.float() - reference).norm(dim=1)  # (N, h, w)
        mask = self.mask(label, distance.shape[-2:])
        if not bool(mask.any()):
            return distance.sum() * 0.0  # keeps the graph (DDP: every rank's backward runs alike)
        return self.weight * distance[mask].mean()

    def mask(self, label: Tensor, size: Sequence[int]) -> Tensor:
        """(N, h, w) bool: feature pixels whose area is >= min_ratio one of `classes` (DAFormer's
        downscale_label_ratio; any class when `classes` is empty)."""
        n_cls = int(max(int(label[label != IGNORE_INDEX].max()) + 1 if (label != IGNORE_INDEX).any() else 1,
                        int(self.classes.max()) + 1 if self.classes.numel() else 1))
        valid = label != IGNORE_INDEX
        onehot = F.one_hot(torch.where(valid, label, 0).long(), n_cls).permute(0, 3, 1, 2).float()
        onehot = onehot * valid.unsqueeze(1)
        share = F.adaptive_avg_pool2d(onehot, tuple(size))  # (N, C, h, w): each class's share under a pixel
        top, cls = share.max(dim=1)
        keep = top >= self.min_ratio
        if self.classes.numel():
            keep &= torch.isin(cls, self.classes.to(cls.device))
        return keep

    def state_dict(self) -> dict[str, Tensor]:
        return self.reference.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.reference.load_state_dict(state)


def class_indices(names: Sequence[str], class_names: Sequence[str]) -> tuple[int, ...]:
    """method.fd_classes (names) -> indices in the data's classes; ConfigError for an unknown name."""
    unknown = [n for n in names if n not in class_names]
    if unknown:
        raise ConfigError(f"method.fd_classes names {', '.join(unknown)}, which the data does not have; "
                          f"its classes: {', '.join(class_names)}")
    return tuple(class_names.index(n) for n in names)
