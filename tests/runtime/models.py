"""Tiny test models in every export variant, built once per test session and shared by modules.

A ResNet-18 DeepLab-v2 with 4 classes, its head weights and BatchNorm statistics randomised so
the labels vary across the frame, exported with `mslseg.export.export_onnx` (the real exporter:
uint8 input, normalisation, softmax and argmax baked in as each variant asks).
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import numpy as np

NUM_CLASSES = 4
# name -> (input_kind, input_order, output_kind, confidence, static (N, H, W) or None)
VARIANTS = {
    "float_logits": ("float", "bgr", "logits", False, None),
    "float_probs_conf": ("float", "bgr", "probs", True, None),
    "uint8_labels": ("uint8", "bgr", "labels", False, None),
    "uint8_rgb_labels_conf": ("uint8", "rgb", "labels", True, None),
    "static_float_logits": ("float", "bgr", "logits", False, (2, 48, 64)),
    "fp16_uint8_labels": ("uint8", "bgr", "labels", False, None),
}
_CACHE: dict[str, Path] = {}
_ROOT: list[Path] = []


def _root() -> Path:
    if not _ROOT:
        _ROOT.append(Path(tempfile.mkdtemp(prefix="mslseg-test-models-")))
        atexit.register(shutil.rmtree, _ROOT[0], True)
    return _ROOT[0]


def _net():
    import torch

    from mslseg.models import deeplabv2

    torch.manual_seed(0)
    net = deeplabv2("resnet18", num_classes=NUM_CLASSES, multi_level=False).eval()
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
    for conv in net.head_main.convs:
        torch.nn.init.normal_(conv.weight, 0.0, 0.05, generator=g)
    return net


def meta():
    from mslseg.classes import default_class_names, palette_for
    from mslseg.runtime.metadata import ModelMeta

    names = default_class_names(NUM_CLASSES)
    return ModelMeta(num_classes=NUM_CLASSES, class_names=names, palette=palette_for(names))


def checkpoint() -> Path:
    """The tiny model as an mslseg checkpoint (.pt)."""
    if "pt" not in _CACHE:
        from mslseg.checkpoint import save_checkpoint

        _CACHE["pt"] = save_checkpoint(_root() / "tiny.pt", _net(), meta())
    return _CACHE["pt"]


def onnx_model(variant: str) -> Path:
    """The tiny model exported as `variant` (see VARIANTS)."""
    if variant not in _CACHE:
        _CACHE[variant] = _export(variant, _root() / f"{variant}.onnx")
    return _CACHE[variant]


def _export(variant: str, path: Path) -> Path:
    from mslseg.export.onnx_export import export_onnx
    from mslseg.runtime.sizes import Size

    input_kind, order, output_kind, confidence, static = VARIANTS[variant]
    precision = "fp16" if variant.startswith("fp16") else "fp32"
    return export_onnx(_net(), meta(), path, input_kind=input_kind, input_order=order,
                       output_kind=output_kind, confidence=confidence, precision=precision,
                       static=Size.from_hw(static[1:]) if static else None, batch=static[0] if static else 1)


def segformer_onnx() -> Path:
    """A SegFormer-B0 (random weights, 4 classes) exported uint8 in, labels out: the runtime runs it as any other."""
    if "segformer" not in _CACHE:
        import torch

        from mslseg.export.onnx_export import export_onnx
        from mslseg.models.segformer import build_segformer

        torch.manual_seed(0)
        net = build_segformer("b0", num_classes=NUM_CLASSES).eval()
        _CACHE["segformer"] = export_onnx(net, meta().with_(arch="segformer-b0"), _root() / "segformer.onnx",
                                          input_kind="uint8", output_kind="labels")
    return _CACHE["segformer"]


def frames(n: int = 3, size: tuple[int, int] = (48, 64), seed: int = 0) -> list[np.ndarray]:
    """Smooth random HxWx3 uint8 frames (structure, so labels vary across a frame)."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, size=(max(h // 8, 2), max(w // 8, 2), 3), dtype=np.uint8)
        out.append(cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR))
    return out


def write_video(path, n=20, size=(64, 96), fps=10, fourcc="mp4v"):
    """A real video file written with OpenCV (mp4v .mp4 or another fourcc/container)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (size[1], size[0]))
    for f in frames(n, size, seed=3):
        writer.write(f)
    writer.release()
    return path


def decoded_frames(path) -> list[np.ndarray]:
    """Every frame of a video file as OpenCV decodes it (to compare two runs' overlay videos)."""
    import cv2

    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        out.append(frame)
    cap.release()
    return out
