"""DeepLab-v2 (Chen et al. 2017) as used by AdaptSegNet, ADVENT and MaxSquareLoss.

A Caffe-style ResNet, an ASPP classifier on layer4 (the main head) and, for the multi-level
variant, a second one on layer3 (the auxiliary head). `forward(x)` returns the main logits at the
input resolution, one tensor, so the model exports as it is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from mslseg.architectures import DEEPLAB_OPTIONS, ModelRef
from mslseg.models.base import SegModel
from mslseg.models.resnet import BACKBONES, ResNetBackbone, init_backbone
from mslseg.runtime.errors import ModelFormatError

ASPP_DILATIONS = (6, 12, 18, 24)


class ASPPClassifier(nn.Module):
    """Parallel dilated 3x3 convs to class scores, summed.

    The released AdaptSegNet/MaxSquareLoss classifier returns inside its summing loop, so it adds
    only the first two branches (dilations 6 and 12); `branches=2` reproduces that model exactly.
    """

    def __init__(self, in_channels: int, num_classes: int, branches: int = 4) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d, bias=True)
            for d in ASPP_DILATIONS
        )
        self.branches = branches
        for conv in self.convs:
            nn.init.normal_(conv.weight, 0.0, 0.01)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        out = self.convs[0](x)
        for conv in self.convs[1 : self.branches]:
            out = out + conv(x)
        return out


@dataclass(frozen=True)
class ModelSpec:
    """What builds a model; stored in every checkpoint."""

    backbone: str = DEEPLAB_OPTIONS["backbone"]  # resnet101 (the paper's) | resnet50 | resnet18
    num_classes: int = 19
    multi_level: bool = True  # an auxiliary head on layer3
    branches: int = DEEPLAB_OPTIONS["branches"]  # ASPP branches summed; 2 reproduces the released MSL checkpoints

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ModelFormatError(
                f"unknown backbone '{self.backbone}'; valid: {', '.join(BACKBONES)}"
            )
        if not 1 <= self.branches <= len(ASPP_DILATIONS):
            raise ModelFormatError(f"branches must be 1..4, got {self.branches}")
        if self.num_classes < 1:
            raise ModelFormatError(f"num_classes must be >= 1, got {self.num_classes}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ModelFormatError(f"unknown model spec keys {sorted(unknown)}")
        return cls(**d)


class DeepLabV2(SegModel):
    arch = "deeplabv2"

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = ResNetBackbone(spec.backbone)
        init_backbone(self.backbone)
        self.head_main = ASPPClassifier(self.backbone.out_channels, spec.num_classes, spec.branches)
        self.head_aux = (
            ASPPClassifier(self.backbone.aux_channels, spec.num_classes, spec.branches)
            if spec.multi_level
            else None
        )
        self.bn_mode = "train"

    @property
    def num_classes(self) -> int:
        return self.spec.num_classes

    @property
    def has_aux(self) -> bool:
        return self.spec.multi_level

    @property
    def name(self) -> str:
        return ModelRef.name_of(self.arch, backbone=self.spec.backbone)

    def spec_dict(self) -> dict[str, Any]:
        return self.spec.to_dict()

    def is_head(self, name: str) -> bool:
        return name.startswith("head_")

    def feature_encoder(self) -> tuple[nn.Module, Any]:
        return self.backbone, _layer4  # the ResNet's last stage: what the main head sees

    def forward(self, x: Tensor, with_aux: bool = False) -> Tensor | tuple[Tensor, Tensor | None]:
        """(N, 3, H, W) normalised -> (N, C, H, W) main logits at the input size.

        `with_aux=True` (training, also through DistributedDataParallel) returns (main, aux); aux
        is None for a single-level model. The default keeps one output for export.
        """
        f3, f4 = self.backbone(x)
        main = _upsample(self.head_main(f4), x)
        if not with_aux:
            return main
        aux = _upsample(self.head_aux(f3), x) if self.head_aux is not None else None
        return main, aux


def _layer4(features: tuple[Tensor, Tensor]) -> Tensor:
    return features[1]


def _upsample(logits: Tensor, like: Tensor) -> Tensor:
    # align_corners=True to match the reference models' interpolation
    return F.interpolate(logits, size=like.shape[-2:], mode="bilinear", align_corners=True)


def deeplabv2(backbone: str = ModelSpec.backbone, *, num_classes: int = 19, multi_level: bool = True,
              branches: int = ModelSpec.branches) -> DeepLabV2:
    """Build a DeepLab-v2 with randomly initialised weights."""
    return DeepLabV2(ModelSpec(backbone, num_classes, multi_level, branches))
