"""Facts about a TensorRT engine's sidecar that the builder (mslseg.export) and the runtime share:
where the sidecar lies, and how a compute capability written in it (or read from a GPU) is read.

No TensorRT and no CUDA here: a sidecar is plain JSON, and "unknown" is a valid capability (the
builder writes it where neither cuda-python nor torch could tell).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

SIDECAR_SUFFIX = ".json"  # model.engine -> model.json: metadata beside the engine, never glued onto it

_DOTTED = re.compile(r"(\d+)\.(\d+)")  # "8.6", "12.0": what gpu_info and the device properties give
_SM = re.compile(r"(?:sm_?)?(\d+)(\d)")  # "sm_86", "sm90", "120": NVCC's arch names, the last digit minor


def sidecar_path(engine: str | os.PathLike[str]) -> Path:
    """model.engine -> model.json (the engine's metadata and build info)."""
    return Path(engine).with_suffix(SIDECAR_SUFFIX)


def parse_capability(text: object) -> tuple[int, int] | None:
    """A compute capability as (major, minor); None where it is not known ("unknown", empty, unreadable)."""
    value = str(text or "").strip().lower()
    match = _DOTTED.fullmatch(value) or _SM.fullmatch(value)
    return (int(match[1]), int(match[2])) if match else None
