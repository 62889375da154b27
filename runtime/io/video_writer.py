"""Overlay video writers: H.264 through PyAV where it is installed (browsers play it), else mp4v
through OpenCV (whose wheels cannot write H.264). Both write to a hidden temporary name beside
the final one and rename it when the video is complete, so a crash never leaves a torn .mp4
under the final name. Encoders write as they go, so every call checks for a full disk, a file-size
limit or a read-only folder and raises OutputError (runtime/io/atomic.py) at the first failed write.
"""

from __future__ import annotations

import logging
import os
from contextlib import suppress
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

from mslseg.runtime.errors import DataError, InputError
from mslseg.runtime.io.atomic import OUTPUT_ERRNOS, discard, partial_name, writing

log = logging.getLogger(__name__)

CODECS = ("auto", "h264", "mp4v")


class VideoWriter(Protocol):
    path: Path  # the final name, which exists only after close()
    codec: str

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 BGR frame of the writer's size."""
        ...

    def close(self) -> Path:
        """Finish the video and publish it under `path`; on failure the partial file is dropped."""
        ...

    def abort(self) -> None:
        """Drop the partial video; the final name is left untouched."""
        ...


def h264_available() -> bool:
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available


def _finish(tmp: Path, final: Path) -> Path:
    with writing(final), open(tmp, "rb+") as f:
        os.fsync(f.fileno())
        os.replace(tmp, final)
    return final


def _probe_write(tmp: Path) -> OSError | None:
    """Why the OS refuses to grow `tmp`, which OpenCV could not write to (it only says that it
    failed): append 1 MiB, see what the OS says, and cut the file back; None if it takes it."""
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_APPEND)
    except OSError as exc:
        return exc
    size = os.fstat(fd).st_size
    try:
        block = bytes(1 << 20)
        while block:  # a nearly full disk takes part of a write and refuses only the next one
            block = block[os.write(fd, block):]
        os.fsync(fd)
    except OSError as exc:
        return exc
    finally:
        with suppress(OSError):
            os.ftruncate(fd, size)
        os.close(fd)
    return None


def _mp4_complete(path: Path) -> bool:
    """Whether the MP4 at `path` is whole: top-level boxes that tile the file, one of them 'moov'
    (the index, written last: a writer that ran out of space never gets to write it)."""
    size, pos, kinds = path.stat().st_size, 0, set()
    with open(path, "rb") as f:
        while pos < size:
            f.seek(pos)
            head = f.read(16)
            if len(head) < 8:
                return False
            n, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if n == 1:  # a 64-bit size follows the type
                n = int.from_bytes(head[8:16], "big") if len(head) == 16 else 0
            elif n == 0:  # the box runs to the end of the file
                n = size - pos
            if n < 8:
                return False
            kinds.add(kind)
            pos += n
    return pos == size and b"moov" in kinds


class PyAVWriter:
    """H.264 (libx264, yuv420p, +faststart); odd sizes are padded by one edge pixel (4:2:0 needs even)."""

    codec = "h264"

    def __init__(self, path: Path, fps: float, size: tuple[int, int], crf: int = 23) -> None:
        import av

        self.path, self._tmp = path, partial_name(path, keep_suffix=True)
        self._size = size
        h, w = size
        with writing(path):
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
        with writing(self.path):  # PyAV raises av.error.OSError (an OSError) with the errno
            for packet in self._stream.encode(packet_frame):
                self._container.mux(packet)

    def close(self) -> Path:
        try:
            with writing(self.path):  # the encoder holds frames back: a full disk may show only here
                for packet in self._stream.encode():
                    self._container.mux(packet)
                self._container.close()
            return _finish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        try:
            self._container.close()
        except Exception:  # a half-initialised container may refuse to close; the file goes anyway
            pass
        discard(self._tmp)


class OpenCVWriter:
    """mp4v (MPEG-4 Part 2) through OpenCV: plays in VLC and ffmpeg, not in most browsers."""

    codec = "mp4v"

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        import cv2

        self.path, self._tmp = path, partial_name(path, keep_suffix=True)
        self._size = size
        self._frames = 0
        with writing(path):  # OpenCV says only that it failed: the OS says why (read-only, full)
            os.close(os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666))
        fourcc = cv2.VideoWriter_fourcc(*"mp4v")
        self._writer = cv2.VideoWriter(str(self._tmp), fourcc, fps, (size[1], size[0]))
        if not self._writer.isOpened():
            self._fail()
            self.abort()
            raise DataError(f"OpenCV cannot write {path} (mp4v); install PyAV (pip install av) for H.264")

    def _fail(self) -> None:
        """Raise OutputError if the OS refuses to grow the video (full disk, file-size limit)."""
        problem = _probe_write(self._tmp)
        if problem is not None and problem.errno in OUTPUT_ERRNOS:
            self.abort()
            with writing(self.path):
                raise problem

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[:2] != self._size:
            raise InputError(f"overlay frame {frame.shape[:2]} differs from the video's size {self._size}")
        if self._writer.write(frame) is False:  # OpenCV 5 says; 4.x returns None (checked at close)
            self._fail()
            raise DataError(f"OpenCV could not write frame {self._frames} of {self.path} (mp4v)")
        self._frames += 1

    def close(self) -> Path:
        self._writer.release()
        try:
            if not self._complete():
                self._fail()
                raise DataError(f"OpenCV could not finish {self.path} (mp4v); it holds fewer frames than "
                                f"the {self._frames} written")
            return _finish(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise

    def _complete(self) -> bool:
        """Whether the released file is whole: OpenCV does not say when writing the index failed
        (nor, before OpenCV 5, when writing a frame did)."""
        return not self._frames or _mp4_complete(self._tmp)

    def abort(self) -> None:
        self._writer.release()
        discard(self._tmp)


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
