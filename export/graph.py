"""The module that is traced into ONNX: optional preprocessing, the network, optional postprocessing.

With `uint8` input the graph takes raw frames (N, H, W, 3) in the stated colour order and does
the layout change, colour reordering and normalisation itself, so a robot hands over what its
camera driver gives. With `probs`/`labels` output the softmax/argmax run inside the graph, so
only (N, H, W) labels cross the bus. Reduced precision (fp16) covers the network only: the
preprocessing runs in fp32 on exact integer pixel values, softmax, max and argmax run in fp32.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from mslseg.runtime.errors import InputError
from mslseg.runtime.metadata import (
    CHANNEL_ORDERS,
    INPUT_KINDS,
    OUTPUT_KINDS,
    Normalization,
    graph_label_dtype,
)

OUTPUT_NAMES = ("output", "confidence")


def check_io_options(input_kind: str, input_order: str, output_kind: str) -> None:
    """Raise InputError naming the valid values when one of the I/O options is unknown."""
    for name, value, valid in (
        ("input kind", input_kind, INPUT_KINDS),
        ("input colour order", input_order, CHANNEL_ORDERS),
        ("output kind", output_kind, OUTPUT_KINDS),
    ):
        if value not in valid:
            raise InputError(f"unknown {name} '{value}'; valid: {', '.join(valid)}")


def label_dtype(num_classes: int) -> torch.dtype:
    """The graph's label output as a torch dtype; the rule is `graph_label_dtype`'s."""
    return getattr(torch, graph_label_dtype(num_classes).name)


class ExportGraph(nn.Module):
    """Wraps a segmentation network (normalised NCHW in, logits NCHW out at input size)."""

    def __init__(self, net: nn.Module, norm: Normalization, num_classes: int, *,
                 input_kind: str = "float", input_order: str = "bgr", output_kind: str = "logits",
                 confidence: bool = False, half: bool = False) -> None:
        super().__init__()
        check_io_options(input_kind, input_order, output_kind)
        # a copy on the CPU: the caller's model is left untouched (fp16 converts it), and the
        # traced graph does not depend on the device the model was trained on
        self.net = copy.deepcopy(net).cpu().eval()
        self.half_net = half
        if half:
            self.net.half()
        self.input_kind, self.output_kind, self.confidence = input_kind, output_kind, confidence
        self.reorder = input_order != norm.order
        self.subtract = any(m != 0.0 for m in norm.mean)
        self.divide = any(s != 1.0 for s in norm.std)
        self.register_buffer("mean", torch.tensor(norm.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(norm.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.labels_as = label_dtype(num_classes)
        self.eval()

    def forward(self, x: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        # float: (N, 3, H, W) normalised; uint8: (N, H, W, 3) raw -> output (N, C|-, H, W) [+ (N, H, W)]
        if self.input_kind == "uint8":
            # cast first: TensorRT has uint8 only at the graph's edges, straight into a Cast
            x = x.to(torch.float32).permute(0, 3, 1, 2)
            if self.reorder:
                x = torch.flip(x, dims=(1,))  # BGR <-> RGB; a Slice with step -1 in ONNX
            if self.subtract:
                x = x - self.mean
            if self.divide:
                x = x / self.std
        if self.half_net:
            logits = self.net(x.to(torch.float16)).to(torch.float32)
        else:
            logits = self.net(x)
        if self.output_kind == "logits" and not self.confidence:
            return logits
        probs = torch.softmax(logits, dim=1)
        if self.output_kind == "labels":
            main = torch.argmax(logits, dim=1).to(self.labels_as)
        else:
            main = logits if self.output_kind == "logits" else probs
        if not self.confidence:
            return main
        return main, torch.amax(probs, dim=1)

    def output_names(self) -> list[str]:
        return list(OUTPUT_NAMES[: 2 if self.confidence else 1])
