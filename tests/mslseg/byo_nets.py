"""Networks a user might bring with `python:MODULE:FUNCTION`, small enough for tests."""

from __future__ import annotations

from torch import Tensor, nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class DictNet(nn.Module):
    """torchvision's segmentation output shape: {'out': main, 'aux': aux} logits at stride 8."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(_block(3, 8), _block(8, 16), _block(16, 16))
        self.classifier = nn.Conv2d(16, num_classes, 1)
        self.aux_classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        f = self.backbone(x)
        return {"out": self.classifier(f), "aux": self.aux_classifier(f)}


def build_net(num_classes: int) -> nn.Module:
    return DictNet(num_classes)


def build_other(num_classes: int) -> nn.Module:
    return DictNet(num_classes)


class PlainNet(nn.Module):
    """A network without an auxiliary head: one tensor of logits at stride 4 (as an LR-ASPP or a U-Net)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.backbone = nn.Sequential(_block(3, 8), _block(8, 16))
        self.classifier = nn.Conv2d(16, num_classes, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.backbone(x))


def build_plain(num_classes: int) -> nn.Module:
    return PlainNet(num_classes)
