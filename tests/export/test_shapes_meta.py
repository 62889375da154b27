"""Dynamic and static shapes in ONNX Runtime, metadata read back, the I/O contract, bad arguments."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mslseg.export import check_contract, export_onnx, load_meta
from mslseg.models import deeplabv2
from mslseg.runtime.errors import ExportError, InputError, ModelFormatError
from mslseg.runtime.metadata import ONNX_METADATA_KEY, ModelMeta, default_palette
from mslseg.runtime.sizes import Size
from tests.export.conftest import NUM_CLASSES, SIZE


def _torch_labels(model, meta, frames_bgr):
    x = torch.from_numpy(meta.normalization.apply(frames_bgr, "bgr"))
    with torch.no_grad():
        logits = model(x)
    return logits.argmax(1).numpy(), torch.softmax(logits, 1).amax(1).numpy()


def test_dynamic_batch_and_size_in_one_session(model_meta, labels_onnx):
    model, meta = model_meta
    session = ort.InferenceSession(str(labels_onnx), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for n, h, w in [(1, 64, 96), (3, 64, 96), (1, 80, 56), (3, 80, 56)]:
        bgr = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
        labels, conf = session.run(None, {"input": np.ascontiguousarray(bgr[..., ::-1])})  # RGB model
        assert labels.shape == (n, h, w) and labels.dtype == np.uint8
        assert conf.shape == (n, h, w) and conf.dtype == np.float32
        ref_labels, ref_conf = _torch_labels(model, meta, bgr)
        assert (labels == ref_labels).mean() >= 0.999
        assert np.abs(conf - ref_conf).max() < 1e-4


def test_metadata_read_back(model_meta, labels_onnx):
    _, meta = model_meta
    proto = onnx.load(str(labels_onnx))
    props = {p.key: p.value for p in proto.metadata_props}
    stored = json.loads(props[ONNX_METADATA_KEY])  # plain JSON
    assert ModelMeta.from_dict(stored) == load_meta(labels_onnx)
    got = load_meta(labels_onnx)
    assert got.class_names == meta.class_names and got.palette == meta.palette
    assert got.normalization == meta.normalization
    io = (got.input_kind, got.input_order, got.output_kind, got.confidence)
    assert io == ("uint8", "rgb", "labels", True)
    assert got.precision == "fp32" and got.train_size == SIZE
    assert got.mslseg_version and got.source_sha256 == "ab" * 32
    assert proto.producer_name == "mslseg"
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)
    assert [p.name for p in labels_onnx.parent.iterdir()] == [labels_onnx.name]  # no .data sidecar
    check_contract(proto, got)


def test_contract_check_catches_a_wrong_graph(labels_onnx):
    proto = onnx.load(str(labels_onnx))
    meta = load_meta(proto)
    with pytest.raises(ExportError, match="expected FLOAT"):
        check_contract(proto, meta.with_(output_kind="logits"))
    proto.graph.output[0].name = "labels"
    with pytest.raises(ExportError, match="outputs"):
        check_contract(proto, meta)
    with pytest.raises(ModelFormatError, match="no mslseg metadata"):
        load_meta(onnx.helper.make_model(onnx.helper.make_graph([], "g", [], [])))


def test_static_shape(model_meta, tmp_path):
    model, meta = model_meta
    path = export_onnx(model, meta.with_(train_size=None), tmp_path / "s.onnx", static="64x48",
                       output_kind="probs", slim=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 48, 64]
    assert session.get_outputs()[0].shape == [1, NUM_CLASSES, 48, 64]
    assert load_meta(path).train_size == Size(64, 48)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {"input": np.zeros((1, 3, 64, 64), np.float32)})


@pytest.mark.parametrize("kwargs,match", [
    ({"precision": "fp8"}, "unknown precision"),
    ({"precision": "int8"}, "calibration"),
    ({"output_kind": "mask"}, "unknown output kind"),
    ({"input_kind": "uint16"}, "unknown input kind"),
    ({"input_order": "bgra"}, "colour order"),
    ({"opset": 13}, "opset"),
    ({"static": "4x4"}, "too small"),
    ({"static": (48, 64)}, "WIDTHxHEIGHT"),
    ({"batch": 2}, "needs a static size"),
    ({"precision": "int8", "calib": ["x.mp4"], "int8_layout": "auto"}, "int8 layout"),
])
def test_bad_arguments_write_nothing(model_meta, tmp_path, kwargs, match):
    model, meta = model_meta
    with pytest.raises(InputError, match=match):
        export_onnx(model, meta, tmp_path / "bad.onnx", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_output_in_missing_folder(model_meta, tmp_path):
    model, meta = model_meta
    with pytest.raises(InputError, match="does not exist"):
        export_onnx(model, meta, tmp_path / "missing" / "m.onnx")


@pytest.mark.slow
def test_labels_are_int32_beyond_255_classes(tmp_path):
    torch.manual_seed(0)
    model = deeplabv2("resnet18", num_classes=300, multi_level=False).eval()
    meta = ModelMeta(num_classes=300, class_names=tuple(map(str, range(300))), palette=default_palette(300))
    path = export_onnx(model, meta, tmp_path / "big.onnx", output_kind="labels", static=Size(40, 32), slim=False)
    x = np.random.default_rng(0).normal(size=(1, 3, 32, 40)).astype(np.float32)
    (labels,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})
    assert labels.dtype == np.int32 and labels.shape == (1, 32, 40)
    with torch.no_grad():
        assert (labels == model(torch.from_numpy(x)).argmax(1).numpy()).mean() > 0.999
