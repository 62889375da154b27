"""Read the mslseg metadata of an .onnx file before any session exists.

The ONNX Runtime providers need to know the file's precision before the session is built (the
TensorRT EP must be told that a Q/DQ graph is int8), and the runtime does not depend on the
`onnx` package, so this walks the top level of the ModelProto (protobuf wire format) and reads
only field 14, `metadata_props`; the graph itself (field 7) is skipped, never parsed.

Before anything loads a model (ONNX Runtime, onnx, TensorRT's parser), `check_external_data`
walks to every TensorProto and refuses external-data locations outside the model's folder.
"""

from __future__ import annotations

import mmap
from pathlib import Path

from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.metadata import ONNX_METADATA_KEY, ModelMeta

_METADATA_PROPS = 14
# Where TensorProtos live, by field number (onnx.proto): every one of them may name an external file.
_MODEL_GRAPH, _MODEL_TRAINING_INFO, _MODEL_FUNCTIONS = 7, 20, 25
_TRAINING_GRAPHS = (1, 2)  # TrainingInfoProto.initialization, .algorithm
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTR_TENSORS = (5, 10)  # AttributeProto.t, .tensors
_ATTR_GRAPHS = (6, 11)  # .g, .graphs
_ATTR_SPARSE = (22, 23)  # .sparse_tensor, .sparse_tensors
_SPARSE_TENSORS = (1, 2)  # SparseTensorProto.values, .indices
_EXTERNAL_DATA = 13  # TensorProto.external_data: StringStringEntryProto (key 1, value 2)
# torch.save writes a zip archive (and before PyTorch 1.6 a bare pickle, protocol 2: 0x80 0x02); a
# ModelProto starts with a field tag, never these bytes (0x50 would be field 10, which ModelProto lacks)
_TORCH_HEADERS = (b"PK\x03\x04", b"\x80")


def check_not_torch(path: Path) -> None:
    """Refuse a PyTorch checkpoint named .onnx before parsing it: its bytes may even read as fields."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(_TORCH_HEADERS):
        raise ModelFormatError(f"{path} is not an ONNX file (it looks like a PyTorch checkpoint: rename it to "
                               ".pt, or export it with `mslseg export`)")


def not_onnx(path: Path, exc: Exception) -> ModelFormatError:
    """The error for a file that does not parse as an ONNX ModelProto."""
    return ModelFormatError(f"{path} is not an ONNX model file (its bytes do not parse as ONNX's protobuf "
                            f"format: {exc}); check the path, or export a checkpoint with `mslseg export`")


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
    """Every `location` of a tensor stored outside the file, read without parsing the whole model:
    initializers (dense and sparse) and tensors of node attributes, in the main graph, its
    subgraphs, model-local functions and training graphs."""
    found: list[str] = []
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:

        def tensor(span: tuple[int, int]) -> None:
            for n, sub in _fields(buf, *span):
                if n == _EXTERNAL_DATA and sub:
                    entry = {k: bytes(buf[a:b]).decode("utf-8") for k, (a, b) in
                             ((k, v) for k, v in _fields(buf, *sub) if v)}
                    if entry.get(1) == "location":
                        found.append(entry.get(2, ""))

        def sparse(span: tuple[int, int]) -> None:
            for n, sub in _fields(buf, *span):
                if n in _SPARSE_TENSORS and sub:
                    tensor(sub)

        def node(span: tuple[int, int]) -> None:
            for m, attr in _fields(buf, *span):
                if m != _NODE_ATTRIBUTE or not attr:
                    continue
                for k, val in _fields(buf, *attr):
                    if not val:
                        continue
                    if k in _ATTR_TENSORS:
                        tensor(val)
                    elif k in _ATTR_GRAPHS:
                        graph(val)
                    elif k in _ATTR_SPARSE:
                        sparse(val)

        def graph(span: tuple[int, int]) -> None:
            for n, sub in _fields(buf, *span):
                if not sub:
                    continue
                if n == _GRAPH_INITIALIZER:
                    tensor(sub)
                elif n == _GRAPH_SPARSE_INITIALIZER:
                    sparse(sub)
                elif n == _GRAPH_NODE:
                    node(sub)

        for number, span in _fields(buf, 0, len(buf)):
            if not span:
                continue
            if number == _MODEL_GRAPH:
                graph(span)
            elif number == _MODEL_FUNCTIONS:
                for n, sub in _fields(buf, *span):
                    if n == _FUNCTION_NODE and sub:
                        node(sub)
            elif number == _MODEL_TRAINING_INFO:
                for n, sub in _fields(buf, *span):
                    if n in _TRAINING_GRAPHS and sub:
                        graph(sub)
    return found


def check_external_data(path: str | Path) -> None:
    """Refuse a model whose external tensors point outside its own folder (absolute paths, '..')."""
    path = Path(path)
    check_not_torch(path)
    try:
        locations = external_data_locations(path)
    except (ValueError, UnicodeDecodeError) as exc:
        raise not_onnx(path, exc) from None
    except RecursionError:
        raise ModelFormatError(f"{path} nests subgraphs too deeply to be a real model; check the file") from None
    folder = path.resolve().parent
    for loc in locations:
        try:
            inside = not Path(loc).is_absolute() and folder in (folder / loc).resolve().parents
        except (ValueError, OSError):  # an embedded NUL byte, a symlink loop
            inside = False
        if not inside:
            raise ModelFormatError(
                f"{path} stores a tensor at {loc!r}, outside the model's folder; refusing to read it: "
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
        raise not_onnx(path, exc) from None
    if ONNX_METADATA_KEY not in props:
        raise ModelFormatError(
            f"{path} has no mslseg metadata (metadata_props key '{ONNX_METADATA_KEY}'), so its classes, "
            "normalisation and outputs are unknown; export the checkpoint with 'mslseg export'"
        )
    return ModelMeta.from_json(props[ONNX_METADATA_KEY], str(path))
