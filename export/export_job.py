"""export_checkpoint: checkpoint -> checked ONNX file with its parity report (-> TensorRT engine).

What `mslseg export` runs. The options are an ExportSpec (export/spec.py), checked once when it is
made; the paths and what this machine has installed are checked here, all before anything is
written and before minutes of loading, calibrating and tracing: a bad option never leaves a file behind.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.export.calibration import load_frames, read_image, resize, synthetic_frames
from mslseg.export.onnx_export import CALIB_MAX_SIDE, check_output_path, export_onnx
from mslseg.export.parity import ParityReport, check_parity, failed_path, report_path
from mslseg.export.spec import ExportSpec
from mslseg.export.trt_build import build_engine, check_engine_path, engine_path
from mslseg.export.trt_profile import (
    ProfilePoint,
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


def export_checkpoint(checkpoint_path: str | Path, out: str | Path | None = None, spec: ExportSpec | None = None,
                      *, overwrite: bool = True, progress: Callable[[str], None] | None = None,
                      **options: Any) -> ExportResult:
    """Export an mslseg checkpoint to ONNX (default: beside it, as .onnx) and check its parity.

    `spec` says what to make; or pass its fields as keywords (`precision="int8", calib=[...]`) and
    an ExportSpec is built from them (see export/spec.py for each one). int8: `int8_layout` auto is
    the TensorRT layout with `engine`, the CPU layout without. Parity runs on `samples` (image
    files; BGR as read), else on frames held out of the calibration set (int8), else on
    generated frames; a dynamic model is also checked at a second size. A failed gate raises
    ExportError and leaves the model under a `.failed.onnx` name. `engine`: then a TensorRT
    engine is built beside the .onnx after the parity check. `overwrite=False` refuses to
    replace any file the export would write. Everything is checked before anything is written.
    `progress`: called with a line as each long step starts (the CLI prints them); else they are logged.
    """
    from mslseg.checkpoint import file_sha256, load_model

    if spec is None:
        spec = ExportSpec(**options)
    elif options:
        raise InputError(f"pass an ExportSpec or its options ({', '.join(sorted(options))}), not both")
    ckpt = Path(checkpoint_path)
    out = Path(out) if out is not None else ckpt.with_suffix(".onnx")
    _check_outputs(ckpt, out, spec, overwrite)
    engine, size = spec.engine, spec.static
    step = progress or log.info
    given = [read_image(p) for p in spec.samples or []]
    step(f"loading {ckpt}")
    model, meta = load_model(ckpt, factory=spec.factory)
    if engine is not None:  # the profile needs the training size: checked now, built after parity
        resolve_profile(meta, ProfilePoint(spec.batch, size) if size else None, min_size=engine.min_size,
                        opt_size=engine.opt_size, max_size=engine.max_size, min_batch=engine.min_batch,
                        opt_batch=engine.opt_batch, max_batch=engine.max_batch)
    run_size = size or meta.train_size
    calib_set = None
    held: list[np.ndarray] = []
    if spec.precision == "int8":
        step(f"reading {spec.calib_frames} calibration frames from {', '.join(str(c) for c in spec.calib)}")
        frames = load_frames(spec.calib, spec.calib_frames + (0 if given else 2), size=run_size,
                             max_side=CALIB_MAX_SIDE, interpolation=meta.interpolation, topic=spec.calib_topic)
        calib_set, held = (frames, []) if given else _split_holdout(frames)
    parity = _parity_frames(given, held, size, run_size)
    step(f"tracing to ONNX ({spec.precision}" + (f", calibrating on {len(calib_set)} frames)" if calib_set else ")"))
    path = export_onnx(model, meta, out, input_kind=spec.input_kind, input_order=spec.input_order,
                       output_kind=spec.output_kind, confidence=spec.confidence, precision=spec.precision,
                       static=size, batch=spec.batch, opset=spec.opset, calib=calib_set,
                       calib_method=spec.calib_method, int8_layout=spec.layout or "tensorrt", slim=spec.slim,
                       source_sha256=file_sha256(ckpt),
                       for_tensorrt=engine is not None or spec.int8_layout == "tensorrt")
    step(f"checking parity against PyTorch on {len(parity)} frames")
    report = check_parity(path, model, parity, gate=spec.gate)
    for stale in onnx_outputs(out)[2:]:  # an earlier failed export of this name, now replaced
        stale.unlink(missing_ok=True)
    built = None
    if engine is not None:
        step(f"building the TensorRT engine {engine_path(out)} (minutes for a large model)")
        built = build_engine(path, engine_path(out), **engine.as_kwargs())
    return ExportResult(path, report, spec.layout, spec.layout_reason, built)


def _check_outputs(ckpt: Path, out: Path, spec: ExportSpec, overwrite: bool) -> None:
    """What the spec cannot check alone: the paths, and what this machine must have installed."""
    check_output_path(out)
    if out.suffix.lower() != ".onnx":
        raise InputError(f"the output {out} must end in .onnx (the engine, with --trt, goes beside it)")
    if out.resolve() == ckpt.resolve():
        raise InputError(f"the output {out} is the checkpoint itself; choose another path")
    for path in onnx_outputs(out):
        refuse_existing(path, overwrite, option="-o")
    if spec.engine is not None:
        check_engine_path(engine_path(out), overwrite)
    if spec.slim:
        require("onnxslim", "train", "Slimming the exported graph")
    if spec.engine is not None:
        # fail before minutes of export when TensorRT is missing or cannot honour the options
        check_tensorrt_features(import_tensorrt(), spec.engine)
