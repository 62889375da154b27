"""The ONNX Runtime TensorRT EP's optimisation profile: the graph input's dims, read before any
session exists, and the min/opt/max shapes derived from how the Segmenter will run the model.

The profile's maximum is what TensorRT reserves memory for (activations of the largest batch at
the largest size), so it follows the Segmenter's batch size and run size instead of a fixed
guess: batch 8 at twice the training size needs gigabytes that an 8 GB GPU or a Jetson lacks.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from mslseg.runtime.errors import InputError
from mslseg.runtime.metadata import ModelMeta
from mslseg.runtime.onnx_reader import _fields, _varint
from mslseg.runtime.sizes import NATIVE, Size, parse_run_size


def input_dims(path: Path, name: str = "input") -> list[int | None] | None:
    """The shape of graph input `name` (None where dynamic), read from the protobuf before any
    session exists (the TensorRT EP's profile must be known when the session is created); None
    when the file does not say."""
    # ModelProto.graph 7 > GraphProto.input 11 > ValueInfoProto(name 1, type 2) > TypeProto.tensor_type 1
    # > shape 2 > TensorShapeProto.dim 1 > Dimension(dim_value 1 varint | dim_param 2)
    def sub(buf, span, number):
        return [s for n, s in _fields(buf, *span) if n == number and s]

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            for graph in sub(buf, (0, len(buf)), 7):
                for value in sub(buf, graph, 11):
                    names = sub(buf, value, 1)
                    if not names or bytes(buf[names[0][0]:names[0][1]]).decode("utf-8") != name:
                        continue
                    shapes = [s for t in sub(buf, value, 2) for tt in sub(buf, t, 1) for s in sub(buf, tt, 2)]
                    if not shapes:
                        return None
                    return [_dim_value(buf, d) for d in sub(buf, shapes[0], 1)]
    except (ValueError, OSError):
        return None
    return None


def _dim_value(buf: mmap.mmap, span: tuple[int, int]) -> int | None:
    pos, end = span
    while pos < end:
        tag, pos = _varint(buf, pos)
        if tag == (1 << 3):  # dim_value, varint
            value, _ = _varint(buf, pos)
            return value if value > 0 else None
        if tag & 7 != 2:
            return None
        length, pos = _varint(buf, pos)
        pos += length  # dim_param (a name: dynamic) or denotation
    return None


def check_profile_options(max_batch: int | None, max_size: Size | str | None) -> tuple[int | None, Size | str | None]:
    """`trt_max_batch` and `trt_max_size` as given (None: derived), checked; bad values raise InputError."""
    if max_batch is not None and (isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1):
        raise InputError(f"trt_max_batch must be an integer >= 1, got {max_batch!r}")
    return max_batch, parse_run_size(max_size, "trt_max_size")


def profile_shapes(meta: ModelMeta, dims: list[int | None], *, max_batch: int | None = None,
                   max_size: Size | str | None = None) -> dict[str, str] | None:
    """The TensorRT EP's explicit optimisation profile for input `dims` (None where dynamic), or None.

    Without one the EP builds an engine for the first shape it sees (the 64x64 warm-up, say) and
    rebuilds on the first real frame. `max_batch` (default 1): the most frames per run, the
    Segmenter's batch size. `max_size`: the largest frame, where frames run: a Size (the
    Segmenter's run size), None (the training size, the Segmenter's default), or 'native' (frames
    at their own sizes: up to twice the training size). opt, where TensorRT tunes its kernels, is
    `max_batch` frames at that size (at the training size for 'native'); min is one 32x32 frame.
    """
    if None not in dims:
        return None  # static shapes: one engine, nothing to choose
    if meta.train_size is None and not isinstance(max_size, Size):
        return None  # no size to tune for: leave the EP to its shape-driven build
    batch = max_batch or 1
    if isinstance(max_size, Size):
        opt_hw = top_hw = max_size.hw
    elif max_size == NATIVE:
        opt_hw = meta.train_size.hw
        top_hw = (2 * opt_hw[0], 2 * opt_hw[1])
    else:
        opt_hw = top_hw = meta.train_size.hw
    hw_at = (2, 3) if meta.input_kind == "float" else (1, 2)

    def shape(n: int, height: int, width: int) -> str:
        out = list(dims)
        for i, value in zip((0, *hw_at), (n, height, width), strict=True):
            out[i] = out[i] or value
        return "input:" + "x".join(str(d) for d in out)

    return {
        "trt_profile_min_shapes": shape(1, min(32, opt_hw[0]), min(32, opt_hw[1])),
        "trt_profile_opt_shapes": shape(batch, *opt_hw),
        "trt_profile_max_shapes": shape(batch, *top_hw),
    }
