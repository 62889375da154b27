"""Reading image and label files: every failure is a DataError naming the file."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mslseg.runtime.errors import DataError, require

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_label(path: Path) -> np.ndarray:
    """The raw values of a label file: palette PNGs by index (as GTA5 ships them), others as stored."""
    data = _read_bytes(path, "label")
    if data[:8] == _PNG_SIGNATURE and len(data) > 25 and data[25] == 3:
        # OpenCV expands a palette PNG to colours; the label ids are the palette indices.
        return _read_palette_png(path)
    raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise DataError(f"label {path} is corrupt or not an image; re-download it or remove the pair")
    return raw


def read_image(path: Path) -> np.ndarray:
    """An image file as (H, W, 3) uint8 BGR."""
    image = cv2.imdecode(np.frombuffer(_read_bytes(path, "image"), np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"image {path} is corrupt or not an image; re-download it or remove it")
    return image


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from a PNG header without decoding, or None when it is not a PNG."""
    try:
        with open(path, "rb") as f:
            head = f.read(24)
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror}); check its permissions") from None
    if len(head) < 24 or head[:8] != _PNG_SIGNATURE or head[12:16] != b"IHDR":
        return None
    w, h = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    return (w, h) if w and h else None  # a torn header has no size: decoding names the file as corrupt


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {what} {path} ({exc.strerror}); check that it exists") from None
    if not data:
        raise DataError(f"{what} {path} is empty; re-download it or remove it")
    return data


def _read_palette_png(path: Path) -> np.ndarray:
    image_module = require("PIL.Image", "train", "Reading palette PNG labels")
    try:
        with image_module.open(path) as im:
            return np.asarray(im)
    except (OSError, ValueError) as exc:
        raise DataError(f"label {path} is corrupt ({exc}); re-download it or remove the pair") from None
