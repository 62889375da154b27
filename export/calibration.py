"""Target-domain frames for int8 calibration and parity checks: image folders, dataset roots, videos.

A source is an image file, a video file, or a folder. A folder is searched recursively for
images; when it is a dataset root with image folders beside label folders (Cityscapes'
leftImg8bit/gtFine, GTA5's images/labels, SYNTHIA's RGB/GT), only the image folders count, so
label maps are never taken for camera frames. A folder without images is searched for videos.
Frames are sampled evenly across all sources together, so an hour of footage and a handful of
stills contribute in proportion to their frame counts. Frames are BGR uint8, as OpenCV decodes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from mslseg.runtime.errors import DataError, InputError
from mslseg.runtime.sizes import Size

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".ts"})
# folder names that hold the camera images in the dataset layouts mslseg reads
IMAGE_DIRS = frozenset({"leftImg8bit", "images", "Images", "RGB"})

Frame = np.ndarray  # (H, W, 3) uint8 BGR


def read_image(path: str | Path) -> Frame:
    """An image file as (H, W, 3) uint8 BGR, or a DataError naming the file."""
    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as exc:
        raise DataError(f"cannot read image {path} ({exc.strerror}); check the path") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise DataError(f"{path} is not a readable image; give PNG/JPEG frames")
    return image


def _folder_items(folder: Path) -> list[tuple[Path, int]]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in files if p.suffix.lower() in IMAGE_SUFFIXES]
    in_image_dirs = [p for p in images if IMAGE_DIRS & set(p.relative_to(folder).parts[:-1])]
    if in_image_dirs:
        images = in_image_dirs
    if images:
        return [(p, -1) for p in images]
    videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
    items = [(v, _frame_count(v)) for v in videos]
    if not any(n > 0 for _, n in items):
        raise DataError(
            f"no images or videos found in {folder}; give an image folder, a dataset root or "
            f"video files ({', '.join(sorted(IMAGE_SUFFIXES | VIDEO_SUFFIXES))})"
        )
    return items


def _frame_count(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    try:
        if not cap.isOpened():
            raise DataError(f"cannot open video {video}; check the file and that OpenCV can decode it")
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n <= 0:  # some containers do not say: count by reading
            n = 0
            while cap.grab():
                n += 1
        return n
    finally:
        cap.release()


def _items(sources: Sequence[str | Path]) -> list[tuple[Path, int]]:
    """(path, frame count) per image (-1) and per video, in a stable order."""
    items: list[tuple[Path, int]] = []
    for src in sources:
        path = Path(src)
        if path.is_dir():
            items += _folder_items(path)
        elif not path.is_file():
            raise DataError(f"calibration source {path} does not exist; give an image folder, a "
                            "dataset root or video files")
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            n = _frame_count(path)
            if n == 0:
                raise DataError(f"video {path} has no frames; check the file")
            items.append((path, n))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            items.append((path, -1))
        else:
            raise DataError(f"{path} is neither an image ({', '.join(sorted(IMAGE_SUFFIXES))}) nor a "
                            f"video ({', '.join(sorted(VIDEO_SUFFIXES))})")
    return items


def _read_video_frames(video: Path, indices: list[int]) -> list[Frame]:
    cap = cv2.VideoCapture(str(video))
    frames, pos = [], 0
    try:
        for index in sorted(indices):
            if index - pos > 30:  # seek over long gaps; decode through short ones
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                pos = index
            while pos < index and cap.grab():
                pos += 1
            ok, frame = cap.read()
            pos += 1
            if not ok:
                log.warning("could not decode frame %d of %s; skipped", index, video)
                continue
            frames.append(frame)
    finally:
        cap.release()
    return frames


def load_frames(sources: Sequence[str | Path], count: int, *, size: Size | str | None = None,
                max_side: int | None = None) -> list[Frame]:
    """Up to `count` BGR frames sampled evenly across `sources`.

    Resized to `size` (WIDTHxHEIGHT) if given, else, with `max_side`, shrunk (aspect kept) until
    neither side exceeds it.
    """
    size = None if size is None else Size.of(size, "calibration size")
    if count < 1:
        raise InputError(f"the number of calibration frames must be >= 1, got {count}")
    if not sources:
        raise InputError("no calibration sources given; pass an image folder, a dataset root or videos")
    items = _items(sources)
    sizes = [max(n, 1) for _, n in items]
    total = sum(sizes)
    picks = np.unique(np.linspace(0, total - 1, num=min(count, total)).round().astype(np.int64))
    starts = np.cumsum([0, *sizes[:-1]])
    frames: list[Frame] = []
    for (path, n), start, length in zip(items, starts, sizes, strict=True):
        local = [int(p - start) for p in picks if start <= p < start + length]
        if not local:
            continue
        if n < 0:
            frames.append(read_image(path))
        else:
            frames += _read_video_frames(path, local)
    if not frames:
        raise DataError(f"no frame could be decoded from {', '.join(map(str, sources))}; check the files")
    log.info("loaded %d calibration frames from %d files", len(frames), len(items))
    if size:
        return [resize(f, size) for f in frames]
    if max_side:
        return [shrink(f, max_side) for f in frames]
    return frames


def shrink(frame: Frame, max_side: int) -> Frame:
    """`frame` scaled down (aspect kept, sides rounded to multiples of 8) to fit max_side."""
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    return resize(frame, Size(max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8)))


def resize(frame: Frame, size: Size) -> Frame:
    """Resize to `size` with area interpolation when shrinking, linear when growing."""
    h, w = size.hw
    if frame.shape[:2] == (h, w):
        return frame
    shrink = h * w < frame.shape[0] * frame.shape[1]
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def synthetic_frames(n: int, size: Size | str, seed: int = 0) -> list[Frame]:
    """Deterministic image-like frames of `size` (WIDTHxHEIGHT): smooth colour fields with edges
    and a little noise.

    Used for parity checks when no sample frames are given; they exercise the whole value range
    with spatial structure, which random noise does not.
    """
    rng = np.random.default_rng(seed)
    h, w = Size.of(size).hw
    frames = []
    for _ in range(n):
        coarse = rng.integers(0, 256, (max(h // 16, 2), max(w // 16, 2), 3), dtype=np.uint8)
        smooth = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        blocks = cv2.resize(rng.integers(0, 2, (4, 4, 1), dtype=np.uint8) * 60, (w, h),
                            interpolation=cv2.INTER_NEAREST)
        noise = rng.integers(-8, 9, (h, w, 3), dtype=np.int16)
        frames.append(np.clip(smooth + blocks[..., None] + noise, 0, 255).astype(np.uint8))
    return frames
