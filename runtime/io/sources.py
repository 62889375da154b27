"""Frame sources: video files, images, robot bags, folders, globs, a camera index, an RTSP/HTTP URL.

`open_sources(spec, ...)` turns one SOURCE argument into sources, each an iterable of `Frame`s
(BGR uint8) with a name, fps and size. Frame stride and a start/end range (frame numbers, or
times like "2.5s", "1:30") apply to each source. Problems that do not stop a run (an unreadable
image skipped, a video whose decoding stopped early) are collected in `source.problems`.
A camera or stream is read through `live.LiveReader`: a stall timeout and reconnects (`LivePolicy`);
files never time out. A bag (.mcap, .bag, .db3, a rosbag2 folder) is one source per image topic
asked for (`topic`), read by `bags.BagSource`; without a topic, the error lists the bag's image topics.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.errors import DataError, InputError
from mslseg.runtime.io.live import LivePolicy, LiveReader
from mslseg.runtime.io.media import is_bag, is_image, is_video, suffix_list, suggest_glob

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")  # FFmpeg's own stderr chatter; errors come as ours


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 BGR
    index: int  # position in the source, counted before stride and range
    time_s: float | None  # timestamp in the source (index / fps); None for still images
    name: str = ""  # the image file's name; empty for video frames
    stamp_ns: int | None = None  # a bag message's header stamp (ns since the epoch); None for files and cameras
    frame_id: str = ""  # a bag message's header frame_id (the camera's TF frame); empty elsewhere


def parse_position(text: str | None) -> tuple[str, float] | None:
    """'120' -> ('frame', 120); '2.5s', '1:30', '0:01:30.5' -> ('time', seconds); None -> None."""
    if text is None or str(text).strip() == "":
        return None
    s = str(text).strip().lower()
    if re.fullmatch(r"\d+", s):
        return "frame", float(s)
    if re.fullmatch(r"\d+(\.\d+)?s", s):
        return "time", float(s[:-1])
    if re.fullmatch(r"\d+(:\d{1,2}){1,2}(\.\d+)?", s):
        seconds = 0.0
        for part in s.split(":"):
            seconds = seconds * 60 + float(part)
        return "time", seconds
    raise InputError(f"cannot read position '{text}'; use a frame number (120) or a time (2.5s, 1:30)")


@dataclass
class FrameRange:
    """Which frames to take: [start, end) by frame number or time, every `stride`-th."""

    start: str | None = None
    end: str | None = None
    stride: int = 1

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise InputError(f"stride must be >= 1, got {self.stride}")
        self._start, self._end = parse_position(self.start), parse_position(self.end)

    def bounds(self, fps: float | None, what: str) -> tuple[int, int | None]:
        def to_frame(pos: tuple[str, float] | None) -> int | None:
            if pos is None:
                return None
            if pos[0] == "time" and not fps:
                raise InputError(f"{what} has no frame rate, so a time range cannot apply; use frame numbers")
            return int(round(pos[1] * fps)) if pos[0] == "time" else int(pos[1])

        start, end = to_frame(self._start) or 0, to_frame(self._end)
        if end is not None and end <= start:
            raise InputError(f"the range {self.start or 0}..{self.end} of {what} is empty; "
                             "end must be after start")
        return start, end


@dataclass
class ImageSequence:
    """Still images, one frame each, in sorted order; unreadable ones are skipped and reported."""

    paths: list[Path]
    name: str
    frames: FrameRange = field(default_factory=FrameRange)
    kind: str = "images"
    live: bool = False
    fps: float | None = None
    problems: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        start, end = self.frames.bounds(None, self.name)
        self._selected = list(enumerate(self.paths))[start:end][:: self.frames.stride]
        if not self._selected:
            raise InputError(f"the range leaves no images of {self.name} to process")
        self.stem = safe_stem(self.name)
        self.expected = len(self._selected)

    def __iter__(self) -> Iterator[Frame]:
        import cv2

        for index, path in self._selected:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                self.problems.append(f"{path}: not a readable image, skipped")
                log.info("%s: not a readable image, skipped", path)
                continue
            yield Frame(image, index, None, path.name)

    def close(self) -> None:
        pass


class VideoSource:
    """A video file, camera or stream decoded by OpenCV's FFmpeg; reports where decoding stopped.

    A live source (camera, stream) follows `live` (a LivePolicy: stall timeout, reconnects); set
    `stop` and its waits for a stalled source end at once. `stopped` says why its frames ended early.
    """

    def __init__(self, target: str | int, name: str, kind: str, frames: FrameRange | None = None,
                 live: LivePolicy | None = None) -> None:
        import cv2

        self.name, self.kind, self.live = name, kind, kind in ("camera", "stream")
        self.stem = safe_stem(name)
        self.frames = frames or FrameRange()
        self.problems: list[str] = []
        self.policy = (live or LivePolicy()) if self.live else None
        self.stop = threading.Event()
        self._reader = LiveReader(name, kind, self.policy, self._reopen) if self.live else None
        self._target, self._cap, self._first = target, None, None
        first = self._open()
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = fps if 0 < fps < 1000 else None
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.frame_count = count if count > 0 and not self.live else None
        self.size = first.shape[:2]
        if self.live:  # keep a camera open; a file is reopened when read (many files, few handles)
            self._first = first
        else:
            self.close()
        self._start, self._end = self.frames.bounds(self.fps or (30.0 if self.live else None), name)
        ends = [x for x in (self._end, self.frame_count) if x is not None]
        last = min(ends) if ends else None
        if last is not None and last <= self._start:
            self.close()
            raise InputError(f"{name} has {self.frame_count} frames; the range starts past its end")
        self.expected = None if last is None else -(-(last - self._start) // self.frames.stride)

    def _capture(self):  # -> cv2.VideoCapture, opened
        import cv2

        if self.kind == "camera":
            cap = cv2.VideoCapture(self._target)
        elif self.kind == "stream":  # FFmpeg's own waits bounded by the stall timeout
            cap = cv2.VideoCapture(str(self._target), cv2.CAP_FFMPEG, self.policy.ffmpeg_params())
        else:
            cap = cv2.VideoCapture(str(self._target), cv2.CAP_FFMPEG)
        if not cap.isOpened():
            cap.release()
            within = f" (waited {self.policy.stall_timeout:g} s at most)" if self.kind == "stream" else ""
            raise DataError(_open_failure(self.name, self.kind) + within)
        return cap

    def _reopen(self):  # -> cv2.VideoCapture; a reconnect attempt, in a reader thread
        try:
            return self._capture()
        except DataError:
            raise DataError("it cannot be opened") from None

    def _open(self) -> np.ndarray:
        """Open the capture and decode the first frame (DataError if either fails)."""
        self._cap = self._capture()
        ok, first = self._cap.read()
        if not ok or first is None:
            self.close()
            if self.live:
                raise DataError(f"{self.kind} {self.name} opened but sent no frame"
                                + (f" within {self.policy.stall_timeout:g} s" if self.kind == "stream" else "")
                                + "; check that it is streaming")
            raise DataError(f"{self.name} has no decodable frames; the file is corrupt or truncated")
        return first

    def _wanted(self, index: int) -> bool:
        return index >= self._start and (index - self._start) % self.frames.stride == 0

    def __iter__(self) -> Iterator[Frame]:
        """Single pass: frames that are skipped (range, stride) are grabbed, never converted."""
        first, self._first = self._first, None
        if first is None:
            first = self._open()
        if self.live:
            yield from self._live_frames(first)
            return
        cap, index = self._cap, 0
        image = first if self._wanted(0) else None
        while True:
            if image is not None:
                yield Frame(image, index, index / self.fps if self.fps else None)
            index += 1
            if self._end is not None and index >= self._end:
                return
            if self._wanted(index):
                ok, image = cap.read()
            else:
                ok, image = cap.grab(), None
            if not ok:
                break
        self._report_stop(index)

    def _live_frames(self, first: np.ndarray) -> Iterator[Frame]:
        cap, self._cap = self._cap, None  # the reader's thread owns and releases it now
        for index, image in self._reader.frames(cap, first, self._wanted, self._end, self.stop):
            yield Frame(image, index, index / self.fps if self.fps else None)

    @property
    def stopped(self) -> str | None:
        """Why a live source's frames ended early (no frame within the timeout, reconnects failed)."""
        return self._reader.stopped if self._reader is not None else None

    def live_report(self) -> dict | None:
        """A live source's timeout, reconnects and how it stopped, for summary.json; None for files."""
        return self._reader.report() if self._reader is not None else None

    def _report_stop(self, decoded: int) -> None:
        if self.frame_count is not None and decoded < self.frame_count - 1:
            self.problems.append(
                f"{self.name}: decoding stopped at frame {decoded} of {self.frame_count} "
                f"(truncated or corrupt); the {decoded} frames before were processed")

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def _open_failure(name: str, kind: str) -> str:
    if kind == "camera":
        return f"camera {name} cannot be opened; check that it is connected and not in use"
    if kind == "stream":
        return f"cannot open the stream {name}; check the URL and that the server is reachable"
    return f"cannot decode {name}: not a video OpenCV/FFmpeg can read, or a corrupt file"


def safe_stem(name: str) -> str:
    stem = Path(name.rstrip("/")).stem if not name.isdigit() else f"camera{name}"
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._") or "source"
    return stem


def local_files(spec: str) -> tuple[list[Path], list[Path], list[Path]]:
    """(videos, images, bags) of a file, folder or glob argument, sorted: what `open_sources` opens, and
    what a cluster run splits (runtime/cluster/units.py). A glob's `**` matches folders at any depth; a
    rosbag2 folder (metadata.yaml inside) is one bag, whether given, in a folder or matched by a glob."""
    path = Path(spec)
    if path.is_dir() and is_bag(path):
        paths = [path]
    elif path.is_dir():
        paths = sorted(p for p in path.iterdir() if not p.name.startswith(".") and (p.is_file() or is_bag(p)))
    elif path.is_file():
        paths = [path]
    elif glob.has_magic(spec):
        paths = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file() or is_bag(p))
        if not paths:
            raise DataError(f"no files match {spec}; check the pattern "
                            "(quote it so the shell leaves it alone)")
    else:
        raise DataError(f"{spec} does not exist; give a video, an image, a bag, a folder, a glob, "
                        "a camera index or a URL")
    images = [p for p in paths if is_image(p)]
    bags = [p for p in paths if is_bag(p)]
    videos = [p for p in paths if p not in images and p not in bags and (is_video(p) or p == path)]
    if not images and not videos and not bags:
        raise DataError(f"{spec} holds no images, videos or bags{_nested_hint(path)}")
    return videos, images, bags


def _nested_hint(path: Path) -> str:
    """How to reach media in sub-folders: a glob that matches them, with its count."""
    found = suggest_glob(path) if path.is_dir() else None
    if found is None:
        return f" ({suffix_list()})"
    pattern, count, kind = found
    return f"; its sub-folders do: quote a glob, e.g. \"{pattern}\" (matches {count} {kind}s)"


def topic_required(bags: list[Path]) -> InputError:
    """The error for bags given without a topic: the first bag's image topics, one a line."""
    from mslseg.runtime.io.bags import list_image_topics

    topics = list_image_topics(bags[0])
    more = f" (the first of {len(bags)} bags)" if len(bags) > 1 else ""
    if not topics:
        return InputError(f"{bags[0]}{more} has no image topics (sensor_msgs/Image or CompressedImage) to segment")
    lines = "".join(f"\n  {t.line()}" for t in topics)
    return InputError(f"{bags[0]}{more} holds {len(topics)} image topic(s); choose one with --topic:{lines}")


def open_sources(spec: str, frames: FrameRange | None = None, live: LivePolicy | None = None,
                 topic: str | None = None) -> list[Any]:
    """One SOURCE argument -> its sources (a video or a bag's `topic` each; the images of one argument together).

    live: stall timeout and reconnects of a camera or stream (default: LivePolicy()).
    topic: the image topic to read from bags; bags without it: InputError listing their image topics.
    """
    frames = frames or FrameRange()
    spec = str(spec)
    if spec.isdigit():
        return [VideoSource(int(spec), spec, "camera", frames, live)]
    if spec.lower().startswith(URL_SCHEMES):
        is_file = is_video(spec) and spec.startswith("http")
        return [VideoSource(spec, spec, "video" if is_file else "stream", frames, live)]
    videos, images, bags = local_files(spec)
    if bags and topic is None:
        raise topic_required(bags)
    sources: list[Any] = [VideoSource(p, str(p), "video", frames) for p in videos]
    if images:
        sources.append(ImageSequence(images, spec, frames))
    if bags:
        from mslseg.runtime.io.bags import BagSource

        sources.extend(BagSource(p, topic, frames) for p in bags)
    return sources
