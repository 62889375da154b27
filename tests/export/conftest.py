"""A small, deterministic ResNet-18 DeepLab and frames to export and check it with."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mslseg.export.calibration import synthetic_frames
from mslseg.models import deeplabv2
from mslseg.runtime.metadata import ModelMeta, default_palette
from mslseg.runtime.sizes import Size

NUM_CLASSES = 5
SIZE = Size(96, 64)  # the training size: 96 wide, 64 high


def make_model(seed: int = 0):
    """Random weights; BatchNorm statistics from image-like frames, so activations are well scaled.

    Nothing is trained: the running statistics only make the random network's logits vary with
    the image the way a trained one's do, so label agreement is a meaningful number.
    """
    torch.manual_seed(seed)
    model = deeplabv2("resnet18", num_classes=NUM_CLASSES, multi_level=False)
    meta = ModelMeta(num_classes=NUM_CLASSES, class_names=tuple(f"class{i}" for i in range(NUM_CLASSES)),
                     palette=default_palette(NUM_CLASSES), train_size=SIZE)
    model.train()
    with torch.no_grad():
        for i in range(3):
            frames = np.stack(synthetic_frames(4, SIZE, seed=100 + i))
            model(torch.from_numpy(meta.normalization.apply(frames)))
    return model.eval(), meta


@pytest.fixture(scope="session")
def model_meta():
    return make_model()


@pytest.fixture(scope="session")
def frames():
    """Parity frames: two at the export size, one at another size (BGR uint8)."""
    return synthetic_frames(2, SIZE, seed=1) + synthetic_frames(1, "72x48", seed=2)


@pytest.fixture(scope="session")
def calib_frames():
    return synthetic_frames(6, SIZE, seed=7)


@pytest.fixture(scope="session")
def labels_onnx(model_meta, tmp_path_factory):
    """fp32, uint8 RGB frames in, uint8 labels and confidence out, dynamic shapes."""
    from mslseg.export import export_onnx

    model, meta = model_meta
    out = tmp_path_factory.mktemp("labels") / "model.onnx"
    return export_onnx(model, meta, out, input_kind="uint8", input_order="rgb", output_kind="labels",
                       confidence=True, source_sha256="ab" * 32, slim=False)
