"""Overlay video writers: H.264 through PyAV where it is installed (browsers play it), else mp4v
through OpenCV (whose wheels cannot write H.264). Both write to a hidden temporary name beside
the final one and rename it when the video is complete, so a crash never leaves a torn .mp4
under the final name.
"""

from __future__ import annotations

import logging
import os
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

from mslseg.runtime.errors import DataError, InputError

log = logging.getLogger(__name__)

CODECS = ("auto", "h264", "mp4v")


class VideoWriter(Protocol):
    path: Path  # the final name, which exists only after close()
    codec: str

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR frame of the writer's size."""
        ...

    def close(self) -> Path: ...

    def abort(self) -> None:
        """Drop the partial video; the final name is left untouched."""
        ...


def h264_available() -> bool:
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.stem}.partial{path.suffix}")


def _finish(tmp: Path, final: Path) -> Path:
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


class PyAVWriter:
    """H.264 (libx264, yuv420p, +faststart); odd sizes are padded by one edge pixel (4:2:0 needs even)."""

    codec = "h264"

    def __init__(self, path: Path, fps: float, size: tuple[int, int], crf: int = 23) -> None:
        import av

        self.path, self._tmp = path, _temp_name(path)
        self._size = size
        h, w = size
        self._container = av.open(str(self._tmp), mode="w", format="mp4", options={"movflags": "+faststart"})
        self._stream = self._container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001),
                                                  options={"crf": str(crf), "preset": "veryfast"})
        self._stream.width, self._stream.height = w + w % 2, h + h % 2
        self._stream.pix_fmt = "yuv420p"
        self._av = av

    def write(self, frame: np.ndarray) -> None:
        h, w = self._size
        if frame.shape[:2] != (h, w):
            raise InputError(f"overlay frame {frame.shape[:2]} differs from the video's size {(h, w)}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
        packet_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")
        for packet in self._stream.encode(packet_frame):
            self._container.mux(packet)

    def close(self) -> Path:
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        return _finish(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # a half-initialised container may refuse to close; the file goes anyway
            pass
        self._tmp.unlink(missing_ok=True)


class OpenCVWriter:
    """mp4v (MPEG-4 Part 2) through OpenCV: plays in VLC and ffmpeg, not in most browsers."""

    codec = "mp4v"

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self.path, self._tmp = path, _temp_name(path)
        self._size = size
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, fps, (size[1], size[0]))
        if not self._writer.isOpened():
            raise DataError(f"OpenCV cannot write {path} (mp4v); install PyAV (pip install av) for H.264")

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != self._size:
            raise InputError(f"overlay frame {frame.shape[:2]} differs from the video's size {self._size}")
        self._writer.write(frame)

    def close(self) -> Path:
        self._writer.release()
        return _finish(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.release()
        self._tmp.unlink(missing_ok=True)


def open_video_writer(path: str | Path, fps: float | None, size: tuple[int, int],
                      codec: str = "auto") -> VideoWriter:
    """A writer for an .mp4 of `size` (height, width) at `fps` (30 when unknown)."""
    if codec not in CODECS:
        raise InputError(f"unknown video codec '{codec}'; valid: {', '.join(CODECS)}")
    path = Path(path)
    fps = fps if fps and fps > 0 else 30.0
    if codec == "h264" and not h264_available():
        raise InputError("H.264 needs PyAV with libx264: pip install av (or use --codec mp4v)")
    if codec == "h264" or (codec == "auto" and h264_available()):
        return PyAVWriter(path, fps, size)
    if codec == "auto":
        log.info("PyAV with libx264 is not installed; writing mp4v, which browsers may not play")
    return OpenCVWriter(path, fps, size)
