"""What surrounds a TensorRT build and needs no TensorRT: profile shapes, the sidecar, the preflight.

Profile shapes are given as (batch, height, width), the way a user thinks of frames, and mapped
onto the input's layout (NCHW for float input, NHWC for uint8). The engine's metadata goes in
a sidecar `model.json` beside `model.engine`: the model's ModelMeta with a `tensorrt` entry in
`extra`, so `ModelMeta.from_json` reads it as it is. The engine file holds the engine bytes
only, so trtexec and every other TensorRT tool can read it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mslseg.runtime.atomic import atomic_write_text
from mslseg.runtime.errors import InputError, MissingDependencyError
from mslseg.runtime.metadata import ModelMeta

Shape3 = tuple[int, int, int]  # (batch, height, width)

INSTALL_HINT = ("TensorRT engines need TensorRT and an NVIDIA GPU with its driver: on the machine that "
                "will run the engine, pip install 'mslseg[gpu]'")


@dataclass(frozen=True)
class ProfileShapes:
    """One optimisation profile, each shape (batch, height, width)."""

    min: Shape3
    opt: Shape3
    max: Shape3

    def __post_init__(self) -> None:
        for a, b, names in ((self.min, self.opt, "min <= opt"), (self.opt, self.max, "opt <= max")):
            if any(x > y for x, y in zip(a, b, strict=True)):
                raise InputError(f"profile shapes must satisfy {names} in every dimension, got "
                                 f"min {_fmt(self.min)}, opt {_fmt(self.opt)}, max {_fmt(self.max)}")

    def for_layout(self, input_kind: str) -> dict[str, list[int]]:
        """Full input shapes per profile point: NCHW for float input, NHWC for uint8."""
        def full(s: Shape3) -> list[int]:
            n, h, w = s
            return [n, h, w, 3] if input_kind == "uint8" else [n, 3, h, w]
        return {"min": full(self.min), "opt": full(self.opt), "max": full(self.max)}


def _fmt(s: Shape3) -> str:
    return "x".join(map(str, s))


def parse_shape(text: str) -> Shape3:
    """'4x512x1024' -> (4, 512, 1024); 'HxW' means batch 1. InputError on anything else."""
    if not re.fullmatch(r"\s*\d+(\s*x\s*\d+){1,2}\s*", text or ""):
        raise InputError(f"shape '{text}' is not BATCHxHEIGHTxWIDTH or HEIGHTxWIDTH (e.g. 1x512x1024)")
    dims = [int(d) for d in text.lower().split("x")]
    if len(dims) == 2:
        dims = [1, *dims]
    if min(dims) < 1:
        raise InputError(f"shape '{text}' has a zero dimension")
    return dims[0], dims[1], dims[2]


def resolve_profile(meta: ModelMeta, fixed: Shape3 | None, *, min_shape: str | Shape3 | None = None,
                    opt_shape: str | Shape3 | None = None,
                    max_shape: str | Shape3 | None = None) -> ProfileShapes:
    """The profile to build: given shapes, defaults from the export size, checked against fixed dims.

    `fixed` is (batch, height, width) of a static model (None when dynamic). Defaults: opt at the
    training size (else 512x1024), min at half of it, max at it; all at batch 1.
    """
    parsed = [parse_shape(s) if isinstance(s, str) else s for s in (min_shape, opt_shape, max_shape)]
    if fixed is not None:
        wrong = [_fmt(s) for s in parsed if s is not None and tuple(s) != tuple(fixed)]
        if wrong:
            raise InputError(f"the model has the fixed input shape {_fmt(fixed)}; profile shapes "
                             f"{', '.join(wrong)} cannot apply (drop them, or export without --static)")
        return ProfileShapes(fixed, fixed, fixed)
    h, w = meta.train_size or (512, 1024)
    opt = parsed[1] or (1, h, w)
    mn = parsed[0] or (1, max(opt[1] // 2, 8), max(opt[2] // 2, 8))
    mx = parsed[2] or opt
    return ProfileShapes(tuple(mn), tuple(opt), tuple(mx))


def sidecar_path(engine: str | Path) -> Path:
    """model.engine -> model.json."""
    return Path(engine).with_suffix(".json")


def write_sidecar(engine: str | Path, meta: ModelMeta, tensorrt: dict[str, Any]) -> Path:
    """Write the engine's `model.json`: `meta` with `extra['tensorrt'] = tensorrt`; returns its path."""
    full = meta.with_(extra={**meta.extra, "tensorrt": tensorrt})
    path = sidecar_path(engine)
    atomic_write_text(path, json.dumps(full.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def tensorrt_info(*, version: str, gpu: str, compute_capability: str, profile: ProfileShapes,
                  input_kind: str, precision: str, **build: Any) -> dict[str, Any]:
    """The `tensorrt` entry of the sidecar (plain JSON types only)."""
    return {
        "version": version,
        "gpu": gpu,
        "compute_capability": compute_capability,
        "precision": precision,
        "profile": profile.for_layout(input_kind),
        "profile_nhw": {k: list(v) for k, v in asdict(profile).items()},
        **build,
    }


def import_tensorrt() -> Any:
    """The tensorrt module, or MissingDependencyError saying what to install and that a GPU is needed."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from None
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        raise MissingDependencyError(f"TensorRT {trt.__version__} is too old: mslseg builds with "
                                     f"TensorRT 10 or 11; {INSTALL_HINT}")
    return trt
