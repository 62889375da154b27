"""export_checkpoint: checkpoint -> checked ONNX file with its parity report (-> TensorRT engine).

What `mslseg export` runs. Every argument is checked before anything is written, and before
minutes of loading, calibrating and tracing: a bad option never leaves a file behind.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mslseg.export.calibration import load_frames, read_image, resize, synthetic_frames
from mslseg.export.graph import check_io_options
from mslseg.export.int8 import CALIBRATION_METHODS, choose_int8_layout
from mslseg.export.onnx_export import (
    CALIB_MAX_SIDE,
    MIN_OPSET,
    check_opset,
    check_output_path,
    check_precision,
    check_static,
    export_onnx,
)
from mslseg.export.parity import ParityReport, check_gate, check_parity, failed_path, report_path
from mslseg.export.trt_build import build_engine, check_engine_path, engine_path
from mslseg.export.trt_profile import (
    EngineOptions,
    ProfilePoint,
    check_engine_target,
    check_tensorrt_features,
    import_tensorrt,
    resolve_profile,
)
from mslseg.runtime.errors import InputError, require
from mslseg.runtime.io.atomic import refuse_existing
from mslseg.runtime.sizes import Size

log = logging.getLogger(__name__)

DEFAULT_SIZE = Size(512, 256)  # generated parity frames when the checkpoint has no training size


@dataclass(frozen=True)
class ExportResult:
    onnx: Path
    report: ParityReport
    int8_layout: str | None = None  # the layout an int8 file was quantised in
    layout_reason: str | None = None  # what chose it, e.g. "--int8-layout auto with --trt"
    engine: Path | None = None  # the TensorRT engine, when one was asked for


def onnx_outputs(out: str | Path) -> list[Path]:
    """The files an export may write: the model, its parity report, and both under .failed names."""
    kept = failed_path(out)
    return [Path(out), report_path(out), kept, report_path(kept)]


def _split_holdout(frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration frames, two held-out parity frames); small sets are shared, not split."""
    if len(frames) < 4:
        return frames, frames[:2]
    held = {len(frames) // 3, 2 * len(frames) // 3}
    return [f for i, f in enumerate(frames) if i not in held], [frames[i] for i in sorted(held)]


def _parity_frames(given: list[np.ndarray], held: list[np.ndarray], static: Size | None,
                   size: Size | None) -> list[np.ndarray]:
    if given:  # the user's images, at the fixed size of a static model
        return [resize(f, static) for f in given] if static else given
    frames = list(held) or synthetic_frames(2, size or DEFAULT_SIZE)
    if not static:  # a dynamic model is also checked at about 3/4 of the size
        h, w = frames[0].shape[:2]
        frames.append(resize(frames[-1], Size(max(8 * (3 * w // 32), 8), max(8 * (3 * h // 32), 8))))
    return frames


def _check_int8(precision: str, calib: Sequence[str | Path] | None, calib_frames: int, calib_method: str,
                int8_layout: str, engine: EngineOptions | None) -> tuple[str | None, str | None]:
    """(layout, why it was chosen) of an int8 export, (None, None) otherwise; InputError on a bad mix."""
    if precision != "int8":
        if calib:
            raise InputError(f"--calib is for int8 export; a {precision} export does not use it")
        return None, None
    if not calib:
        raise InputError("int8 export needs calibration frames from the target domain: pass --calib "
                         "with an image folder, a dataset root or video files")
    if calib_frames < 1:
        raise InputError(f"--calib-frames must be >= 1, got {calib_frames}")
    if calib_method not in CALIBRATION_METHODS:
        raise InputError(f"unknown calibration method '{calib_method}'; valid: {', '.join(CALIBRATION_METHODS)}")
    layout, why = choose_int8_layout(int8_layout, tensorrt=engine is not None)
    if engine is not None and layout == "cpu":
        raise InputError("--int8-layout cpu makes a file TensorRT cannot build (uint8 activations); "
                         "drop --trt, or use --int8-layout auto or tensorrt")
    return layout, why


def export_checkpoint(checkpoint_path: str | Path, out: str | Path | None = None, *,
                      input_kind: str = "float", input_order: str = "bgr", output_kind: str = "logits",
                      confidence: bool = False, precision: str = "fp32",
                      static: Size | str | None = None, batch: int = 1, opset: int = MIN_OPSET,
                      calib: Sequence[str | Path] | None = None, calib_frames: int = 64,
                      calib_method: str = "minmax", int8_layout: str = "auto",
                      samples: Sequence[str | Path] | None = None,
                      gate: float | None = None, slim: bool | None = None,
                      engine: EngineOptions | None = None, overwrite: bool = True,
                      factory: str | None = None) -> ExportResult:
    """Export an mslseg checkpoint to ONNX (default: beside it, as .onnx) and check its parity.

    `static` fixes the input size (WIDTHxHEIGHT) and `batch`. int8: `int8_layout` auto is the
    TensorRT layout with `engine`, the CPU layout without. Parity runs on `samples` (image
    files; BGR as read), else on frames held out of the calibration set (int8), else on
    generated frames; a dynamic model is also checked at a second size. A failed gate raises
    ExportError and leaves the model under a `.failed.onnx` name. `engine`: then a TensorRT
    engine is built beside the .onnx after the parity check. `overwrite=False` refuses to
    replace any file the export would write. Everything is checked before anything is written.
    `factory`: the python:MODULE:FUNCTION that built a checkpoint of the user's own network.
    """
    from mslseg.checkpoint import file_sha256, load_model

    ckpt = Path(checkpoint_path)
    out = Path(out) if out is not None else ckpt.with_suffix(".onnx")
    check_io_options(input_kind, input_order, output_kind)
    check_precision(precision)
    check_opset(opset)
    size = check_static(static, batch)
    check_gate(gate)
    layout, why = _check_int8(precision, calib, calib_frames, calib_method, int8_layout, engine)
    if engine is not None:
        check_engine_target(engine, precision=precision, int8_layout=layout, source=f"the {precision} export")
    check_output_path(out)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"the output {out} must end in .onnx (the engine, with --trt, goes beside it)")
    if out.resolve() == ckpt.resolve():
        raise InputError(f"the output {out} is the checkpoint itself; choose another path")
    for path in onnx_outputs(out):
        refuse_existing(path, overwrite, option="-o")
    if engine is not None:
        check_engine_path(engine_path(out), overwrite)
    if slim:
        require("onnxslim", "train", "Slimming the exported graph")
    if engine is not None:
        # fail before minutes of export when TensorRT is missing or cannot honour the options
        check_tensorrt_features(import_tensorrt(), engine)
    given = [read_image(p) for p in samples or []]
    model, meta = load_model(ckpt, factory=factory)
    if engine is not None:  # the profile needs the training size: checked now, built after parity
        resolve_profile(meta, ProfilePoint(batch, size) if size else None, min_size=engine.min_size,
                        opt_size=engine.opt_size, max_size=engine.max_size, min_batch=engine.min_batch,
                        opt_batch=engine.opt_batch, max_batch=engine.max_batch)
    run_size = size or meta.train_size
    calib_set = None
    held: list[np.ndarray] = []
    if precision == "int8":
        frames = load_frames(calib, calib_frames + (0 if given else 2), size=run_size,
                             max_side=CALIB_MAX_SIDE)
        calib_set, held = (frames, []) if given else _split_holdout(frames)
    parity = _parity_frames(given, held, size, run_size)
    path = export_onnx(model, meta, out, input_kind=input_kind, input_order=input_order,
                       output_kind=output_kind, confidence=confidence, precision=precision,
                       static=size, batch=batch, opset=opset, calib=calib_set, calib_method=calib_method,
                       int8_layout=layout or "tensorrt", slim=slim, source_sha256=file_sha256(ckpt),
                       for_tensorrt=engine is not None or int8_layout == "tensorrt")
    report = check_parity(path, model, parity, gate=gate)
    for stale in onnx_outputs(out)[2:]:  # an earlier failed export of this name, now replaced
        stale.unlink(missing_ok=True)
    built = None
    if engine is not None:
        built = build_engine(path, engine_path(out), **engine.as_kwargs())
    return ExportResult(path, report, layout, why, built)
