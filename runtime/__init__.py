"""mslseg.runtime: torch-free inference (ONNX Runtime, TensorRT) for robots and video.

Importing this package never imports torch; the heavier parts (OpenCV, ONNX Runtime) load on
first use of the names below.

    from mslseg.runtime import Segmenter
    with Segmenter("model.onnx") as seg:
        result = seg(frame)            # HxWx3 uint8 BGR -> result.labels (HxW), result.timings
"""

from __future__ import annotations

import importlib
from typing import Any

from mslseg.runtime.errors import (
    BackendError,
    DataError,
    InputError,
    MissingDependencyError,
    ModelFormatError,
    MslsegError,
    OutputError,
    ProviderLoadError,
)
from mslseg.runtime.metadata import ModelMeta, Normalization
from mslseg.runtime.sizes import Size

_LAZY = {
    "Segmenter": "mslseg.runtime.segmenter",
    "Segmentation": "mslseg.runtime.segmenter",
    "Timings": "mslseg.runtime.segmenter",
    "segment_stream": "mslseg.runtime.stream",
    "StreamResult": "mslseg.runtime.stream",
    "Frame": "mslseg.runtime.io.sources",
    "FrameRange": "mslseg.runtime.io.sources",
    "open_sources": "mslseg.runtime.io.sources",
    "colorize": "mslseg.runtime.io.viz",
    "legend": "mslseg.runtime.io.viz",
    "legend_strip": "mslseg.runtime.io.viz",
    "boundaries": "mslseg.runtime.io.viz",
    "overlay": "mslseg.runtime.io.viz",
    "palette_lut": "mslseg.runtime.io.viz",
    "read_onnx_meta": "mslseg.runtime.onnx_reader",
}

__all__ = [
    "BackendError",
    "DataError",
    "InputError",
    "MissingDependencyError",
    "ModelFormatError",
    "ModelMeta",
    "MslsegError",
    "OutputError",
    "Normalization",
    "ProviderLoadError",
    "Size",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mslseg.runtime' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
