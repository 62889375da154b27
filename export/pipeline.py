"""export_checkpoint: checkpoint -> checked ONNX file with its parity report (what `mslseg export` runs)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mslseg.export.calibration import load_frames, read_image, resize, synthetic_frames
from mslseg.export.graph import check_io_options
from mslseg.export.onnx_export import (
    CALIB_MAX_SIDE,
    MIN_OPSET,
    check_output_path,
    check_precision,
    check_static,
    export_onnx,
)
from mslseg.export.parity import ParityReport, check_parity
from mslseg.runtime.errors import InputError

log = logging.getLogger(__name__)

DEFAULT_SIZE = (256, 512)  # (H, W) of generated parity frames when the checkpoint has no train size


@dataclass(frozen=True)
class ExportResult:
    onnx: Path
    report: ParityReport


def _split_holdout(frames: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(calibration frames, two held-out parity frames); small sets are shared, not split."""
    if len(frames) < 4:
        return frames, frames[:2]
    held = {len(frames) // 3, 2 * len(frames) // 3}
    return [f for i, f in enumerate(frames) if i not in held], [frames[i] for i in sorted(held)]


def _parity_frames(given: list[np.ndarray], held: list[np.ndarray], static: tuple[int, int] | None,
                   size: tuple[int, int] | None) -> list[np.ndarray]:
    if given:  # the user's images, at the fixed size of a static model
        return [resize(f, static) for f in given] if static else given
    frames = list(held) or synthetic_frames(2, size or DEFAULT_SIZE)
    if not static:  # a dynamic model is also checked at about 3/4 of the size
        h, w = frames[0].shape[:2]
        frames.append(resize(frames[-1], (max(8 * (3 * h // 32), 8), max(8 * (3 * w // 32), 8))))
    return frames


def export_checkpoint(checkpoint_path: str | Path, out: str | Path | None = None, *,
                      input_kind: str = "float", input_order: str = "bgr", output_kind: str = "logits",
                      confidence: bool = False, precision: str = "fp32",
                      static: tuple[int, int] | None = None, opset: int = MIN_OPSET,
                      calib: Sequence[str | Path] | None = None, calib_frames: int = 64,
                      calib_method: str = "minmax", int8_layout: str = "tensorrt",
                      samples: Sequence[str | Path] | None = None,
                      gate: float | None = None, slim: bool | None = None) -> ExportResult:
    """Export an mslseg checkpoint to ONNX (default: beside it, as .onnx) and check its parity.

    Parity runs on `samples` (image files; BGR as read), else on frames held out of the
    calibration set (int8), else on generated frames; a dynamic model is also checked at a second
    size. A failed gate raises ExportError and leaves the model under a `.failed.onnx` name.
    """
    from mslseg.checkpoint import file_sha256, load_model

    ckpt = Path(checkpoint_path)
    out = Path(out) if out is not None else ckpt.with_suffix(".onnx")
    check_io_options(input_kind, input_order, output_kind)
    check_precision(precision)
    check_static(static)
    if precision == "int8" and not calib:
        raise InputError("int8 export needs calibration frames from the target domain: pass --calib "
                         "with an image folder, a dataset root or video files")
    if precision != "int8" and calib:
        raise InputError(f"--calib is for int8 export; a {precision} export does not use it")
    check_output_path(out)
    if out.resolve() == ckpt.resolve():
        raise InputError(f"the output {out} is the checkpoint itself; choose another path")
    given = [read_image(p) for p in samples or []]
    model, meta = load_model(ckpt)
    size = tuple(static) if static else meta.train_size
    calib_set = None
    held: list[np.ndarray] = []
    if precision == "int8":
        frames = load_frames(calib, calib_frames + (0 if given else 2), size=size,
                             max_side=CALIB_MAX_SIDE)
        calib_set, held = (frames, []) if given else _split_holdout(frames)
    parity = _parity_frames(given, held, static, size)
    path = export_onnx(model, meta, out, input_kind=input_kind, input_order=input_order,
                       output_kind=output_kind, confidence=confidence, precision=precision,
                       static=static, opset=opset, calib=calib_set, calib_method=calib_method,
                       int8_layout=int8_layout,
                       slim=slim, source_sha256=file_sha256(ckpt))
    report = check_parity(path, model, parity, gate=gate)
    return ExportResult(path, report)
