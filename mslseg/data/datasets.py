"""The torch Dataset every layout becomes: load a frame, transform it, normalise it.

Randomness: a training item draws one 31-bit number from torch's global RNG and mixes it with the
dataset's `seed` into a `numpy.random.Generator` that drives crop, flip and blur. So torch's seeding
governs augmentation: under the training loop's `SeededItems` (torch seeded from seed, epoch and
index) an item is a pure function of (seed, epoch, index) whatever the worker count; in plain
DataLoader workers torch's per-worker seeding applies. Evaluation items (train=False) draw nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from mslseg.data import transforms
from mslseg.data.files import read_image, read_label
from mslseg.data.labels import LabelCodec
from mslseg.data.layouts import Sample
from mslseg.runtime.errors import DataError
from mslseg.runtime.metadata import Normalization


class SampleReader(Protocol):
    """Reads sample `index`: (BGR uint8 image, train-id label or None, name); image files or video frames."""

    labelled: bool

    def __len__(self) -> int: ...

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]: ...


class ImageFiles:
    """Image files with optional label files, decoded by a `LabelCodec`."""

    def __init__(self, samples: tuple[Sample, ...], codec: LabelCodec | None):
        self.samples, self.codec = samples, codec
        self.labelled = codec is not None

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray | None, str]:
        s = self.samples[index]
        image = read_image(s.image)
        if self.codec is None or s.label is None:
            return image, None, s.name
        label = self.codec.decode(read_label(s.label), s.label)
        if label.shape != image.shape[:2]:
            raise DataError(
                f"label {s.label} is {label.shape[1]}x{label.shape[0]} but its image {s.image} is "
                f"{image.shape[1]}x{image.shape[0]}; fix the pair or leave it out with a list_file"
            )
        return image, label, s.name


class SegmentationDataset(Dataset):
    """Items {"image": (3, H, W) float32, "label": (H, W) int64 (when labelled), "name": str}."""

    def __init__(self, frames: SampleReader, class_names: tuple[str, ...], normalization: Normalization,
                 augment: transforms.Augment, *, train: bool, seed: int = 0, root: str = ""):
        self.frames, self.class_names = frames, tuple(class_names)
        self.normalization, self.augment = normalization, augment
        self.train, self.seed, self.root = train, seed, root
        self._fill = _mean_pixel_bgr(normalization)

    @property
    def labelled(self) -> bool:
        return self.frames.labelled

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self.frames):
            raise IndexError(f"index {index} out of range for {len(self.frames)} items")
        image, label, name = self.frames.load(index)
        image, label = transforms.apply(image, label, self.augment, self._rng(), self._fill)
        x = self.normalization.apply(image[None], frame_order="bgr")[0]
        item: dict[str, Any] = {"image": torch.from_numpy(x), "name": name}
        if label is not None:
            item["label"] = torch.from_numpy(label.astype(np.int64))
        return item

    def _rng(self) -> np.random.Generator | None:
        if not (self.train and self.augment.random):
            return None
        draw = int(torch.randint(0, 2**31 - 1, ()).item())
        return np.random.default_rng([self.seed & 0xFFFFFFFF, draw])

    def __repr__(self) -> str:
        return (f"SegmentationDataset({len(self)} items, {len(self.class_names)} classes, "
                f"root={Path(self.root) if self.root else '?'}, train={self.train})")


def _mean_pixel_bgr(norm: Normalization) -> tuple[int, int, int]:
    """The pixel that normalises to zero, in BGR: what padding a crop adds to the image."""
    mean = [int(round(v)) for v in norm.mean]
    return tuple(mean if norm.order == "bgr" else mean[::-1])  # type: ignore[return-value]
