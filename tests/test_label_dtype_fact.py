"""One owner for the label dtype rule (runtime/metadata.py); every place that makes or checks labels agrees.

255 classes still fit uint8 (ids 0..254 beside the ignore label 255); 256 no longer do. The
runtime hands out uint8/uint16 label maps; an exported graph (and the torch backend, which stands
in for one) outputs uint8/int32, since TensorRT has no uint16 I/O.
"""

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from mslseg.checkpoint import save_checkpoint
from mslseg.export.graph import ExportGraph
from mslseg.export.onnx_contract import check_contract
from mslseg.runtime.backends.base import open_backend
from mslseg.runtime.errors import ExportError
from mslseg.runtime.host_ops import to_labels
from mslseg.runtime.metadata import ModelMeta, Normalization, default_palette, graph_label_dtype, label_dtype
from tests.helpers import tiny_model

CLASSES = (2, 255, 256, 300)
EXPECTED = {2: ("uint8", "uint8"), 255: ("uint8", "uint8"), 256: ("uint16", "int32"), 300: ("uint16", "int32")}


def _meta(n: int, **kw) -> ModelMeta:
    return ModelMeta(num_classes=n, class_names=tuple(f"c{i}" for i in range(n)), palette=default_palette(n), **kw)


@pytest.mark.parametrize("n", CLASSES)
def test_the_owner_draws_the_line_at_255(n):
    assert (label_dtype(n).name, graph_label_dtype(n).name) == EXPECTED[n]
    assert _meta(n).label_dtype == label_dtype(n)


@pytest.mark.parametrize("n", CLASSES)
def test_host_labels_follow_the_owner(n):
    logits = np.zeros((1, n, 2, 3), np.float32)
    logits[0, n - 1] = 1.0  # the last class wins: its id needs the widest dtype
    labels, _ = to_labels(logits, None, _meta(n), want_confidence=False)
    assert labels.dtype == label_dtype(n) and int(labels.max()) == n - 1


@pytest.mark.parametrize("n", CLASSES)
def test_the_exported_graph_outputs_the_owners_graph_dtype(n):
    graph = ExportGraph(torch.nn.Conv2d(3, n, 1), Normalization.official(), n, output_kind="labels")
    out = graph(torch.zeros(1, 3, 4, 4))
    assert str(out.dtype).removeprefix("torch.") == graph_label_dtype(n).name


def _labels_graph(elem_type: int) -> onnx.ModelProto:
    dims = ["batch", 3, "height", "width"]
    nodes = [helper.make_node("ArgMax", ["input"], ["ids"], axis=1, keepdims=0),
             helper.make_node("Cast", ["ids"], ["output"], to=elem_type)]
    graph = helper.make_graph(nodes, "labels", [helper.make_tensor_value_info("input", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("output", elem_type, ["batch", "height", "width"])])
    return helper.make_model(graph)


@pytest.mark.parametrize("n", CLASSES)
def test_the_onnx_contract_accepts_the_owners_dtype_only(n):
    meta = _meta(n, output_kind="labels")
    right = helper.np_dtype_to_tensor_dtype(graph_label_dtype(n))
    wrong = TensorProto.INT32 if right == TensorProto.UINT8 else TensorProto.UINT8
    check_contract(_labels_graph(right), meta)
    with pytest.raises(ExportError, match="output is"):
        check_contract(_labels_graph(wrong), meta)


@pytest.mark.parametrize("n", (255, 256))
def test_the_torch_backend_outputs_the_owners_graph_dtype(n, tmp_path):
    model, meta = tiny_model(n)
    path = save_checkpoint(tmp_path / "m.pt", model, meta)
    backend = open_backend(path, device="cpu")
    try:
        labels, _ = backend.infer(np.zeros((1, 3, 16, 16), np.float32))
    finally:
        backend.close()
    assert labels.dtype == graph_label_dtype(n)
