"""`mslseg export`: checkpoint -> ONNX (fp32 | fp16 | int8) with a parity check -> TensorRT engine."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class InputKind(str, Enum):
    float = "float"
    uint8 = "uint8"


class OutputKind(str, Enum):
    logits = "logits"
    probs = "probs"
    labels = "labels"


class Precision(str, Enum):
    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class CalibMethod(str, Enum):
    minmax = "minmax"
    percentile = "percentile"
    entropy = "entropy"


class Int8Layout(str, Enum):
    tensorrt = "tensorrt"
    cpu = "cpu"


class HardwareLevel(str, Enum):
    none = "none"
    ampere = "ampere+"
    same_cc = "same-cc"


def export(
    src: Annotated[Path, typer.Argument(help="mslseg checkpoint (.pt), or with --trt an exported .onnx.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="ONNX file to write (default: SRC with .onnx); with --trt and an .onnx SRC, "
        "the engine (default: .engine).")] = None,
    input_kind: Annotated[InputKind, typer.Option(
        "--input", help="float: (N,3,H,W) normalised; uint8: (N,H,W,3) raw frames, preprocessing in "
        "the graph.")] = InputKind.float,
    rgb: Annotated[bool, typer.Option(help="uint8 frames arrive in RGB order (default: BGR, as OpenCV "
                                      "reads).")] = False,
    output_kind: Annotated[OutputKind, typer.Option(
        "--output", help="logits (N,C,H,W), probs (softmax in the graph) or labels (N,H,W, argmax in "
        "the graph).")] = OutputKind.logits,
    confidence: Annotated[bool, typer.Option(help="Add a 'confidence' output: the max probability "
                                             "per pixel.")] = False,
    precision: Annotated[Precision, typer.Option(help="fp32, fp16 (weights and compute) or int8 (Q/DQ, "
                                                 "needs --calib).")] = Precision.fp32,
    calib: Annotated[list[Path] | None, typer.Option(
        help="int8 calibration frames from the target domain: an image folder, a dataset root or a "
        "video; repeat for several.")] = None,
    calib_frames: Annotated[int, typer.Option(min=1, help="Frames sampled across --calib.")] = 64,
    calib_method: Annotated[CalibMethod, typer.Option(
        help="int8 activation ranges: minmax, percentile (clips outliers) or entropy.")] = CalibMethod.minmax,
    int8_layout: Annotated[Int8Layout, typer.Option(
        help="int8 for TensorRT (symmetric, runs on ONNX Runtime too) or for ONNX Runtime on x86 CPUs "
             "(uint8 activations, ~2.5x faster there; TensorRT cannot build it).")] = Int8Layout.tensorrt,
    static: Annotated[tuple[int, int] | None, typer.Option(
        metavar="H W", help="Fix batch 1 and this input size (default: dynamic batch, height, "
        "width).")] = None,
    sample: Annotated[list[Path] | None, typer.Option(
        help="Image for the parity check; repeat for several (default: held-out --calib frames, "
        "else generated frames).")] = None,
    gate: Annotated[float | None, typer.Option(
        min=0.0, max=100.0, help="Label agreement in percent the parity check requires (default: fp32 "
        "99.9, fp16 99.5, int8 97).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset, 17..20.")] = 17,
    slim: Annotated[bool | None, typer.Option(
        "--slim/--no-slim", help="Simplify the graph with onnxslim (default: when installed).")] = None,
    trt: Annotated[bool, typer.Option("--trt", help="Also build a TensorRT engine (needs TensorRT and "
                                      "an NVIDIA GPU).")] = False,
    min_shape: Annotated[str | None, typer.Option(
        "--min", help="TensorRT profile: smallest BATCHxHxW (default: half the training size).")] = None,
    opt_shape: Annotated[str | None, typer.Option(
        "--opt", help="TensorRT profile: the BATCHxHxW to tune for (default: training size).")] = None,
    max_shape: Annotated[str | None, typer.Option(
        "--max", help="TensorRT profile: largest BATCHxHxW (default: --opt).")] = None,
    workspace: Annotated[float, typer.Option(min=0.0625, help="TensorRT workspace limit in GiB.")] = 4.0,
    timing_cache: Annotated[Path | None, typer.Option(
        help="TensorRT timing cache file, read and updated (default: beside the engine).")] = None,
    version_compatible: Annotated[bool, typer.Option(
        help="Engine runs on later TensorRT versions too (slower to load).")] = False,
    hardware_compat: Annotated[HardwareLevel, typer.Option(
        help="Engine runs on other GPUs: ampere+ (any Ampere or newer) or same-cc.")] = HardwareLevel.none,
    dla_core: Annotated[int | None, typer.Option(min=0, help="Build for this DLA core (Jetson; fp16/int8 "
                                                 "only).")] = None,
) -> None:
    """Export a checkpoint to ONNX, check it against PyTorch, optionally build a TensorRT engine."""
    from mslseg.runtime.errors import InputError, require

    trt_options = dict(min_shape=min_shape, opt_shape=opt_shape, max_shape=max_shape,
                       workspace_gib=workspace, version_compatible=version_compatible,
                       hardware_compatibility=hardware_compat.value, dla_core=dla_core,
                       timing_cache=timing_cache if timing_cache is not None else True)
    if src.suffix.lower() == ".onnx":
        if not trt:
            raise InputError(f"{src} is already ONNX; pass --trt to build a TensorRT engine from it")
        _build(src, out, trt_options)
        return
    from mslseg.export.trt_profile import import_tensorrt

    if trt:
        import_tensorrt()  # fail before minutes of export when TensorRT is missing
    require("torch", "train", "Exporting a checkpoint")
    from mslseg.export.pipeline import export_checkpoint

    result = export_checkpoint(
        src, out, input_kind=input_kind.value, input_order="rgb" if rgb else "bgr",
        output_kind=output_kind.value, confidence=confidence, precision=precision.value,
        static=static, opset=opset, calib=calib or None, calib_frames=calib_frames,
        calib_method=calib_method.value, int8_layout=int8_layout.value,
        samples=sample or None, gate=None if gate is None else gate / 100.0, slim=slim,
    )
    line = f"wrote {result.onnx} ({precision.value}, parity: {result.report.summary()})"
    if trt:
        engine = _build(result.onnx, None, trt_options, echo=False)
        line += f"; engine {engine}"
    typer.echo(line)


def _build(onnx_path: Path, out: Path | None, options: dict, echo: bool = True) -> Path:
    from mslseg.export.trt_build import build_engine
    from mslseg.export.trt_profile import sidecar_path

    engine = build_engine(onnx_path, out, **options)
    if echo:
        typer.echo(f"wrote {engine} and {sidecar_path(engine)} (TensorRT engine of {onnx_path})")
    return engine
