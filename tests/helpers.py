"""Small builders several test modules share."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from mslseg.classes import default_class_names, palette_for
from mslseg.models import deeplabv2
from mslseg.runtime.metadata import ModelMeta


def tiny_model(num_classes: int, *, multi_level: bool = False, train_size=None):
    """A seeded random ResNet-18 DeepLab-v2 in eval mode and its metadata."""
    torch.manual_seed(0)
    model = deeplabv2("resnet18", num_classes=num_classes, multi_level=multi_level).eval()
    names = default_class_names(num_classes)
    return model, ModelMeta(num_classes=num_classes, class_names=names, palette=palette_for(names),
                            train_size=train_size)


def export_labels_onnx(model, meta: ModelMeta, path: Path) -> Path:
    """uint8 frames in, labels out: what `mslseg infer` users export."""
    from mslseg.export import export_onnx

    return export_onnx(model, meta, path, input_kind="uint8", output_kind="labels", slim=False)


def write_code_pickle(path: Path, marker: Path, wrap: Any, protocol: int) -> Path:
    """A pickle that, if unpickled unsafely, would create `marker`; `wrap(obj)` places it in a dict."""

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(path, "wb") as f:
        pickle.dump(wrap(Evil()), f, protocol=protocol)
    return path
