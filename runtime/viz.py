"""Colour maps, overlays and a legend, from the palette in the model metadata (RGB per class).

Label values past the palette (an ignore label such as 255) are drawn black.
"""

from __future__ import annotations

import numpy as np

from mslseg.runtime.errors import InputError
from mslseg.runtime.metadata import ModelMeta


def palette_lut(meta_or_palette: ModelMeta | tuple[tuple[int, int, int], ...],
                order: str = "bgr") -> np.ndarray:
    """A (65536, 3) uint8 lookup table: label value -> colour in `order` ("bgr" or "rgb")."""
    palette = meta_or_palette.palette if isinstance(meta_or_palette, ModelMeta) else meta_or_palette
    if order not in ("bgr", "rgb"):
        raise InputError(f"colour order must be 'bgr' or 'rgb', got '{order}'")
    lut = np.zeros((65536, 3), np.uint8)
    colours = np.asarray(palette, np.uint8).reshape(-1, 3)
    lut[: len(colours)] = colours[:, ::-1] if order == "bgr" else colours
    return lut


def colorize(labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """(H, W) uint8/uint16 labels -> (H, W, 3) uint8 colours (see `palette_lut`)."""
    if labels.ndim != 2 or labels.dtype not in (np.uint8, np.uint16):
        raise InputError(f"labels must be an (H, W) uint8 or uint16 map, got {labels.shape} {labels.dtype}")
    return lut[labels]


def overlay(frame: np.ndarray, labels: np.ndarray, lut: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend the colour map over `frame` (HxWx3 uint8, in the lut's colour order); alpha = label weight."""
    import cv2

    if frame.shape[:2] != labels.shape:
        raise InputError(f"frame {frame.shape[:2]} and labels {labels.shape} differ in size")
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in 0..1, got {alpha}")
    return cv2.addWeighted(colorize(labels, lut), alpha, frame, 1.0 - alpha, 0.0)


def legend(meta: ModelMeta, order: str = "bgr", row_height: int = 20, width: int = 220) -> np.ndarray:
    """An image listing each class name beside its colour (for a window or a README figure)."""
    import cv2

    lut = palette_lut(meta, order)
    img = np.full((row_height * meta.num_classes, width, 3), 255, np.uint8)
    for i, name in enumerate(meta.class_names):
        y = i * row_height
        img[y + 2: y + row_height - 2, 4: row_height + 4] = lut[i]
        cv2.putText(img, name, (row_height + 10, y + row_height - 6), cv2.FONT_HERSHEY_SIMPLEX,
                    0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return img
