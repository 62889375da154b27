"""Image/label transforms on uint8 BGR arrays: resize, random crop, flip and blur.

Labels are only ever resized with nearest neighbour and moved together with their image. The
random ones take an explicit `numpy.random.Generator`, so the caller decides where randomness
comes from (see `mslseg.data.datasets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from mslseg.classes import IGNORE_INDEX
from mslseg.data.config import as_size
from mslseg.runtime.errors import ConfigError
from mslseg.runtime.sizes import INTERPOLATIONS, Size, resize_frame

BLUR_MAX_SIGMA = 1.0  # as the reference code: a Gaussian of radius U(0, 1) px on every image


@dataclass(frozen=True)
class Augment:
    """What happens to every item; the random parts only when training."""

    size: Size | None = None  # resize to this first
    crop: Size | None = None  # random crop of this size when training
    flip: bool = False  # random horizontal flip (p = 0.5) when training
    blur: bool = False  # random Gaussian blur (sigma ~ U(0, BLUR_MAX_SIGMA)) when training
    interpolation: str = "bicubic"  # image resize; labels are always nearest
    resize_labels: bool = True  # False: `size` resizes the image only (labels stay at full resolution)

    def __post_init__(self) -> None:
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(f"interpolation '{self.interpolation}' is not one of "
                              f"{', '.join(INTERPOLATIONS)}")
        if not self.resize_labels and self.crop is not None:
            raise ConfigError("crop needs resize_labels: true (a crop cuts image and label together)")
        for name in ("size", "crop"):  # (width, height) pairs from code written before `Size`
            object.__setattr__(self, name, as_size(getattr(self, name), name))

    @property
    def random(self) -> bool:
        return self.crop is not None or self.flip or self.blur


def resize(image: np.ndarray, label: np.ndarray | None, size: Size, interpolation: str = "bicubic"
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize to `size`: the image as the runtime resizes frames (`interpolation`), the label nearest."""
    w, h = size.width, size.height
    if image.shape[1] != w or image.shape[0] != h:
        image = resize_frame(image, size, interpolation)
        if label is not None:
            label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
    return image, label


def random_crop(image: np.ndarray, label: np.ndarray | None, crop: Size, rng: np.random.Generator,
                fill: tuple[int, int, int] = (0, 0, 0)) -> tuple[np.ndarray, np.ndarray | None]:
    """A random window of size `crop`; a smaller image is padded first (image `fill`, label ignore)."""
    cw, ch = crop.width, crop.height
    h, w = image.shape[:2]
    if h < ch or w < cw:
        pad = ((0, max(ch - h, 0)), (0, max(cw - w, 0)))
        image = np.stack([np.pad(image[..., c], pad, constant_values=fill[c]) for c in range(3)], axis=-1)
        if label is not None:
            label = np.pad(label, pad, constant_values=IGNORE_INDEX)
        h, w = image.shape[:2]
    y = int(rng.integers(0, h - ch + 1))
    x = int(rng.integers(0, w - cw + 1))
    image = image[y : y + ch, x : x + cw]
    return image, None if label is None else label[y : y + ch, x : x + cw]


def random_flip(image: np.ndarray, label: np.ndarray | None, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """Mirror image and label left-right with probability 0.5."""
    if rng.random() < 0.5:
        image = image[:, ::-1]
        label = None if label is None else label[:, ::-1]
    return image, label


def random_blur(image: np.ndarray, rng: np.random.Generator, max_sigma: float = BLUR_MAX_SIGMA) -> np.ndarray:
    """Gaussian blur with sigma ~ U(0, max_sigma) px (tiny sigmas leave the image as it is)."""
    sigma = float(rng.uniform(0.0, max_sigma))
    if sigma < 0.1:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)


def apply(image: np.ndarray, label: np.ndarray | None, aug: Augment, rng: np.random.Generator | None,
          fill: tuple[int, int, int] = (0, 0, 0)) -> tuple[np.ndarray, np.ndarray | None]:
    """Resize, then (with an rng: training) crop, flip, blur. Returns contiguous arrays."""
    if aug.size is not None:
        if aug.resize_labels:
            image, label = resize(image, label, aug.size, aug.interpolation)
        else:
            image, _ = resize(image, None, aug.size, aug.interpolation)
    if rng is not None:
        if aug.crop is not None:
            image, label = random_crop(image, label, aug.crop, rng, fill)
        if aug.flip:
            image, label = random_flip(image, label, rng)
        if aug.blur:
            image = random_blur(image, rng)
    image = np.ascontiguousarray(image)
    return image, None if label is None else np.ascontiguousarray(label)
