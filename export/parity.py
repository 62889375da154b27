"""check_parity: does the exported file compute what the PyTorch model computes?

ONNX Runtime runs the file on sample frames; PyTorch runs the fp32 model on the same frames,
normalised as the metadata says. The report holds the share of pixels whose label agrees, the max
absolute and relative error of the logits or probabilities the file outputs, the confidence error,
and a count of non-finite values. It is written beside the model as JSON; a failed gate is an
ExportError, and the model is moved to a `.failed.onnx` name so it is never taken for a good one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mslseg.export.onnx_contract import load_meta
from mslseg.runtime.errors import ExportError, InputError, require
from mslseg.runtime.io.atomic import atomic_write_text
from mslseg.runtime.metadata import ModelMeta
from mslseg.runtime.sizes import Size

log = logging.getLogger(__name__)

# share of pixels whose label must agree with PyTorch, per precision
GATES = {"fp32": 0.999, "fp16": 0.995, "int8": 0.97}


@dataclass(frozen=True)
class ParityReport:
    model: str  # the ONNX file as it was checked
    precision: str
    input_kind: str
    output_kind: str  # what the file outputs: logits | probs | labels
    samples: int
    sizes: list[str]  # WIDTHxHEIGHT of each sample
    pixels: int
    label_agreement: float  # share of pixels whose argmax agrees with PyTorch's, 0..1
    gate: float  # the share the precision needs
    passed: bool
    max_abs_err: float | None  # of the logits or probabilities; None for a labels output
    max_rel_err: float | None  # max_abs_err / max |reference|
    mean_abs_err: float | None
    confidence_max_abs_err: float | None  # None without a confidence output
    nonfinite: int  # NaN/Inf values in the file's outputs; any fails the gate
    providers: list[str] = field(default_factory=list)
    ort_ms_per_frame: float = 0.0
    torch_ms_per_frame: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        verdict = ">=" if self.passed else "<"
        text = (f"labels agree {100 * self.label_agreement:.2f}% {verdict} {100 * self.gate:.2f}% "
                f"on {self.samples} sample{'s' if self.samples != 1 else ''}")
        if self.max_abs_err is not None:
            what = "logit" if self.output_kind == "logits" else "probability"
            text += f", max {what} error {self.max_abs_err:.3g}"
        if self.nonfinite:
            text += f", {self.nonfinite} NaN/Inf values"
        return text


def report_path(onnx_path: str | Path) -> Path:
    """Where the parity report of `onnx_path` goes: model.onnx -> model.parity.json."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".parity.json")


def failed_path(onnx_path: str | Path) -> Path:
    """Where a model that failed its gate is kept: model.onnx -> model.failed.onnx."""
    p = Path(onnx_path)
    return p.with_name(p.stem + ".failed" + p.suffix)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def check_gate(gate: float | None) -> None:
    """InputError unless `gate` is None (the precision's own) or a share of pixels in (0, 1]."""
    if gate is not None and not 0.0 < float(gate) <= 1.0:
        raise InputError(f"the parity gate is a share of pixels in (0, 1], got {gate}")


def _groups(samples: Sequence[np.ndarray], fixed_batch: int | None) -> list[tuple[np.ndarray, int]]:
    """(batch, frames in it that count): samples of one size stacked into one batch each (this
    also exercises dynamic batches); for a file with a fixed batch, chunks of that size, the last
    one filled up with repeats that do not count."""
    by_size: dict[tuple[int, ...], list[np.ndarray]] = {}
    for s in samples:
        if s.dtype != np.uint8 or s.ndim != 3 or s.shape[2] != 3:
            raise InputError(f"parity samples must be (H, W, 3) uint8 frames, got {s.dtype} {s.shape}")
        by_size.setdefault(s.shape, []).append(s)
    if fixed_batch is None:
        return [(np.stack(v), len(v)) for v in by_size.values()]
    groups = []
    for frames in by_size.values():
        for i in range(0, len(frames), fixed_batch):
            chunk = frames[i:i + fixed_batch]
            filled = [chunk[j % len(chunk)] for j in range(fixed_batch)]
            groups.append((np.stack(filled), len(chunk)))
    return groups


def _session(ort: Any, path: Path, providers: Sequence[str] | None, threads: int | None) -> Any:
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = threads if threads is not None else int(os.environ.get("OMP_NUM_THREADS") or 0)
    return ort.InferenceSession(str(path), so, providers=list(providers or ["CPUExecutionProvider"]))


@dataclass
class _Tally:
    """What the batches of a parity check add up to."""

    agree: int = 0
    pixels: int = 0
    nonfinite: int = 0
    err_max: list[float] = field(default_factory=list)
    err_mean: list[float] = field(default_factory=list)
    ref_max: list[float] = field(default_factory=list)
    conf_err: list[float] = field(default_factory=list)

    def add(self, meta: ModelMeta, outs: list[np.ndarray], ref: np.ndarray, path: Path) -> None:
        # outs: the file's outputs for one batch; ref: PyTorch's (N, C, H, W) logits
        main = outs[0]
        n, _, h, w = ref.shape
        want = (n, h, w) if meta.output_kind == "labels" else ref.shape
        if main.shape != want:
            raise ExportError(f"{path}: output shape {main.shape}, expected {want} for {n} frames of "
                              f"{h}x{w}; the graph breaks the contract, re-export it")
        if meta.output_kind == "labels":
            labels = main.astype(np.int64)
        else:
            target = ref if meta.output_kind == "logits" else _softmax(ref)
            self.nonfinite += int(np.count_nonzero(~np.isfinite(main)))
            diff = np.abs(main.astype(np.float64) - target)
            self.err_max.append(float(np.nanmax(diff)))
            self.err_mean.append(float(np.nanmean(diff)))
            self.ref_max.append(float(np.abs(target).max()))
            labels = main.argmax(axis=1)
        if meta.confidence:
            conf = outs[1]
            self.nonfinite += int(np.count_nonzero(~np.isfinite(conf)))
            self.conf_err.append(float(np.nanmax(np.abs(conf - _softmax(ref).max(axis=1)))))
        self.agree += int(np.count_nonzero(labels == ref.argmax(axis=1)))
        self.pixels += n * h * w


def _compare(session: Any, model: nn.Module, meta: ModelMeta, samples: Sequence[np.ndarray], frame_order: str,
             path: Path) -> tuple[_Tally, float, float]:
    """Both sides on every batch: the tally, and the seconds ONNX Runtime and PyTorch took."""
    device = next(model.parameters()).device
    tally = _Tally()
    t_ort = t_torch = 0.0
    fixed = session.get_inputs()[0].shape[0]
    for i, (batch, count) in enumerate(_groups(samples, fixed if isinstance(fixed, int) and fixed > 0 else None)):
        x = meta.normalization.apply(batch, frame_order)
        feed = x
        if meta.input_kind == "uint8":
            feed = batch if frame_order == meta.input_order else np.ascontiguousarray(batch[..., ::-1])
        if i == 0:  # one untimed run each: first-call costs (allocation, kernel choice) are not per frame
            with torch.no_grad():
                model(torch.from_numpy(x).to(device)).float().cpu()
            session.run(None, {"input": feed})
        t0 = time.perf_counter()
        with torch.no_grad():
            ref = model(torch.from_numpy(x).to(device)).float().cpu().numpy()
        t1 = time.perf_counter()
        outs = session.run(None, {"input": feed})
        t_ort += time.perf_counter() - t1
        t_torch += t1 - t0
        tally.add(meta, [o[:count] for o in outs], ref[:count], path)
    return tally, t_ort, t_torch


def check_parity(onnx_path: str | Path, model: nn.Module, samples: Sequence[np.ndarray], *,
                 frame_order: str = "bgr", gate: float | None = None, write: bool = True,
                 providers: Sequence[str] | None = None, threads: int | None = None) -> ParityReport:
    """Compare the ONNX file with `model` (fp32, normalised NCHW in, logits out) on uint8 frames.

    `samples` are (H, W, 3) uint8 frames in `frame_order`; frames of one size run as one batch
    (a file with a fixed batch takes them in chunks of it).
    `gate` overrides the precision's label-agreement gate (a share, 0..1). With `write`, the
    report goes beside the model as JSON, and a failed gate moves the model to `.failed.onnx`
    and raises ExportError. `threads`: ONNX Runtime's intra-op threads (default: OMP_NUM_THREADS
    when set, else ONNX Runtime's choice).
    """
    ort = require("onnxruntime", "cpu", "Checking an exported model")
    path = Path(onnx_path)
    meta = load_meta(path)
    check_gate(gate)
    gate = GATES[meta.precision] if gate is None else float(gate)
    if not samples:
        raise InputError("parity needs at least one sample frame")
    session = _session(ort, path, providers, threads)
    was_training = model.training
    model.eval()
    try:
        tally, t_ort, t_torch = _compare(session, model, meta, samples, frame_order, path)
    finally:
        model.train(was_training)
    share = tally.agree / tally.pixels
    max_err = max(tally.err_max) if tally.err_max else None
    report = ParityReport(
        model=str(path), precision=meta.precision, input_kind=meta.input_kind,
        output_kind=meta.output_kind, samples=len(samples),
        sizes=[str(Size.from_hw(s.shape[:2])) for s in samples], pixels=tally.pixels,
        label_agreement=share, gate=gate, passed=share >= gate and tally.nonfinite == 0,
        max_abs_err=max_err,
        max_rel_err=None if max_err is None else max_err / max(max(tally.ref_max), 1e-12),
        mean_abs_err=float(np.mean(tally.err_mean)) if tally.err_mean else None,
        confidence_max_abs_err=max(tally.conf_err) if tally.conf_err else None,
        nonfinite=tally.nonfinite, providers=list(session.get_providers()),
        ort_ms_per_frame=1000 * t_ort / len(samples), torch_ms_per_frame=1000 * t_torch / len(samples),
    )
    del session
    if write:
        _write(report, path)
    return report


def _write(report: ParityReport, path: Path) -> None:
    if report.passed:
        atomic_write_text(report_path(path), json.dumps(report.to_dict(), indent=2) + "\n")
        log.info("parity %s: %s", path, report.summary())
        return
    kept = failed_path(path)
    os.replace(path, kept)
    failed = ParityReport(**{**report.to_dict(), "model": str(kept)})
    atomic_write_text(report_path(kept), json.dumps(failed.to_dict(), indent=2) + "\n")
    report_path(path).unlink(missing_ok=True)
    hint = {"int8": "calibrate on more target frames (--calib, --calib-frames) or export fp16",
            "fp16": "export fp32, or check the model for activations beyond the fp16 range",
            "fp32": "this is a bug in the export: report it with the parity JSON"}[report.precision]
    raise ExportError(f"parity gate failed for {path}: {report.summary()}; the model is kept as "
                      f"{kept} with its report; {hint}")
