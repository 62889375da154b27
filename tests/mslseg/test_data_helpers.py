"""Tiny on-disk fixtures in each dataset layout, shared by the test_data_* modules (no tests here)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from mslseg.data.config import DataConfig
from mslseg.runtime.metadata import Normalization

W, H = 8, 4
NORM = Normalization.official()


def image(seed: int = 0, w: int = W, h: int = H) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), array), path
    return path


def ids_map(values: list[int], w: int = W, h: int = H) -> np.ndarray:
    """An (h, w) label whose columns cycle through `values`."""
    row = np.asarray([values[i % len(values)] for i in range(w)])
    return np.tile(row, (h, 1)).astype(np.uint8 if max(values) < 256 else np.uint16)


def gta5(root: Path, labels: list[np.ndarray]) -> DataConfig:
    for i, label in enumerate(labels):
        write(root / "images" / f"{i + 1:05d}.png", image(i, label.shape[1], label.shape[0]))
        write(root / "labels" / f"{i + 1:05d}.png", label)
    return DataConfig(kind="gta5", root=str(root))


def cityscapes(root: Path, labels: list[np.ndarray], split: str = "val", city: str = "aachen") -> DataConfig:
    for i, label in enumerate(labels):
        stem = f"{city}_000000_{i:06d}"
        write(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image(i))
        write(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png", label)
    return DataConfig(kind="cityscapes", root=str(root), split=split)


def write_png16_rgb(path: Path, rgb: np.ndarray) -> Path:
    """A 16-bit RGB PNG encoded by hand, so channel order is the file's, not OpenCV's."""
    h, w, _ = rgb.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgb)
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def synthia(root: Path, class_ids: np.ndarray, classes: int = 16) -> DataConfig:
    """One SYNTHIA pair: a 16-bit RGB label with the class id in the file's first channel (R)."""
    h, w = class_ids.shape
    write(root / "RGB" / "0000000.png", image(0, w, h))
    label_rgb = np.zeros((h, w, 3), np.uint16)
    label_rgb[..., 0] = class_ids
    label_rgb[..., 1] = 999  # instance ids: must not be read as classes
    label_rgb[..., 2] = 7
    write_png16_rgb(root / "GT" / "LABELS" / "0000000.png", label_rgb)
    return DataConfig(kind="synthia", root=str(root), classes=classes)


def nthu(root: Path, label: np.ndarray, city: str = "Rome") -> DataConfig:
    write(root / city / "Images" / "Test" / "pic_001.png", image(0))
    write(root / city / "Labels" / "Test" / "pic_001_eval.png", label)
    write(root / city / "Images" / "Train" / "pic_900.png", image(1))
    return DataConfig(kind="nthu", root=str(root), city=city.lower(), split="test", classes=13)
