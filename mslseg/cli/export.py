"""`mslseg export`: checkpoint -> ONNX (fp32 | fp16 | int8) with a parity check -> TensorRT engine."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mslseg.architectures import FACTORY_OPTION_HELP
from mslseg.cli.choices import choice_enum
from mslseg.export.int8 import AUTO, CALIBRATION_METHODS, INT8_LAYOUTS
from mslseg.export.trt_profile import HARDWARE_LEVELS
from mslseg.runtime.metadata import INPUT_KINDS, OUTPUT_KINDS, PRECISIONS

if TYPE_CHECKING:
    from mslseg.export.trt_profile import EngineOptions


InputKind = choice_enum("InputKind", INPUT_KINDS)
OutputKind = choice_enum("OutputKind", OUTPUT_KINDS)
Precision = choice_enum("Precision", PRECISIONS)
CalibMethod = choice_enum("CalibMethod", CALIBRATION_METHODS)
Int8Layout = choice_enum("Int8Layout", (AUTO, *INT8_LAYOUTS))
HardwareLevel = choice_enum("HardwareLevel", HARDWARE_LEVELS)


def export(
    src: Annotated[Path, typer.Argument(help="mslseg checkpoint (.pt), or with --trt an exported .onnx.")],
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="ONNX file to write (default: SRC with .onnx); with --trt and an .onnx SRC, "
        "the engine (default: .engine).")] = None,
    overwrite: Annotated[bool, typer.Option(
        help="Replace earlier outputs: the .onnx, its .parity.json, their .failed names, the engine and "
        "its .json (default: refuse if any exists).")] = False,
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
        help="int8 calibration frames from the target domain: an image folder, a dataset root, a "
        "video or a robot bag (with --topic); repeat for several.")] = None,
    calib_frames: Annotated[int, typer.Option(min=1, help="Frames sampled across --calib.")] = 64,
    topic: Annotated[str | None, typer.Option(
        metavar="NAME", help="The image topic of the robot bags among --calib (.mcap, .bag, .db3, a rosbag2 "
        "folder), as in mslseg infer and adapt.")] = None,
    calib_method: Annotated[CalibMethod, typer.Option(
        help="int8 activation ranges: minmax, percentile (clips outliers) or entropy.")] = CalibMethod.minmax,
    int8_layout: Annotated[Int8Layout, typer.Option(
        help="auto: tensorrt with --trt, cpu without. tensorrt: symmetric int8, what TensorRT builds "
             "(runs on ONNX Runtime too, but little faster than fp32 on CPUs); cpu: uint8 activations "
             "for ONNX Runtime on x86 CPUs (~2.7x faster than fp32 there; TensorRT cannot build it).")] = Int8Layout.auto,
    static: Annotated[str | None, typer.Option(
        metavar="WIDTHxHEIGHT", help="Fix the input size, e.g. 1024x512, and the batch (--static-batch) "
        "(default: dynamic batch, height, width).")] = None,
    static_batch: Annotated[int | None, typer.Option(
        min=1, help="The fixed batch of a --static model (default 1).")] = None,
    sample: Annotated[list[Path] | None, typer.Option(
        help="Image for the parity check; repeat for several (default: held-out --calib frames, "
        "else generated frames).")] = None,
    gate: Annotated[float | None, typer.Option(
        min=0.0, max=100.0, help="Label agreement in percent, above 0, that the parity check requires "
        "(default: fp32 99.9, fp16 99.5, int8 97).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset, 17..20.")] = 17,
    slim: Annotated[bool | None, typer.Option(
        "--slim/--no-slim", help="Simplify the graph with onnxslim (default: when installed).")] = None,
    trt: Annotated[bool, typer.Option("--trt", help="Also build a TensorRT engine (needs TensorRT and "
                                      "an NVIDIA GPU).")] = False,
    min_size: Annotated[str | None, typer.Option(
        "--min", metavar="WIDTHxHEIGHT", help="TensorRT profile: smallest frame size (default: half "
        "of --opt).")] = None,
    opt_size: Annotated[str | None, typer.Option(
        "--opt", metavar="WIDTHxHEIGHT", help="TensorRT profile: the frame size to tune for (default: "
        "the training size, else 1024x512).")] = None,
    max_size: Annotated[str | None, typer.Option(
        "--max", metavar="WIDTHxHEIGHT", help="TensorRT profile: largest frame size (default: --opt).")] = None,
    min_batch: Annotated[int | None, typer.Option(min=1, help="TensorRT profile: smallest batch (1).")] = None,
    opt_batch: Annotated[int | None, typer.Option(min=1, help="TensorRT profile: the batch to tune for "
                                                  "(1).")] = None,
    max_batch: Annotated[int | None, typer.Option(min=1, help="TensorRT profile: largest batch (default: "
                                                  "--opt-batch).")] = None,
    workspace: Annotated[float | None, typer.Option(min=0.0625, help="TensorRT workspace limit in GiB "
                                                    "(4).")] = None,
    timing_cache: Annotated[Path | None, typer.Option(
        help="TensorRT timing cache file, read and updated (default: beside the engine).")] = None,
    version_compatible: Annotated[bool, typer.Option(
        help="Engine runs on later TensorRT versions too (slower to load).")] = False,
    hardware_compat: Annotated[HardwareLevel, typer.Option(
        help="Engine runs on other GPUs: ampere+ (any Ampere or newer) or same-cc.")] = HardwareLevel.none,
    dla_core: Annotated[int | None, typer.Option(min=0, help="Build for this DLA core (Jetson; fp16/int8 "
                                                 "only).")] = None,
    factory: Annotated[str | None, typer.Option(metavar="python:MODULE:FUNCTION",
                                                help=FACTORY_OPTION_HELP)] = None,
) -> None:
    """Export a checkpoint to ONNX, check it against PyTorch, optionally build a TensorRT engine.

    Every option is checked before anything is written; existing outputs are refused unless --overwrite.
    """
    from mslseg.export.trt_profile import EngineOptions
    from mslseg.runtime.errors import InputError

    trt_given = {"--min": min_size, "--opt": opt_size, "--max": max_size, "--min-batch": min_batch,
                 "--opt-batch": opt_batch, "--max-batch": max_batch, "--workspace": workspace,
                 "--timing-cache": timing_cache, "--version-compatible": version_compatible or None,
                 "--hardware-compat": None if hardware_compat is HardwareLevel.none else hardware_compat,
                 "--dla-core": dla_core}
    if not trt and any(v is not None for v in trt_given.values()):
        named = [k for k, v in trt_given.items() if v is not None]
        raise InputError(f"{', '.join(named)}: for a TensorRT engine build; add --trt, or drop "
                         f"{'it' if len(named) == 1 else 'them'}")
    if gate is not None and not 0 < gate <= 100:
        raise InputError(f"--gate is the share of pixels in percent that must agree, in (0, 100]; got {gate:g}")
    options = {name: value for name, value in dict(
        min_size=min_size, opt_size=opt_size, max_size=max_size, min_batch=min_batch, opt_batch=opt_batch,
        max_batch=max_batch, workspace_gib=workspace, timing_cache=timing_cache,
        version_compatible=version_compatible, hardware_compatibility=hardware_compat.value,
        dla_core=dla_core).items() if value is not None}
    engine = EngineOptions(**options) if trt else None
    # option -> (the ExportSpec field, its value as given): one table for the spec and for refusing
    # export options on an .onnx SRC, whose defaults come from the spec itself
    given = {"--input": ("input_kind", input_kind.value), "--rgb": ("input_order", "rgb" if rgb else "bgr"),
             "--output": ("output_kind", output_kind.value), "--confidence": ("confidence", confidence),
             "--precision": ("precision", precision.value), "--calib": ("calib", calib or None),
             "--calib-frames": ("calib_frames", calib_frames), "--topic": ("calib_topic", topic), "--calib-method": ("calib_method", calib_method.value),
             "--int8-layout": ("int8_layout", int8_layout.value), "--static": ("static", static),
             "--static-batch": ("batch", static_batch or 1), "--sample": ("samples", sample or None),
             "--gate": ("gate", None if gate is None else gate / 100.0), "--opset": ("opset", opset),
             "--slim/--no-slim": ("slim", slim), "--factory": ("factory", factory)}
    if src.suffix.lower() == ".onnx":
        from mslseg.export.spec import ExportSpec  # the class only: no torch for an engine build
        from mslseg.runtime.onnx_reader import check_not_torch

        if src.is_file():  # by its bytes, as infer does: a .pt renamed .onnx is said to be one, with or without --trt
            check_not_torch(src)

        defaults = ExportSpec.defaults()
        _refuse_export_options(src, trt, [opt for opt, (name, value) in given.items() if value != defaults[name]])
        _build(src, out, engine, overwrite)
        return
    from mslseg.export.export_job import export_checkpoint
    from mslseg.export.spec import ExportSpec

    spec = ExportSpec(**dict(given.values()), engine=engine)
    result = export_checkpoint(src, out, spec, overwrite=overwrite, progress=_progress())
    what = precision.value
    if result.int8_layout:
        what += f", {result.int8_layout} layout: {result.layout_reason}"
    line = f"wrote {result.onnx} ({what}; parity: {result.report.summary()})"
    if result.engine is not None:
        line += f"; engine {result.engine}"
    typer.echo(line)


def _progress() -> Callable[[str], None] | None:
    """20-30 s of loading, calibrating, tracing and checking: a line as each starts, on stderr (stdout
    keeps the one result line) where a person watches it; piped or captured, the steps stay log lines."""
    if not _stderr_is_terminal():
        return None
    return lambda line: typer.echo(f"export: {line}", err=True)


def _stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


def _refuse_export_options(src: Path, trt: bool, named: list[str]) -> None:
    from mslseg.runtime.errors import InputError

    if not trt:
        raise InputError(f"{src} is already ONNX; pass --trt to build a TensorRT engine from it")
    if named:
        raise InputError(f"{', '.join(named)}: for exporting a checkpoint, but {src} is already ONNX; drop "
                         "them, or export the checkpoint again with them")


def _build(onnx_path: Path, out: Path | None, engine: EngineOptions, overwrite: bool) -> None:
    from mslseg.export.trt_build import build_engine
    from mslseg.export.trt_profile import sidecar_path

    built = build_engine(onnx_path, out, **engine.as_kwargs(), overwrite=overwrite)
    typer.echo(f"wrote {built} and {sidecar_path(built)} (TensorRT engine of {onnx_path})")
