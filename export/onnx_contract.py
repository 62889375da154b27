"""The mslseg metadata inside an ONNX file, and the graph's I/O contract that the runtime relies on.

Contract: one input "input", float32 (N, 3, H, W) normalised or uint8 (N, H, W, 3) raw frames;
a first output "output", float32 (N, C, H, W) logits or probabilities or (N, H, W) labels
(`graph_label_dtype`: uint8 up to 255 classes, else int32); optionally "confidence", float32
(N, H, W). The metadata is `ModelMeta.to_json()` under `metadata_props["mslseg"]`: JSON, parsed, never evaluated.
"""

from __future__ import annotations

from pathlib import Path

import onnx

from mslseg.runtime.errors import ExportError, ModelFormatError
from mslseg.runtime.metadata import ONNX_METADATA_KEY, ModelMeta, graph_label_dtype
from mslseg.runtime.onnx_reader import check_external_data

_FLOAT, _UINT8 = onnx.TensorProto.FLOAT, onnx.TensorProto.UINT8


def write_meta(proto: onnx.ModelProto, meta: ModelMeta) -> None:
    """Store `meta` in `proto.metadata_props` (replacing an older entry) and name the producer."""
    props = [p for p in proto.metadata_props if p.key != ONNX_METADATA_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(props)
    proto.metadata_props.add(key=ONNX_METADATA_KEY, value=meta.to_json())
    proto.producer_name = "mslseg"
    proto.producer_version = meta.mslseg_version
    proto.doc_string = (f"{meta.arch} semantic segmentation, {meta.num_classes} classes, "
                        f"{meta.precision}; exported by mslseg {meta.mslseg_version}")


def load_meta(model: str | Path | onnx.ModelProto, source: str | None = None) -> ModelMeta:
    """The ModelMeta of an ONNX file or ModelProto; ModelFormatError when it is missing or bad."""
    source = source or ("model" if isinstance(model, onnx.ModelProto) else str(model))
    proto = model if isinstance(model, onnx.ModelProto) else load_proto(model)
    props = {p.key: p.value for p in proto.metadata_props}
    if ONNX_METADATA_KEY not in props:
        raise ModelFormatError(f"{source} has no mslseg metadata (metadata_props key "
                               f"'{ONNX_METADATA_KEY}'); export the checkpoint with 'mslseg export'")
    return ModelMeta.from_json(props[ONNX_METADATA_KEY], source)


def load_proto(path: str | Path) -> onnx.ModelProto:
    """onnx.load with a ModelFormatError a user can act on."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise ModelFormatError(f"ONNX model {path} does not exist or is empty; check the path")
    check_external_data(path)  # before onnx.load follows any external-data path
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf raises its own DecodeError types
        raise ModelFormatError(f"{path} is not an ONNX model ({type(exc).__name__}); "
                               "check the path") from None


def _shape(value: onnx.ValueInfoProto) -> list[int | str]:
    return [d.dim_value if d.HasField("dim_value") else d.dim_param
            for d in value.type.tensor_type.shape.dim]


def check_contract(proto: onnx.ModelProto, meta: ModelMeta,
                   static: tuple[int, int, int] | None = None) -> None:
    """ExportError unless the graph's inputs and outputs are what `meta` promises.

    `static` (batch, height, width) also checks that those dimensions are fixed to these values;
    otherwise they must be dynamic.
    """
    inputs = [i for i in proto.graph.input if i.name not in {t.name for t in proto.graph.initializer}]
    outputs = list(proto.graph.output)
    want_out = ["output", "confidence"] if meta.confidence else ["output"]
    problems = []
    if [i.name for i in inputs] != ["input"]:
        problems.append(f"inputs {[i.name for i in inputs]}, expected ['input']")
    if [o.name for o in outputs] != want_out:
        problems.append(f"outputs {[o.name for o in outputs]}, expected {want_out}")
    if problems:
        raise ExportError("the exported graph breaks the mslseg I/O contract: " + "; ".join(problems))
    c = meta.num_classes
    n, h, w = static or ("batch", "height", "width")
    if meta.input_kind == "uint8":
        expect = [("input", inputs[0], _UINT8, [n, h, w, 3])]
    else:
        expect = [("input", inputs[0], _FLOAT, [n, 3, h, w])]
    if meta.output_kind == "labels":
        labels_type = onnx.helper.np_dtype_to_tensor_dtype(graph_label_dtype(c))
        expect.append(("output", outputs[0], labels_type, [n, h, w]))
    else:
        expect.append(("output", outputs[0], _FLOAT, [n, c, h, w]))
    if meta.confidence:
        expect.append(("confidence", outputs[1], _FLOAT, [n, h, w]))
    for name, value, dtype, shape in expect:
        got_type, got_shape = value.type.tensor_type.elem_type, _shape(value)
        if got_type != dtype or got_shape != shape:
            problems.append(f"{name} is {onnx.TensorProto.DataType.Name(got_type)}{got_shape}, "
                            f"expected {onnx.TensorProto.DataType.Name(dtype)}{shape}")
    if problems:
        raise ExportError("the exported graph breaks the mslseg I/O contract: " + "; ".join(problems))
