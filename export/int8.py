"""Static int8 post-training quantisation with Q/DQ nodes, calibrated on target-domain frames.

The layout is the one TensorRT's explicit quantisation builds from (and ONNX Runtime runs):
QuantizeLinear/DequantizeLinear pairs with zero points of 0, symmetric int8 activations (one
scale per tensor), symmetric int8 weights with one scale per output channel, biases left in
float (TensorRT's DequantizeLinear takes no int32 input). Only convolutions are quantised: they
hold almost all the compute, and leaving the element-wise sums of the residual blocks and of the
ASPP branches (whose last sum is the logits) in float keeps the label agreement high.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from mslseg.runtime.errors import ExportError, InputError, require
from mslseg.runtime.metadata import Normalization

log = logging.getLogger(__name__)

QUANTIZED_OPS = ("Conv",)
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
                  method: str = "minmax", layout: str = "tensorrt") -> Path:
    """Quantise the fp32 model `src` into `dst`, calibrating on BGR `frames`; returns `dst`.

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
                op_types_to_quantize=list(QUANTIZED_OPS),
                nodes_to_exclude=float_convs(src),
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


def float_convs(path: str | Path) -> list[str]:
    """Convs kept in float: the stem (3 input channels) and the classifier heads (ASPP branches,
    recognised as the convs feeding the final sum/resize: fewer output channels than any backbone
    conv). Together well under 2% of the FLOPs, they carry most of int8's label error: the stem
    sees raw pixel ranges, the heads decide the argmax margins."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {t.name: tuple(t.dims) for t in graph.initializer}
    convs = [(n.name, shapes.get(n.input[1])) for n in graph.node if n.op_type == "Conv" and len(n.input) > 1]
    convs = [(name, shape) for name, shape in convs if shape and len(shape) == 4]
    if not convs:
        return []
    smallest_out = min(shape[0] for _, shape in convs)
    return [name for name, shape in convs if shape[1] == 3 or shape[0] == smallest_out]


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
