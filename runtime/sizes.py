"""One size convention for everything a user types or reads: WIDTHxHEIGHT.

`Size` is the one type for an image size in public code; `Size.parse` is the one parser of the
text form ("1024x512" = 1024 wide, 512 high). Tensor code keeps (height, width) internally and
gets it from `Size.hw`. The resize methods images are scaled with live here too, so training,
evaluation and the runtime resize the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mslseg.runtime.errors import InputError

if TYPE_CHECKING:
    import numpy as np

NATIVE = "native"  # run a model at each frame's own size
EXAMPLE = "1024x512"

# image resize methods by name, as OpenCV flags; labels are always resized nearest
INTERPOLATIONS = {"bicubic": 2, "bilinear": 1}  # cv2.INTER_CUBIC, cv2.INTER_LINEAR (no cv2 import here)
DEFAULT_INTERPOLATION = "bicubic"  # the reference code's, and a model's when its metadata names none


@dataclass(frozen=True, order=True)
class Size:
    """An image size: `Size(width, height)`, written and parsed as WIDTHxHEIGHT."""

    width: int
    height: int

    def __post_init__(self) -> None:
        for name, value in (("width", self.width), ("height", self.height)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"size {name} must be an integer >= 1, got {value!r}")

    @classmethod
    def parse(cls, text: str, what: str = "--size") -> Size:
        """'1024x512' -> Size(1024, 512); anything else raises InputError naming `what`."""
        parts = str(text).strip().lower().split("x")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            raise InputError(f"{what} '{text}' is not WIDTHxHEIGHT with both >= 1 (for example {EXAMPLE})")
        return cls(int(parts[0]), int(parts[1]))

    @classmethod
    def of(cls, value: Any, what: str = "size") -> Size:
        """A Size, a 'WxH' string, or a [width, height] list (YAML, JSON) -> Size.

        A bare tuple is refused: (512, 1024) reads as (height, width) to some and (width, height)
        to others, so it must be spelled Size(width=1024, height=512) or '1024x512'.
        """
        if isinstance(value, Size):
            return value
        if isinstance(value, str):
            return cls.parse(value, what)
        if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) for v in value):
            return cls(value[0], value[1])
        raise InputError(f"{what} must be WIDTHxHEIGHT ('{EXAMPLE}') or Size(width, height), got {value!r}")

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width): the order of array and tensor shapes."""
        return self.height, self.width

    @classmethod
    def from_hw(cls, hw: tuple[int, int]) -> Size:
        return cls(int(hw[1]), int(hw[0]))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}"


def parse_run_size(value: Any, what: str = "--size") -> Size | str | None:
    """A run size as a user gives it: None (the model's own), 'native', or WIDTHxHEIGHT."""
    if value is None or isinstance(value, Size):
        return value
    if isinstance(value, str) and value.strip().lower() == NATIVE:
        return NATIVE
    return Size.of(value, what)


def check_interpolation(name: str, what: str = "interpolation") -> str:
    if name not in INTERPOLATIONS:
        raise InputError(f"{what} '{name}' is not one of {', '.join(INTERPOLATIONS)}")
    return name


def resize_frame(frame: np.ndarray, size: Size, interpolation: str = DEFAULT_INTERPOLATION) -> np.ndarray:
    """An HxWx3 image at `size`, resized the way a model's inputs are (`INTERPOLATIONS`); as is if already there."""
    import cv2  # here, not at the top: `import mslseg` stays light

    h, w = size.hw
    if frame.shape[:2] == (h, w):
        return frame
    return cv2.resize(frame, (w, h), interpolation=INTERPOLATIONS[check_interpolation(interpolation)])
