"""Read the mslseg metadata of an .onnx file before any session exists.

The ONNX Runtime providers need to know the file's precision before the session is built (the
TensorRT EP must be told that a Q/DQ graph is int8), and the runtime does not depend on the
`onnx` package, so this walks the top level of the ModelProto (protobuf wire format) and reads
only field 14, `metadata_props`; the graph itself (field 7) is skipped, never parsed.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.metadata import ONNX_METADATA_KEY, ModelMeta

_METADATA_PROPS = 14


def _varint(buf: mmap.mmap | bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _fields(buf: mmap.mmap | bytes, start: int, end: int):
    """Yield (field number, payload slice or None) for each field in buf[start:end]."""
    pos = start
    while pos < end:
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, pos = _varint(buf, pos)
            yield number, None
        elif wire == 1:
            pos += 8
            yield number, None
        elif wire == 5:
            pos += 4
            yield number, None
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > end:
                raise ValueError("field runs past the end of the file")
            yield number, (pos, pos + length)
            pos += length
        else:
            raise ValueError(f"wire type {wire}")
        if number == 0:
            raise ValueError("field number 0")


def read_metadata_props(path: Path) -> dict[str, str]:
    """All `metadata_props` of the ONNX file at `path` (key -> value)."""
    props: dict[str, str] = {}
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        for number, span in _fields(buf, 0, len(buf)):
            if number != _METADATA_PROPS or span is None:
                continue
            entry = {n: bytes(buf[s[0]:s[1]]).decode("utf-8") for n, s in _fields(buf, *span) if s}
            props[entry.get(1, "")] = entry.get(2, "")
    return props


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """The ModelMeta stored in an .onnx file, or a ModelFormatError saying what is wrong."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ModelFormatError(f"model {path} does not exist or is empty; check the path")
    try:
        props = read_metadata_props(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path} is not an ONNX model ({exc}); check the path") from None
    if ONNX_METADATA_KEY not in props:
        raise ModelFormatError(
            f"{path} has no mslseg metadata (metadata_props key '{ONNX_METADATA_KEY}'), so its classes, "
            "normalisation and outputs are unknown; export the checkpoint with 'mslseg export'"
        )
    return ModelMeta.from_json(props[ONNX_METADATA_KEY], str(path))
