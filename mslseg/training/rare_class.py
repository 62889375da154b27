"""DAFormer's rare class sampling (Hoyer et al. CVPR 2022, lhoyer/DAFormer `datasets/uda_dataset.py`).

From the source set's per-image class pixel counts: class frequency f_c = n_c / sum_k n_k over the
classes present in the set, sampling probability P(c) = softmax((1 - f_c) / T) (T = 0.01), then a
source image containing c drawn uniformly. DAFormer counts an image as containing c when it has
more than `min_pixels` (3000 at full Cityscapes/GTA5 resolution) of it; classes absent from the
whole set have P = 0. DAFormer also re-draws the random crop up to 10 times until it holds c; that
needs the dataset and is left to the loader.

Counts are a plain (num_images, num_classes) int64 tensor: cache it with `torch.save` beside the
data (keyed by the file list), it is all the sampler needs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from mslseg.data.files import read_label
from mslseg.runtime.errors import ConfigError
from mslseg.runtime.io.atomic import atomic_path

log = logging.getLogger(__name__)

TEMPERATURE = 0.01  # DAFormer


def class_pixel_counts(labels_iter: Iterable[Tensor | np.ndarray], num_classes: int) -> Tensor:
    """(num_images, num_classes) int64: pixels of each class per label map; 255 and other values
    outside [0, num_classes) are not counted. Labels: (H, W) integer tensors or arrays."""
    rows = []
    for label in labels_iter:
        flat = torch.as_tensor(np.asarray(label) if not isinstance(label, Tensor) else label).reshape(-1).long()
        flat = flat[(flat >= 0) & (flat < num_classes)]
        rows.append(torch.bincount(flat.cpu(), minlength=num_classes))
    if not rows:
        return torch.zeros(0, num_classes, dtype=torch.int64)
    return torch.stack(rows)


def class_probabilities(counts: Tensor, temperature: float = TEMPERATURE) -> Tensor:
    """P(c) = softmax over present classes of (1 - f_c) / T; 0 for classes absent from `counts`.

    counts: (num_images, num_classes). Returns (num_classes,) float64.
    """
    if temperature <= 0:
        raise ConfigError(f"the rare class sampling temperature must be > 0, got {temperature}; DAFormer uses 0.01")
    totals = counts.sum(dim=0).double()  # (C,)
    present = totals > 0
    if not present.any():
        raise ConfigError("rare class sampling needs source labels, but no labelled pixel was counted")
    freq = totals / totals.sum()
    logits = ((1 - freq) / temperature).masked_fill(~present, float("-inf"))
    return torch.softmax(logits, dim=0)


class RareClassSampler(Sampler[int]):
    """Source indices drawn by rare class sampling: a class c ~ P(c), then an image containing c.

    counts: (num_images, num_classes) from `class_pixel_counts`; `generator`: where the draws come
    from (its state resumes the stream); `num_samples`: the length of one pass (default: the number
    of images). `indices_at` draws from (seed, global position) instead, for streams that must not
    depend on where a run resumed or how many ranks share it.
    """

    def __init__(self, counts: Tensor, temperature: float = TEMPERATURE, generator: torch.Generator | None = None,
                 *, num_samples: int | None = None, min_pixels: int = 0):
        self.probs = class_probabilities(counts, temperature)  # (C,)
        holders = counts > min_pixels  # (N, C)
        self.probs = torch.where(holders.any(dim=0), self.probs, torch.zeros_like(self.probs))
        if self.probs.sum() <= 0:
            raise ConfigError(f"no source image holds more than {min_pixels} pixels of any class; "
                              "lower rare class sampling's min_pixels")
        self.probs = self.probs / self.probs.sum()
        lengths = holders.sum(dim=0)  # (C,)
        # (C, max images per class): the images holding each class, padded with -1
        table = torch.full((counts.shape[1], max(int(lengths.max()), 1)), -1, dtype=torch.int64)
        for c in torch.nonzero(lengths).flatten().tolist():
            images = torch.nonzero(holders[:, c]).flatten()
            table[c, : len(images)] = images
        self.table, self.lengths = table, lengths
        self.generator = generator if generator is not None else torch.Generator().manual_seed(0)
        self.num_samples = num_samples if num_samples is not None else counts.shape[0]

    def draw(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(classes (n,), image indices (n,)) drawn with `generator` (default: the sampler's)."""
        g = generator if generator is not None else self.generator
        classes = torch.multinomial(self.probs.float(), n, replacement=True, generator=g)  # (n,)
        u = torch.rand(n, generator=g, dtype=torch.float64)  # (n,)
        slot = (u * self.lengths[classes].double()).long()  # uniform over the images holding c
        return classes, self.table[classes, slot]

    def indices_at(self, seed: int, positions: Iterable[int]) -> list[int]:
        """One index per global sample position, each drawn from a generator seeded by (seed, position)."""
        out = []
        for pos in positions:
            g = torch.Generator().manual_seed((seed * 1_000_003 + pos) % 2**63)
            out.append(int(self.draw(1, g)[1]))
        return out

    def __iter__(self) -> Iterator[int]:
        yield from self.draw(self.num_samples)[1].tolist()

    def __len__(self) -> int:
        return self.num_samples


COUNTS_FILE = "source_class_counts.pt"  # in the run directory: a resumed run reads it instead of the labels


def source_class_counts(dataset: Any, num_classes: int, run_dir: Path, *, write: bool = True) -> Tensor:
    """(num_images, num_classes) pixel counts of a labelled source dataset (a SegmentationDataset
    over image files), read once from its label files and kept in `run_dir` (keyed by the sample
    names, so another source set is counted anew). `write`: this process keeps the file (rank 0)."""
    frames = dataset.frames
    samples, codec = getattr(frames, "samples", None), getattr(frames, "codec", None)
    if samples is None or codec is None:
        raise ConfigError("rare class sampling counts the source's label files, and this source has none; "
                          "use a labelled image source or a method without rare class sampling (dacs)")
    names = [s.name for s in samples]
    path = Path(run_dir) / COUNTS_FILE
    if path.is_file():
        cached = torch.load(path, weights_only=True)
        if cached.get("names") == names and cached["counts"].shape == (len(names), num_classes):
            return cached["counts"]
    started = time.perf_counter()
    labels = (codec.decode(read_label(s.label), s.label) if s.label is not None else np.zeros(0, np.int64)
              for s in samples)  # an image without a label file holds no class: never drawn
    counts = class_pixel_counts(labels, num_classes)
    log.info("rare class sampling: counted the classes of %d source label files in %.1f s", len(names),
             time.perf_counter() - started)
    if write:
        with atomic_path(path) as tmp:
            torch.save({"names": names, "counts": counts}, tmp)
    return counts
