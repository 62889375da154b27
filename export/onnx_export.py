"""export_onnx: a segmentation network -> one self-contained .onnx file, precision and metadata inside.

Exporter: the TorchScript tracer (`torch.onnx.export(..., dynamo=False)`), chosen explicitly.
For this convolutional network it writes opset 17 natively with named dynamic axes in about a
second; the torch.export-based exporter (the default since PyTorch 2.9) takes several times as
long here, implements opset 18 and up only (17 goes through a version converter), and names
the dynamic axes s27, s53... The traced graph is the TensorRT-proven form of DeepLab. When
PyTorch removes the TorchScript exporter, switch `_trace` to dynamo=True with opset 18.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from mslseg import __version__
from mslseg.export.calibration import load_frames
from mslseg.export.graph import ExportGraph, check_io_options
from mslseg.export.int8 import check_int8_layout, int8_ops, quantize_int8
from mslseg.export.onnx_contract import check_contract, write_meta
from mslseg.export.trt_ops import log_trt_problems, trt_op_problems
from mslseg.runtime.errors import ExportError, InputError, require
from mslseg.runtime.io.atomic import atomic_path, writing
from mslseg.runtime.metadata import PRECISIONS, ModelMeta
from mslseg.runtime.sizes import Size

log = logging.getLogger(__name__)

MIN_OPSET, MAX_OPSET = 17, 20  # 17: the floor the project promises; 20: the tracer's newest
_PROTOBUF_LIMIT = 2**31 - 1  # a single-file ONNX model cannot be larger
CALIB_MAX_SIDE = 1024  # frames of a model without a training size are shrunk to this for calibration
_TRACE_SIZE = Size(96, 64)  # any size traces the same dynamic graph; small keeps tracing fast
MIN_STATIC_SIDE = 8


def check_output_path(out: Path) -> None:
    """InputError when `out` cannot be written: its folder is missing, or it is a folder."""
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: folder {out.parent} does not exist; create it first")
    if out.is_dir():
        raise InputError(f"{out} is a folder; give a file name such as {out / 'model.onnx'}")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}'; valid: {', '.join(PRECISIONS)}")


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"opset {opset} is not supported; valid: {MIN_OPSET}..{MAX_OPSET}")


def check_static(static: Size | str | None, batch: int = 1) -> Size | None:
    """The fixed input size as a Size (None: dynamic); InputError unless at least 8x8 with batch >= 1."""
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise InputError(f"the static batch must be an integer >= 1, got {batch!r}")
    if static is None:
        if batch != 1:
            raise InputError(f"a static batch ({batch}) needs a static size: pass --static WIDTHxHEIGHT too")
        return None
    size = Size.of(static, "--static")
    if min(size.width, size.height) < MIN_STATIC_SIDE:
        raise InputError(f"--static {size} is too small; a static size is at least "
                         f"{MIN_STATIC_SIDE}x{MIN_STATIC_SIDE} (WIDTHxHEIGHT, e.g. 1024x512)")
    return size


def _calibration_frames(calib: Sequence[str | Path] | Sequence[np.ndarray] | None, precision: str,
                        count: int, size: Size | None) -> list[np.ndarray] | None:
    given = calib is not None and len(calib) > 0
    if precision != "int8":
        if given:
            raise InputError(f"calibration frames are for int8 export; {precision} does not use them")
        return None
    if not given:
        raise InputError("int8 export needs calibration frames from the target domain: pass an "
                         "image folder, a dataset root or video files (--calib)")
    if isinstance(calib[0], np.ndarray):
        return list(calib)
    return load_frames(calib, count, size=size, max_side=CALIB_MAX_SIDE)


def export_onnx(model: nn.Module, meta: ModelMeta, out: str | Path, *, input_kind: str = "float",
                input_order: str = "bgr", output_kind: str = "logits", confidence: bool = False,
                precision: str = "fp32", static: Size | str | None = None, batch: int = 1,
                opset: int = MIN_OPSET, calib: Sequence[str | Path] | Sequence[np.ndarray] | None = None,
                calib_frames: int = 64, calib_method: str = "minmax", int8_layout: str = "tensorrt",
                slim: bool | None = None, source_sha256: str | None = None,
                for_tensorrt: bool | None = None) -> Path:
    """Export `model` (normalised NCHW in, logits NCHW out) to `out`; returns `out`.

    Dynamic batch, height and width unless `static` fixes the size (a `Size` or 'WIDTHxHEIGHT';
    then the batch is fixed at `batch`). int8 needs `calib`: image folders, dataset roots or video
    files, or BGR uint8 frames. The file is checked (onnx.checker, the I/O contract, no external
    data) and written atomically. `slim`: simplify the traced graph with onnxslim (None: when it
    is installed). `for_tensorrt`: the file is meant for TensorRT, so each problem TensorRT's
    parser would have is a warning; otherwise they are one summary line (None: unless the file
    is int8 in the CPU layout).
    """
    out = Path(out)
    check_io_options(input_kind, input_order, output_kind)
    check_precision(precision)
    check_opset(opset)
    size = check_static(static, batch)
    ops = None
    if precision == "int8":
        check_int8_layout(int8_layout)
        ops = int8_ops(meta.arch)  # what the architecture registry says int8 quantises
    check_output_path(out)
    if slim is None:
        slim = importlib.util.find_spec("onnxslim") is not None
    elif slim:
        require("onnxslim", "train", "Slimming the exported graph")
    frames = _calibration_frames(calib, precision, calib_frames, size or meta.train_size)
    final = meta.with_(
        input_kind=input_kind, input_order=input_order, output_kind=output_kind,
        confidence=confidence, precision=precision, mslseg_version=__version__,
        train_size=meta.train_size or size,
        source_sha256=meta.source_sha256 if source_sha256 is None else source_sha256,
        extra=meta.extra | ({"int8_layout": int8_layout} if precision == "int8" else {}),
    )
    graph = ExportGraph(model, meta.normalization, meta.num_classes, input_kind=input_kind,
                        input_order=input_order, output_kind=output_kind, confidence=confidence,
                        half=precision == "fp16")
    with writing(out):  # the scratch folder sits beside `out`: a full or read-only disk shows here
        scratch = tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent)
    with scratch as tmp:
        path = Path(tmp) / "traced.onnx"
        with writing(out):
            path.write_bytes(_trace(graph, static=size, batch=batch, opset=opset))
        proto = _slim(onnx.load(str(path))) if slim else onnx.load(str(path))
        if frames is not None:  # quantise the (slimmed) fp32 graph
            with writing(out):
                onnx.save_model(proto, str(path))
            path = quantize_int8(path, Path(tmp) / "int8.onnx", frames, input_kind=input_kind,
                                 input_order=input_order, norm=meta.normalization, ops=ops,
                                 method=calib_method, layout=int8_layout)
            proto = onnx.load(str(path))
    if output_kind != "labels":
        # the tracer cannot infer the class dimension through Resize; it is a constant
        proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = meta.num_classes
    write_meta(proto, final)
    _check(proto, final, size, batch)
    with atomic_path(out) as tmp_out:
        onnx.save_model(proto, str(tmp_out))
    cpu_int8 = precision == "int8" and int8_layout == "cpu"
    if for_tensorrt is None:
        for_tensorrt = not cpu_int8
    log_trt_problems(out, trt_op_problems(proto), full=for_tensorrt,
                     expected="an int8 file in the CPU layout" if cpu_int8 else None)
    log.info("wrote %s (%s, %s in, %s out)", out, precision, input_kind, output_kind)
    return out


def _trace(graph: ExportGraph, *, static: Size | None, batch: int, opset: int) -> bytes:
    """The traced graph as ONNX bytes (written by the caller: torch's own writer reports a full
    disk as an unexplained RuntimeError)."""
    h, w = (static or _TRACE_SIZE).hw
    n = batch if static else 1
    if graph.input_kind == "uint8":
        dummy = torch.zeros(n, h, w, 3, dtype=torch.uint8)
        in_axes = {0: "batch", 1: "height", 2: "width"}
    else:
        dummy = torch.zeros(n, 3, h, w)
        in_axes = {0: "batch", 2: "height", 3: "width"}
    names = graph.output_names()
    out_axes = {name: {0: "batch", 1: "height", 2: "width"} for name in names}
    if graph.output_kind != "labels":
        out_axes["output"] = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings(), torch.no_grad():
        # the tracer announces its own deprecation; the choice is deliberate (module docstring)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        # transformers' attention checks a shape that is constant for these models (no causal mask)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"transformers\.")
        buffer = io.BytesIO()
        try:
            torch.onnx.export(
                graph, (dummy,), buffer, dynamo=False, opset_version=opset,
                input_names=["input"], output_names=names, do_constant_folding=True,
                dynamic_axes=None if static else {"input": in_axes, **out_axes},
            )
        except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
            raise ExportError(f"PyTorch could not export the model to ONNX ({str(exc)[:300]})") from None
    return buffer.getvalue()


def _slim(proto: onnx.ModelProto) -> onnx.ModelProto:
    # folds the tracer's shape arithmetic and drops Identity/Constant nodes (about a third of them)
    import onnxslim

    try:
        return onnxslim.slim(proto)
    except Exception as exc:  # an optional clean-up: keep the traced graph, which is valid
        log.warning("onnxslim could not simplify the graph (%s); keeping it as traced", str(exc)[:200])
        return proto


def _check(proto: onnx.ModelProto, meta: ModelMeta, static: Size | None, batch: int) -> None:
    external = [t.name for t in proto.graph.initializer
                if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ExportError(f"the export left {len(external)} tensors in external files; it must be one file")
    if proto.ByteSize() > _PROTOBUF_LIMIT:
        raise ExportError("the model is larger than 2 GiB, the limit of a single-file ONNX model; "
                          "export a smaller backbone")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph is not valid ONNX ({str(exc)[:300]})") from None
    check_contract(proto, meta, static=(batch, *static.hw) if static else None)
