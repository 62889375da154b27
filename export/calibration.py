"""Target-domain frames for int8 calibration and parity checks: image folders, dataset roots, videos, bags.

A source is an image file, a video file, a robot bag (.mcap/.bag/.db3 or a rosbag2 folder: frames of
its image topic `topic`), or a folder. A folder is searched recursively for
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
from mslseg.runtime.io.media import IMAGE_FOLDERS, is_bag, is_image, is_video, suffix_list
from mslseg.runtime.sizes import DEFAULT_INTERPOLATION, Size, resize_frame

log = logging.getLogger(__name__)

BgrImage = np.ndarray  # (H, W, 3) uint8 BGR; a bare array (mslseg.runtime.Frame is a frame with its index)


def read_image(path: str | Path) -> BgrImage:
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
    images = [p for p in files if is_image(p)]
    in_image_dirs = [p for p in images if IMAGE_FOLDERS & set(p.relative_to(folder).parts[:-1])]
    if in_image_dirs:
        images = in_image_dirs
    if images:
        return [(p, -1) for p in images]
    videos = [p for p in files if is_video(p)]
    items = [(v, _frame_count(v)) for v in videos]
    if not any(n > 0 for _, n in items):
        raise DataError(
            f"no images or videos found in {folder}; give an image folder, a dataset root or "
            f"video files ({suffix_list()})"
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


def _bag_count(bag: Path, topic: str | None) -> int:
    """Messages on `topic` of `bag`; InputError listing its image topics when no topic is given."""
    from mslseg.runtime.io.bags import BagSource
    from mslseg.runtime.io.sources import topic_required

    if topic is None:
        raise topic_required([bag])
    return BagSource(bag, topic).frame_count


def _read_bag_frames(bag: Path, topic: str, indices: list[int]) -> list[BgrImage]:
    from mslseg.runtime.io.bags import BagSource
    from mslseg.runtime.io.sources import FrameRange

    keep = set(indices)
    source = BagSource(bag, topic, FrameRange(end=str(max(indices) + 1)))
    frames = [f.image for f in source if f.index in keep]
    for problem in source.problems:
        log.warning("%s", problem)
    return frames


def _items(sources: Sequence[str | Path], topic: str | None = None) -> list[tuple[Path, int]]:
    """(path, frame count) per image (-1), per video and per bag (its `topic`'s messages), in a stable order."""
    items: list[tuple[Path, int]] = []
    for src in sources:
        path = Path(src)
        if is_bag(path):
            items.append((path, _bag_count(path, topic)))
        elif path.is_dir():
            items += _folder_items(path)
        elif not path.is_file():
            raise DataError(f"calibration source {path} does not exist; give an image folder, a "
                            "dataset root or video files")
        elif is_video(path):
            n = _frame_count(path)
            if n == 0:
                raise DataError(f"video {path} has no frames; check the file")
            items.append((path, n))
        elif is_image(path):
            items.append((path, -1))
        else:
            raise DataError(f"{path} is neither an image nor a video ({suffix_list()})")
    return items


def _read_video_frames(video: Path, indices: list[int]) -> list[BgrImage]:
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
                max_side: int | None = None, interpolation: str = DEFAULT_INTERPOLATION,
                topic: str | None = None) -> list[BgrImage]:
    """Up to `count` BGR frames sampled evenly across `sources` (`topic`: the image topic of bags among them).

    Resized to `size` (WIDTHxHEIGHT) if given, else, with `max_side`, shrunk (aspect kept) until
    neither side exceeds it; either with `interpolation`, the model's (`meta.interpolation`).
    """
    size = None if size is None else Size.of(size, "calibration size")
    if count < 1:
        raise InputError(f"the number of calibration frames must be >= 1, got {count}")
    if not sources:
        raise InputError("no calibration sources given; pass an image folder, a dataset root or videos")
    items = _items(sources, topic)
    sizes = [max(n, 1) for _, n in items]
    total = sum(sizes)
    picks = np.unique(np.linspace(0, total - 1, num=min(count, total)).round().astype(np.int64))
    starts = np.cumsum([0, *sizes[:-1]])
    frames: list[BgrImage] = []
    for (path, n), start, length in zip(items, starts, sizes, strict=True):
        local = [int(p - start) for p in picks if start <= p < start + length]
        if not local:
            continue
        if n < 0:
            frames.append(read_image(path))
        elif is_bag(path):
            frames += _read_bag_frames(path, topic, local)
        else:
            frames += _read_video_frames(path, local)
    if not frames:
        raise DataError(f"no frame could be decoded from {', '.join(map(str, sources))}; check the files")
    log.info("loaded %d calibration frames from %d files", len(frames), len(items))
    if size:
        return [resize(f, size, interpolation) for f in frames]
    if max_side:
        return [shrink(f, max_side, interpolation) for f in frames]
    return frames


def shrink(frame: BgrImage, max_side: int, interpolation: str = DEFAULT_INTERPOLATION) -> BgrImage:
    """`frame` scaled down (aspect kept, sides rounded to multiples of 8) to fit max_side."""
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    size = Size(max(8, round(w * scale / 8) * 8), max(8, round(h * scale / 8) * 8))
    return resize(frame, size, interpolation)


def resize(frame: BgrImage, size: Size, interpolation: str = DEFAULT_INTERPOLATION) -> BgrImage:
    """Resize to `size` as the model's inputs are resized at inference (`interpolation`: the model's).

    Calibration statistics are only right for inputs made the way the runtime makes them.
    """
    return resize_frame(frame, size, interpolation)


def synthetic_frames(n: int, size: Size | str, seed: int = 0) -> list[BgrImage]:
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
