"""What the host does that the exported graph does not: check frames, normalise, argmax, resize.

Which of these run depends on the graph's metadata: a ``uint8``-in, ``labels``-out export needs
only a channel flip (if the orders differ) and a stack; a ``float``-in, ``logits``-out export
needs normalisation before and an argmax after.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from mslseg.runtime.errors import InputError
from mslseg.runtime.metadata import ModelMeta

log = logging.getLogger(__name__)

_FLOATS = (np.float16, np.float32, np.float64)


def as_frames(frames: Any) -> tuple[list[np.ndarray], bool]:
    """One HxWx3 frame or a batch (list, tuple, or (N, H, W, 3) array) -> (checked uint8 frames, single).

    Frames are uint8 (0..255). Float frames are accepted in pixel units (0..255), finite, and
    rounded to uint8. Anything else raises InputError saying what was wrong and how to fix it.
    """
    if isinstance(frames, np.ndarray):
        if frames.ndim == 3:
            return [_check(frames, None)], True
        if frames.ndim == 4:
            if frames.shape[0] == 0:
                raise InputError("empty batch: got an array of 0 frames; pass at least one HxWx3 frame")
            return [_check(f, i) for i, f in enumerate(frames)], False
        raise InputError(_shape_message(frames.shape, None))
    if isinstance(frames, Sequence) and not isinstance(frames, (str, bytes)):
        if len(frames) == 0:
            raise InputError("empty batch: got an empty list; pass at least one HxWx3 frame")
        return [_check(f, i) for i, f in enumerate(frames)], False
    raise InputError(
        f"frames must be a numpy array (HxWx3 uint8) or a list of them, got {type(frames).__name__}"
    )


def _where(index: int | None) -> str:
    return "frame" if index is None else f"frame {index}"


def _shape_message(shape: tuple[int, ...], index: int | None) -> str:
    hint = ""
    if len(shape) == 2:
        hint = "; convert grey frames with cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)"
    elif len(shape) == 3 and shape[-1] == 4:
        hint = "; drop the alpha channel with frame[..., :3]"
    elif len(shape) == 3 and shape[0] == 3:
        hint = "; it looks channels-first: use frame.transpose(1, 2, 0)"
    return f"{_where(index)} has shape {shape}; expected HxWx3 (height, width, 3 colour channels){hint}"


def _check(frame: Any, index: int | None) -> np.ndarray:
    if not isinstance(frame, np.ndarray):
        raise InputError(f"{_where(index)} is a {type(frame).__name__}, not a numpy array (HxWx3 uint8)")
    if frame.ndim != 3 or frame.shape[-1] != 3:
        raise InputError(_shape_message(frame.shape, index))
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise InputError(f"{_where(index)} has shape {frame.shape}; height and width must be at least 1")
    if frame.dtype == np.uint8:
        return frame
    if frame.dtype.type in _FLOATS:
        if not np.isfinite(frame).all():
            raise InputError(f"{_where(index)} contains NaN or infinite values; pass finite pixels (0..255)")
        lo, hi = float(frame.min()), float(frame.max())
        if lo < 0 or hi > 255:
            raise InputError(
                f"{_where(index)} has float values in [{lo:g}, {hi:g}]; pass uint8 frames, or floats "
                "in pixel units 0..255"
            )
        if hi <= 1.0 and hi > 0:
            log.warning("%s has float values in 0..1; frames are read as pixel units 0..255", _where(index))
        return np.rint(frame).astype(np.uint8)
    raise InputError(
        f"{_where(index)} has dtype {frame.dtype}; expected uint8 (0..255)"
        + ("; if its values are 0..255, use frame.astype(np.uint8)" if frame.dtype.kind in "iub" else "")
    )


def to_graph_input(frames: list[np.ndarray], meta: ModelMeta, frame_order: str, dtype: np.dtype,
                   pad_to: int | None = None) -> np.ndarray:
    """Same-size HxWx3 uint8 frames -> the graph's input (float: (N,3,H,W) normalised; uint8: NHWC)."""
    batch = np.stack(frames)
    if pad_to is not None and pad_to > len(frames):
        batch = np.concatenate([batch, np.zeros((pad_to - len(frames), *batch.shape[1:]), np.uint8)])
    if meta.input_kind == "uint8":
        if frame_order != meta.input_order:
            batch = batch[..., ::-1]
        return np.ascontiguousarray(batch)
    norm = meta.normalization
    n, h, w, _ = batch.shape
    x = np.empty((n, 3, h, w), np.float32)
    mean, std = np.asarray(norm.mean, np.float32), np.asarray(norm.std, np.float32)
    for c in range(3):
        src = c if frame_order == norm.order else 2 - c
        np.subtract(batch[..., src], mean[c], out=x[:, c])
        if std[c] != 1:
            np.divide(x[:, c], std[c], out=x[:, c])
    return x if dtype == np.float32 else x.astype(dtype)


def to_labels(out: np.ndarray, conf: np.ndarray | None, meta: ModelMeta,
              want_confidence: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The graph's outputs -> labels (N, H, W) in meta.label_dtype and confidence (N, H, W) or None."""
    kind = meta.output_kind
    if kind == "labels":
        labels = out
    else:
        # out: (N, C, H, W) logits or probabilities
        labels = out.argmax(axis=1)
        if want_confidence and conf is None:
            if kind == "probs":
                conf = out.max(axis=1)
            else:
                shifted = out.astype(np.float32) - out.max(axis=1, keepdims=True)
                conf = 1.0 / np.exp(shifted).sum(axis=1)
    labels = labels.astype(meta.label_dtype, copy=False)
    if not want_confidence or conf is None:
        return labels, None
    return labels, conf.astype(np.float32, copy=False)
