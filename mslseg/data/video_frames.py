"""Unlabelled target frames straight from video files, so footage needs no extraction first.

The frames are indexed at construction from each file's frame count (every `stride`-th frame, or
`frames` spread evenly over each file; by default every 30th, denser in a short clip so that at
least 100 of its frames are kept) and decoded lazily by seeking. Open captures are cached per
process: never pickled, and never used (nor released) in a forked DataLoader worker, where a
capture inherited from the parent hangs; workers open their own.
"""

from __future__ import annotations

import glob
import logging
import os
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np

from mslseg.runtime.errors import ConfigError, DataError
from mslseg.runtime.io.media import is_video, suffix_list

log = logging.getLogger(__name__)

_OPEN_CAPTURES = 4  # captures kept open per process
AUTO_STRIDE = 30  # one frame a second at 30 fps: neighbours closer than that add little
AUTO_MIN_FRAMES = 100  # ...but a short clip keeps at least this many (all of a shorter one)


def find_videos(spec: str) -> list[Path]:
    """The video files `spec` names: one file, a folder (its videos, sorted), or a glob pattern."""
    path = Path(spec).expanduser()
    if path.is_file():
        found = [path]
    elif path.is_dir():
        found = sorted(p for p in path.iterdir() if is_video(p) and p.is_file())
    elif glob.has_magic(spec):
        found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if is_video(p))
    else:
        raise DataError(f"video {spec} does not exist; give a video file, a folder of videos or a glob")
    if not found:
        raise DataError(f"no videos ({suffix_list('video')}) found at {spec}; check the path or pattern")
    return found


def auto_stride(count: int) -> int:
    """The default stride for a file of `count` frames: 30, or less so that >= 100 frames are kept."""
    return max(1, min(AUTO_STRIDE, count // AUTO_MIN_FRAMES))


def frame_positions(count: int, stride: int | None, frames: int | None) -> list[int]:
    """Frame numbers to take from a file of `count` frames: `frames` spread evenly, else every
    `stride`-th (None: `auto_stride(count)`)."""
    if frames is not None:
        if frames < 1:
            raise ConfigError(f"video_frames must be >= 1, got {frames}")
        return sorted({int(round(v)) for v in np.linspace(0, count - 1, num=min(frames, count))})
    if stride is None:
        stride = auto_stride(count)
    if stride < 1:
        raise ConfigError(f"video_stride must be >= 1, got {stride}")
    return list(range(0, count, stride))


class VideoFrames:
    """A `SampleReader` over frames of one or more video files (unlabelled)."""

    labelled = False

    def __init__(self, videos: list[Path], stride: int | None = None, frames: int | None = None,
                 limit: int | None = None):
        self.index: list[tuple[Path, int]] = []
        self.videos, self.available = len(videos), 0  # files, and frames in them: what was taken from
        for video in videos:
            count = _usable_count(video)
            self.available += count
            self.index += [(video, n) for n in frame_positions(count, stride, frames)]
        if limit is not None:
            self.index = self.index[:limit]
        self._captures: OrderedDict[Path, cv2.VideoCapture] = OrderedDict()
        self._pid = os.getpid()
        self._inherited: list[OrderedDict] = []
        log.info("video: %s", self.describe())

    def __len__(self) -> int:
        return len(self.index)

    def describe(self) -> str:
        """How many frames were taken from how many: "120 frames (of 3600 in 1 video)"."""
        return f"{len(self.index)} frames (of {self.available} in {self.videos} video{'s' * (self.videos != 1)})"

    def load(self, index: int) -> tuple[np.ndarray, None, str]:
        video, n = self.index[index]
        frame = _read_at(self._capture(video), n)
        if frame is None:
            raise DataError(f"could not decode frame {n} of {video}; the file may be damaged: "
                            "re-encode it (e.g. ffmpeg -i in.mp4 out.mp4) or leave it out")
        return frame, None, f"{video.name}#{n:06d}"

    def _capture(self, video: Path) -> cv2.VideoCapture:
        if self._pid != os.getpid():  # a forked worker: the parent's captures are not ours to touch
            self._inherited.append(self._captures)
            self._captures, self._pid = OrderedDict(), os.getpid()
        if video in self._captures:
            self._captures.move_to_end(video)
            return self._captures[video]
        cap = _open(video)
        self._captures[video] = cap
        while len(self._captures) > _OPEN_CAPTURES:
            self._captures.popitem(last=False)[1].release()
        return cap

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_captures"], state["_inherited"] = OrderedDict(), []  # captures cannot cross processes
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._pid = os.getpid()


def _open(video: Path) -> cv2.VideoCapture:
    cap = cv2.VideoCapture(str(video))
    if not cap.isOpened():
        raise DataError(f"cannot open video {video}; check that it is a readable video "
                        f"({suffix_list('video')}) OpenCV can decode")
    return cap


def _read_at(cap: cv2.VideoCapture, n: int) -> np.ndarray | None:
    cap.set(cv2.CAP_PROP_POS_FRAMES, n)
    ok, frame = cap.read()
    return frame if ok and frame is not None else None


def _usable_count(video: Path) -> int:
    """Frames of `video`: the container's count if its last frame decodes, else counted by reading."""
    cap = _open(video)
    try:
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count > 0 and _read_at(cap, count - 1) is not None:
            return count
        log.info("%s: frame count %d is unreliable; counting frames", video, count)
        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
        counted = 0
        while cap.grab():
            counted += 1
    finally:
        cap.release()
    if counted == 0:
        raise DataError(f"video {video} has no decodable frames; re-encode it or leave it out")
    return counted
