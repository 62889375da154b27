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
# ModelProto.graph = 7; GraphProto.initializer = 5, .node = 1; NodeProto.attribute = 5;
# AttributeProto.t = 5, .g = 6; TensorProto.external_data = 13 (StringStringEntryProto key 1, value 2)
_GRAPH, _INITIALIZER, _NODE, _ATTRIBUTE, _ATTR_T, _ATTR_G, _EXTERNAL_DATA = 7, 5, 1, 5, 5, 6, 13


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


def external_data_locations(path: Path) -> list[str]:
    """Every `location` of a tensor stored outside the file (initializers, and constant tensors of
    node attributes, in the main graph and subgraphs), read without parsing the whole model."""
    found: list[str] = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:

        def tensor(span: tuple[int, int]) -> None:
            for n, sub in _fields(buf, *span):
                if n == _EXTERNAL_DATA and sub:
                    entry = {k: bytes(buf[a:b]).decode("utf-8") for k, (a, b) in
                             ((k, v) for k, v in _fields(buf, *sub) if v)}
                    if entry.get(1) == "location":
                        found.append(entry.get(2, ""))

        def graph(span: tuple[int, int]) -> None:
            for n, sub in _fields(buf, *span):
                if n == _INITIALIZER and sub:
                    tensor(sub)
                elif n == _NODE and sub:
                    for m, attr in _fields(buf, *sub):
                        if m == _ATTRIBUTE and attr:
                            for k, val in _fields(buf, *attr):
                                if k == _ATTR_T and val:
                                    tensor(val)
                                elif k == _ATTR_G and val:
                                    graph(val)

        for number, span in _fields(buf, 0, len(buf)):
            if number == _GRAPH and span:
                graph(span)
    return found


def check_external_data(path: str | Path) -> None:
    """Refuse a model whose external tensors point outside its own folder (absolute paths, '..')."""
    path = Path(path)
    try:
        locations = external_data_locations(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path} is not an ONNX model ({exc}); check the path") from None
    folder = path.resolve().parent
    for loc in locations:
        target = (folder / loc).resolve()
        if Path(loc).is_absolute() or folder not in target.parents:
            raise ModelFormatError(
                f"{path} stores a tensor at '{loc}', outside the model's folder; refusing to read it: "
                "re-export the model (mslseg writes one self-contained file)"
            )


def read_onnx_meta(path: str | Path) -> ModelMeta:
    """The ModelMeta stored in an .onnx file, or a ModelFormatError saying what is wrong."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ModelFormatError(f"model {path} does not exist or is empty; check the path")
    check_external_data(path)
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
