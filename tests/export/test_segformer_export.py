"""SegFormer exports like DeepLab-v2: uint8 in, labels out, dynamic batch and size, parity gates, int8."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch

from mslseg.export import check_parity, export_onnx, load_meta
from mslseg.export.calibration import synthetic_frames
from mslseg.export.int8 import float_nodes, int8_ops
from mslseg.export.trt_ops import trt_op_problems
from mslseg.runtime.metadata import ModelMeta, Normalization, default_palette
from mslseg.runtime.sizes import Size

pytest.importorskip("transformers")

NUM_CLASSES = 5
SIZE = Size(128, 64)  # the training size, WIDTHxHEIGHT
ENV_THREADS = {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def segformer():
    """A SegFormer-B0 from its config, random weights, and its metadata."""
    from mslseg.models.segformer import build_segformer

    torch.manual_seed(0)
    model = build_segformer("b0", num_classes=NUM_CLASSES).eval()
    meta = ModelMeta(num_classes=NUM_CLASSES, class_names=tuple(f"class{i}" for i in range(NUM_CLASSES)),
                     palette=default_palette(NUM_CLASSES), normalization=Normalization.imagenet(),
                     arch=model.arch, train_size=SIZE)
    return model, meta


@pytest.fixture(scope="module")
def frames():
    """Two frames at the training size and one at another size (BGR uint8)."""
    return synthetic_frames(2, SIZE, seed=1) + synthetic_frames(1, "96x160", seed=2)


@pytest.fixture(scope="module")
def fp32_labels(segformer, tmp_path_factory):
    """fp32, uint8 RGB frames in, uint8 labels and confidence out, dynamic batch and size."""
    model, meta = segformer
    return export_onnx(model, meta, tmp_path_factory.mktemp("segformer") / "fp32.onnx", input_kind="uint8",
                       input_order="rgb", output_kind="labels", confidence=True)


@pytest.mark.parametrize("precision", ["fp32", pytest.param("fp16", marks=pytest.mark.slow)])
def test_parity_gates_pass(segformer, fp32_labels, frames, tmp_path, precision):
    model, meta = segformer
    path = fp32_labels if precision == "fp32" else export_onnx(
        model, meta, tmp_path / "fp16.onnx", input_kind="uint8", output_kind="labels", confidence=True,
        precision="fp16")
    report = check_parity(path, model, frames, write=False, threads=1)
    assert report.passed, report.summary()
    assert report.nonfinite == 0
    assert load_meta(path).arch == "segformer-b0" and load_meta(path).precision == precision
    assert trt_op_problems(path) == []


def test_uint8_in_labels_out_at_any_batch_and_size(segformer, fp32_labels):
    import onnxruntime as ort

    model, meta = segformer
    proto = onnx.load(str(fp32_labels))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    session = ort.InferenceSession(str(fp32_labels), so, providers=["CPUExecutionProvider"])
    for n, size in ((2, SIZE), (3, Size(96, 160))):
        rgb = np.stack(synthetic_frames(n, size, seed=n))  # (N, H, W, 3)
        labels, confidence = session.run(None, {"input": rgb})
        assert labels.shape == confidence.shape == (n, *size.hw) and labels.dtype == np.uint8
        with torch.no_grad():
            x = torch.from_numpy(meta.normalization.apply(rgb, "rgb"))
            ref = model(x).argmax(1).numpy()
        assert np.mean(labels == ref) > 0.999


def test_int8_ops_come_from_the_registry():
    from mslseg.architectures import MODELS

    assert int8_ops("segformer-b0") == MODELS["segformer-b0"].int8_ops == ("Conv", "MatMul")
    assert int8_ops("deeplabv2-resnet18") == int8_ops("deeplabv2") == ("Conv",)
    assert int8_ops("python:my.nets:build") == ("Conv",)


def test_float_nodes_of_segformer(segformer, fp32_labels):
    path = fp32_labels
    kept = float_nodes(path, int8_ops(segformer[1].arch))
    assert any("stages.0/patch_embeddings" in n for n in kept)  # the stem
    assert any("decode_head/classifier" in n for n in kept)
    scores = [n.name for n in onnx.load(str(path)).graph.node
              if n.op_type == "MatMul" and n.name.endswith(("attention/MatMul", "attention/MatMul_1"))]
    assert len(scores) == 16 and set(scores) <= set(kept)  # 8 blocks x (Q.K^T, attn.V)
    assert sum("dwconv" in n for n in kept) == 8  # one depthwise conv per block
    assert not any("proj/MatMul" in n or "linear_fuse" in n for n in kept)  # the heavy layers are int8


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A SegFormer-B0 checkpoint trained briefly on synthetic scenes, and the scenes' root.

    Trained, not random: an untrained model's labels have near-zero margins, so int8 agreement
    would measure noise."""
    from mslseg.data.synthetic import write_synthetic_dataset

    root = tmp_path_factory.mktemp("segformer-trained")
    data = root / "data" / "synth"  # where the synthetic config looks, relative to the run's folder
    write_synthetic_dataset(data, source=24, target_train=24, target_val=8, size=str(SIZE), video=False)
    cmd = [sys.executable, "-m", "mslseg", "train", "-c", "synthetic", "--model", "segformer-b0",
           "--iterations", "150", "--out", "run", "--device", "cpu"]
    done = subprocess.run(cmd, cwd=root, env=os.environ | ENV_THREADS, capture_output=True, text=True,
                          timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run" / "last.pt", data / "cityscapes" / "leftImg8bit"


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["cpu", "tensorrt"])
def test_int8_agrees_on_a_trained_model(trained, tmp_path, layout):
    """>= 97% labels agree with PyTorch on target-domain frames: the export's own gate, then on val."""
    from mslseg.checkpoint import load_model
    from mslseg.export import export_checkpoint
    from mslseg.export.calibration import load_frames

    ckpt, images = trained
    out = tmp_path / "int8.onnx"
    result = export_checkpoint(ckpt, out, input_kind="uint8", output_kind="labels", precision="int8",
                               calib=[images / "train"], calib_frames=16, int8_layout=layout)
    assert result.report.passed and result.report.gate == 0.97
    model, meta = load_model(ckpt)
    val = load_frames([images / "val"], 8, size=meta.train_size)
    report = check_parity(out, model, val, write=False, threads=1)
    assert report.label_agreement >= 0.97, report.summary()
    if layout == "tensorrt":
        assert trt_op_problems(out) == []
