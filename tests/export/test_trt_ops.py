"""The static TensorRT parser check, on exported graphs and on hand-made bad ones."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from mslseg.export import check_trt_ops, trt_op_problems
from mslseg.export.trt_ops import log_trt_problems
from mslseg.runtime.errors import ExportError


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, dtype=TensorProto.FLOAT, shape=(1, 3, 8, 8)):
    return helper.make_tensor_value_info(name, dtype, list(shape))


def _qdq_model(zero_point, dtype=np.int8):
    inits = [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
             numpy_helper.from_array(np.array(zero_point, dtype), "zp")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"])]
    return _model(nodes, [_vi("x")], [_vi("y")], inits)


def test_exported_graph_passes(labels_onnx):
    assert trt_op_problems(labels_onnx) == []
    check_trt_ops(labels_onnx)


@pytest.mark.parametrize("model,match", [
    (_model([helper.make_node("Unique", ["x"], ["y"])], [_vi("x")], [_vi("y")]), "Unique"),
    (_model([helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft")], [_vi("x")], [_vi("y")]),
     "custom-domain operator com.microsoft.Gelu"),
    (_qdq_model(3), "non-zero zero point"),
    (_qdq_model(0, np.uint8), "UINT8"),
    (_model([helper.make_node("Resize", ["x", "", "sc"], ["y"], mode="cubic")], [_vi("x")], [_vi("y")],
            [numpy_helper.from_array(np.ones(4, np.float32), "sc")]), "mode=cubic"),
    (_model([helper.make_node("Transpose", ["x"], ["t"], perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["t"], ["y"], to=TensorProto.FLOAT)],
            [_vi("x", TensorProto.UINT8, (1, 8, 8, 3))], [_vi("y")]), "uint8 tensor"),
    (_model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x")], [_vi("y")], opset=8), "opset 8"),
])
def test_problems_are_named(model, match):
    problems = trt_op_problems(model)
    assert any(match in p for p in problems), problems
    with pytest.raises(ExportError, match="TensorRT cannot parse"):
        check_trt_ops(model)


def test_int32_bias_dequantisation_is_flagged():
    inits = [numpy_helper.from_array(np.arange(3, dtype=np.int32), "b"),
             numpy_helper.from_array(np.array(0.1, np.float32), "s")]
    node = helper.make_node("DequantizeLinear", ["b", "s"], ["y"])
    model = _model([node], [], [_vi("y", shape=(3,))], inits)
    assert any("INT32" in p for p in trt_op_problems(model))


def test_problems_are_one_summary_line_unless_the_file_is_for_tensorrt(caplog):
    problems = [f"QuantizeLinear node 'q{i}' has a non-zero zero point" for i in range(108)]
    with caplog.at_level(logging.WARNING, logger="mslseg.export.trt_ops"):
        log_trt_problems("m.onnx", problems, full=False)
    (line,) = caplog.messages
    assert "108 problems, the first: QuantizeLinear node 'q0'" in line and "see --verbose" in line
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mslseg.export.trt_ops"):  # --verbose lists them all
        log_trt_problems("m.onnx", problems, full=False)
    assert len(caplog.messages) == 108
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mslseg.export.trt_ops"):
        log_trt_problems("m.onnx", problems, full=True)
    assert len(caplog.messages) == 108 and all(r.levelno == logging.WARNING for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mslseg.export.trt_ops"):  # a CPU int8 file: by design
        log_trt_problems("m.onnx", problems, full=False, expected="an int8 file in the CPU layout")
    assert caplog.messages == []
    with caplog.at_level(logging.INFO, logger="mslseg.export.trt_ops"):
        log_trt_problems("m.onnx", problems, full=False, expected="an int8 file in the CPU layout")
    (line,) = caplog.messages
    assert "as an int8 file in the CPU layout, TensorRT will not parse this graph (108 problems" in line
