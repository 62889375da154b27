"""A static check that TensorRT's ONNX parser can take a graph: runs anywhere, no TensorRT needed.

The operator table and the restrictions checked below follow ONNX-TensorRT's docs/operators.md
for TensorRT 10.x (opsets 9 to 24; TensorRT 11 keeps the table and the restrictions). The check
is conservative about what it can see statically: operator names and domains, Q/DQ zero points
and types (int8 with zero point 0; no int32 bias dequantisation), Resize modes, uint8 tensors only
at the graph's edges, constant reduction axes. Passing it does not promise a build; failing it
does promise a parse error, found before minutes of engine building.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from mslseg.export.onnx_contract import load_proto
from mslseg.runtime.errors import ExportError

log = logging.getLogger(__name__)

TRT_OPSETS = (9, 24)

# Operators ONNX-TensorRT marks "Y" (supported) for TensorRT 10.x.
TRT_SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh Attention AveragePool
BatchNormalization BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape
Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum
Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization
GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler
InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax
Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish
Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal
ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RMSNormalization RNN RoiAlign
RotaryEmbedding Round STFT ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink
Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub
Sum Tan Tanh TensorScatter ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}
_RESIZE_MODES = {"nearest", "linear"}
_QUANTIZED = {onnx.TensorProto.INT8, onnx.TensorProto.INT4, onnx.TensorProto.FLOAT8E4M3FN}
_REDUCE_OPS = {op for op in TRT_SUPPORTED_OPS if op.startswith("Reduce")}


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _constants(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.output and "value" in _attrs(node):
            consts[node.output[0]] = numpy_helper.to_array(_attrs(node)["value"])
    return consts


def _tensor_types(graph: onnx.GraphProto) -> dict[str, int]:
    types = {t.name: t.data_type for t in graph.initializer}
    for v in [*graph.input, *graph.output, *graph.value_info]:
        types[v.name] = v.type.tensor_type.elem_type
    return types


def _node_problems(node: onnx.NodeProto, consts: dict[str, np.ndarray],
                   types: dict[str, int]) -> list[str]:
    op, attrs = node.op_type, _attrs(node)
    where = f"{op} node '{node.name or node.output[0]}'"
    problems = []
    if op in ("QuantizeLinear", "DequantizeLinear"):
        zp = node.input[2] if len(node.input) > 2 and node.input[2] else None
        quantized = node.output[0] if op == "QuantizeLinear" else node.input[0]
        if zp is not None and zp in consts and np.any(consts[zp] != 0):
            problems.append(f"{where} has a non-zero zero point (TensorRT needs symmetric quantisation)")
        qtype = types.get(zp) if zp else types.get(quantized)
        if qtype is not None and qtype not in _QUANTIZED:
            problems.append(f"{where} quantises to {onnx.TensorProto.DataType.Name(qtype)} "
                            "(TensorRT takes int8/int4/fp8 Q/DQ only; int32 biases must stay float)")
    elif op == "Resize":
        coord = attrs.get("coordinate_transformation_mode", b"half_pixel").decode()
        mode = attrs.get("mode", b"nearest").decode()
        if coord not in _RESIZE_COORDS or mode not in _RESIZE_MODES or attrs.get("antialias", 0):
            problems.append(f"{where} uses mode={mode}, coordinate_transformation_mode={coord}"
                            f"{', antialias' if attrs.get('antialias', 0) else ''}")
    elif op in _REDUCE_OPS and len(node.input) > 1 and node.input[1] and node.input[1] not in consts:
        problems.append(f"{where} takes its axes from a computed tensor; they must be constant")
    elif op == "MaxPool" and (len(node.output) > 1 and node.output[1]):
        problems.append(f"{where} uses the Indices output")
    elif op == "TopK" and len(node.input) > 1 and consts.get(node.input[1], np.zeros(1)).max() >= 3840:
        problems.append(f"{where} has K >= 3840")
    return problems


def _inferred(proto: onnx.ModelProto) -> onnx.GraphProto:
    """The graph with inferred tensor types, inferred on a copy without the weights' bytes."""
    g = proto.graph
    names = {i.name for i in g.input}
    weights = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
               for t in g.initializer if t.name not in names]
    light = helper.make_model(helper.make_graph(g.node, g.name, [*g.input, *weights], g.output,
                                                value_info=g.value_info),
                              opset_imports=proto.opset_import, ir_version=proto.ir_version)
    try:
        return onnx.shape_inference.infer_shapes(light).graph
    except Exception:  # an uninferable graph still gets the checks that need no types
        return light.graph


def trt_op_problems(model: str | Path | onnx.ModelProto) -> list[str]:
    """Sentences naming what TensorRT's ONNX parser would reject in `model`; empty when none."""
    # load_proto refuses external-data paths outside the model's folder before onnx follows them
    proto = model if isinstance(model, onnx.ModelProto) else load_proto(model)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)
    problems = []
    if not TRT_OPSETS[0] <= opset <= TRT_OPSETS[1]:
        low, high = TRT_OPSETS
        problems.append(f"opset {opset} is outside the opsets TensorRT 10 parses ({low}..{high})")
    graph = proto.graph
    consts, types = _constants(graph), _tensor_types(_inferred(proto))
    foreign: Counter[str] = Counter()
    unsupported: Counter[str] = Counter()
    edges = {v.name for v in [*graph.input, *graph.output]}
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            foreign[f"{node.domain}.{node.op_type}"] += 1
            continue
        if node.op_type not in TRT_SUPPORTED_OPS:
            unsupported[node.op_type] += 1
            continue
        problems += _node_problems(node, consts, types)
        if node.op_type != "Cast":
            uint8 = [t for t in [*node.input, *node.output]
                     if t and types.get(t) == onnx.TensorProto.UINT8 and t not in edges]
            if uint8 and node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
                problems.append(f"{node.op_type} node '{node.name}' computes on uint8 tensor {uint8[0]} "
                                "(TensorRT has uint8 only at inputs/outputs, through Cast)")
    for op, n in sorted(unsupported.items()):
        problems.append(f"operator {op} ({n}x) is not supported by TensorRT's ONNX parser")
    for op, n in sorted(foreign.items()):
        problems.append(f"custom-domain operator {op} ({n}x) needs a TensorRT plugin")
    return problems


def log_trt_problems(path: str | Path, problems: list[str], *, full: bool, expected: str | None = None) -> None:
    """Log what TensorRT's parser would reject in the file at `path`.

    `full` (the file is meant for TensorRT): one warning per problem. Otherwise one warning with
    the count and the first problem, and the full list at INFO level (`mslseg -v`). `expected`
    (why the file is not for TensorRT, e.g. "the CPU int8 layout"): one INFO line, no warning.
    """
    if not problems:
        return
    if expected and not full:
        log.info("%s: as %s, TensorRT will not parse this graph (%d problems, the first: %s)", path, expected,
                 len(problems), problems[0])
        return
    if full:
        for problem in problems:
            log.warning("%s: TensorRT will not parse this graph: %s", path, problem)
        return
    if len(problems) == 1:
        log.warning("%s: TensorRT will not parse this graph: %s", path, problems[0])
        return
    log.warning("%s: TensorRT will not parse this graph: %d problems, the first: %s; see --verbose "
                "(mslseg --verbose export ...) for all", path, len(problems), problems[0])
    for problem in problems[1:]:
        log.info("%s: TensorRT will not parse this graph: %s", path, problem)


def check_trt_ops(model: str | Path | onnx.ModelProto) -> None:
    """ExportError listing the problems when TensorRT's ONNX parser would reject `model`."""
    problems = trt_op_problems(model)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise ExportError("TensorRT cannot parse this ONNX graph: " + "; ".join(problems[:3]) + more +
                          "; re-export with 'mslseg export' at opset 17 and without custom operators")
