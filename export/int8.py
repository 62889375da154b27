"""Static int8 post-training quantisation with Q/DQ nodes, calibrated on target-domain frames.

The layout is the one TensorRT's explicit quantisation builds from (and ONNX Runtime runs):
QuantizeLinear/DequantizeLinear pairs with zero points of 0, symmetric int8 activations (one
scale per tensor), symmetric int8 weights with one scale per output channel, biases left in
float (TensorRT's DequantizeLinear takes no int32 input).

Which op types are quantised is the architecture's (`Architecture.int8_ops` in
mslseg.architectures): convolutions for DeepLab-v2, which hold almost all its compute, so the
element-wise sums of the residual blocks and of the ASPP branches (whose last sum is the logits)
stay float; convolutions and MatMuls for SegFormer. LayerNorm, Softmax, GELU (Erf), Resize and
the sums stay float in every model. Of the quantised types these nodes stay float (float_nodes),
measured on a SegFormer-B0 trained 300 iterations on the synthetic data, on target-domain val
frames, ONNX Runtime CPU time per 1024x512 frame at one thread (docs/export.md):

- the stem (the conv of 3 input channels) and the classifier (the weighted layers nothing weighted
  follows: DeepLab's ASPP convs, SegFormer's decode-head classifier): together about 2% of the
  FLOPs, they carry most of int8's label error (the stem sees raw pixel ranges, the classifier
  decides the argmax margins); float they lift SegFormer's agreement from 98.2 to 98.6%.
- MatMuls with no constant operand, attention's Q.K^T and attn.V: both sides are activations,
  so int8 would quantise the (tokens x reduced tokens) score and probability tensors every frame;
  quantised they cost 30% more time (1.34 vs 1.03 s) for no gain in agreement.
- depthwise convs (SegFormer's Mix-FFN 3x3): a sliver of the FLOPs, and ONNX Runtime's int8
  depthwise kernel with its Q/DQ is slower than the float one (0.96 vs 1.03 s, agreement equal).

What remains int8 holds the compute: the patch embeddings and sequence-reduction convs, the
Q/K/V/output and MLP projections, and the decode head's projections and 1x1 fuse conv (at 1/4
of the input resolution the largest single layer).
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.errors import ExportError, InputError, require
from mslseg.runtime.metadata import Normalization

log = logging.getLogger(__name__)

WEIGHTED_OPS = ("Conv", "MatMul", "Gemm")  # the layers whose weights int8 quantises
CALIBRATION_METHODS = ("minmax", "percentile", "entropy")
# tensorrt: symmetric int8 activations (zero point 0), what TensorRT's explicit quantisation takes;
# cpu: asymmetric uint8 activations with int8 weights (U8S8), ONNX Runtime's fast x86 kernels
INT8_LAYOUTS = ("tensorrt", "cpu")
AUTO = "auto"  # tensorrt when a TensorRT engine is built from the file, cpu otherwise


def check_int8_layout(layout: str, *, auto: bool = False) -> None:
    valid = (AUTO, *INT8_LAYOUTS) if auto else INT8_LAYOUTS
    if layout not in valid:
        raise InputError(f"unknown int8 layout '{layout}'; valid: {', '.join(valid)}")


def choose_int8_layout(layout: str, *, tensorrt: bool) -> tuple[str, str]:
    """(layout, why): `auto` picks the TensorRT layout when an engine is built, else the CPU one.

    An explicit layout is kept as it is; the caller refuses cpu with an engine (TensorRT cannot
    build it). `why` says what chose it, for the summary line.
    """
    check_int8_layout(layout, auto=True)
    if layout != AUTO:
        return layout, f"--int8-layout {layout}"
    if tensorrt:
        return "tensorrt", "--int8-layout auto with --trt"
    return "cpu", "--int8-layout auto without --trt: faster on ONNX Runtime CPUs, not for TensorRT"


def calibration_inputs(frames: Sequence[np.ndarray], *, input_kind: str, input_order: str,
                       norm: Normalization) -> Iterator[np.ndarray]:
    """Graph inputs, one frame per batch (frames may differ in size): BGR frames as the graph takes them."""
    for frame in frames:
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"calibration frames must be (H, W, 3) uint8, got {frame.dtype} {frame.shape}")
        batch = frame[None]
        if input_kind == "uint8":
            yield np.ascontiguousarray(batch[..., ::-1] if input_order == "rgb" else batch)
        else:
            yield norm.apply(batch, "bgr")


def quantize_int8(src: str | Path, dst: str | Path, frames: Sequence[np.ndarray], *,
                  input_kind: str, input_order: str, norm: Normalization,
                  ops: Sequence[str], method: str = "minmax", layout: str = "tensorrt") -> Path:
    """Quantise the fp32 model `src` into `dst`, calibrating on BGR `frames`; returns `dst`.

    `ops`: the op types to quantise (`int8_ops` of the model's architecture); float_nodes says
    which of them stay float.

    `layout`: "tensorrt" (S8S8, symmetric) or "cpu" (U8S8: asymmetric uint8 activations, about
    2.5x faster than S8S8 on ONNX Runtime's x86 CPU kernels; TensorRT cannot build it)."""
    quant = require("onnxruntime.quantization", "cpu", "int8 quantisation")
    if method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method '{method}'; valid: {', '.join(CALIBRATION_METHODS)}")
    check_int8_layout(layout)
    if not len(frames):
        raise InputError("int8 quantisation needs at least one calibration frame")
    inputs = calibration_inputs(frames, input_kind=input_kind, input_order=input_order, norm=norm)

    class Reader(quant.CalibrationDataReader):
        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(inputs, None)
            return None if x is None else {"input": x}

    methods = {"minmax": quant.CalibrationMethod.MinMax,
               "percentile": quant.CalibrationMethod.Percentile,
               "entropy": quant.CalibrationMethod.Entropy}
    log.info("calibrating int8 ranges on %d frames (%s)", len(frames), method)
    try:
        with _without_hints():
            quant.quantize_static(
                str(src), str(dst), Reader(),
                quant_format=quant.QuantFormat.QDQ,
                op_types_to_quantize=list(ops),
                nodes_to_exclude=float_nodes(src, ops),
                per_channel=True,
                reduce_range=False,
                activation_type=quant.QuantType.QInt8 if layout == "tensorrt" else quant.QuantType.QUInt8,
                weight_type=quant.QuantType.QInt8,
                calibrate_method=methods[method],
                extra_options={
                    "ActivationSymmetric": layout == "tensorrt",
                    "WeightSymmetric": True,
                    "QuantizeBias": False,
                },
            )
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"int8 quantisation failed ({str(exc)[:200]}); "
                          "check the calibration frames") from None
    return Path(dst)


def int8_ops(arch: str) -> tuple[str, ...]:
    """The op types int8 export quantises for a model whose metadata names it `arch`.

    The architecture registry says (`Architecture.int8_ops`, `architecture_of_meta`).
    ModelFormatError for an architecture the registry does not know."""
    from mslseg.architectures import architecture_of_meta

    return architecture_of_meta(arch).int8_ops


def float_nodes(path: str | Path, ops: Sequence[str]) -> list[str]:
    """The nodes of the quantised op types `ops` that stay float (module docstring): the stem
    (a conv of 3 input channels), the classifier (the weighted layers nothing weighted follows),
    depthwise convs, and MatMuls without a constant operand (attention's Q.K^T and attn.V)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name: tuple(t.dims) for t in graph.initializer}
    # a quantised file holds its weights behind DequantizeLinear; they are constants all the same
    weights |= {n.output[0]: weights[n.input[0]] for n in graph.node
                if n.op_type == "DequantizeLinear" and n.input[0] in weights}
    last = _last_layers(graph)
    kept = []
    for i, node in enumerate(graph.node):
        if node.op_type not in ops:
            continue
        weight = weights.get(node.input[1]) if len(node.input) > 1 else None
        stem = node.op_type == "Conv" and weight is not None and len(weight) == 4 and weight[1] == 3
        depthwise = (node.op_type == "Conv" and weight is not None and len(weight) == 4 and weight[1] == 1
                     and _group(node) == weight[0] > 1)
        mixing = node.op_type == "MatMul" and not any(x in weights for x in node.input)
        if stem or depthwise or mixing or i in last:
            kept.append(node.name)
    return kept


def float_convs(path: str | Path) -> list[str]:
    """The convs int8 export keeps float in the file at `path` (see float_nodes)."""
    return float_nodes(path, ("Conv",))


def _group(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _last_layers(graph: Any) -> set[int]:
    """Indices of the weighted layers (Conv, MatMul, Gemm) from which no other one is reachable."""
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    nodes = graph.node
    feeds_layer = [False] * len(nodes)  # a weighted layer lies downstream of node i
    for i in reversed(range(len(nodes))):  # ONNX orders nodes topologically
        feeds_layer[i] = any(nodes[c].op_type in WEIGHTED_OPS or feeds_layer[c]
                             for out in nodes[i].output for c in consumers.get(out, ()))
    return {i for i, n in enumerate(nodes) if n.op_type in WEIGHTED_OPS and not feeds_layer[i]}


class _DropHints(logging.Filter):
    _NOISE = ("pre-processing before quantization", "to be an initializer")

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(n in str(record.msg) for n in self._NOISE)


@contextlib.contextmanager
def _without_hints() -> Iterator[None]:
    # onnxruntime warns on the root logger (a) to run its shape pre-processing, which the traced,
    # constant-folded graph does not need, and (b) about each bias the tracer shares between
    # convs through an Identity; biases stay float here, so neither concerns the user
    hint = _DropHints()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)
