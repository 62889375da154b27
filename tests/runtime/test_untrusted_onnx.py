"""ONNX files are data: external tensors outside the model's folder are refused before anything
reads them, and metadata is parsed as JSON, never evaluated."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.metadata import ONNX_METADATA_KEY, ModelMeta
from mslseg.runtime.onnx_meta import check_external_data, read_onnx_meta


def _model_with_external(folder, location):
    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    w.data_location = TensorProto.EXTERNAL
    w.ClearField("raw_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        w.external_data.add(key=key, value=value)
    node = helper.make_node("MatMul", ["x", "w"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], [w])
    model = helper.make_model(graph)
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "sub/../../secret.bin"])
def test_external_data_outside_the_folder_is_refused(tmp_path, location):
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    path = _model_with_external(folder, location)
    with pytest.raises(ModelFormatError, match="outside the model's folder"):
        check_external_data(path)
    with pytest.raises(ModelFormatError, match="outside the model's folder"):
        read_onnx_meta(path)
    from mslseg.export.onnx_meta import load_proto

    with pytest.raises(ModelFormatError, match="outside the model's folder"):
        load_proto(path)


def test_external_data_inside_the_folder_is_allowed(tmp_path):
    path = _model_with_external(tmp_path, "weights.bin")
    check_external_data(path)  # no error


def test_metadata_with_code_is_data_not_code(tmp_path, monkeypatch):
    marker = tmp_path / "ran"
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph)
    code = f"__import__('pathlib').Path({str(marker)!r}).touch()"
    model.metadata_props.add(key=ONNX_METADATA_KEY, value=code)
    path = tmp_path / "evil.onnx"
    onnx.save_model(model, str(path))
    with pytest.raises(ModelFormatError, match="not valid JSON"):
        read_onnx_meta(path)
    assert not marker.exists()
    names = '{"num_classes": 1, "class_names": ["' + code.replace('"', "'") + '"], "palette": [[0, 0, 0]]}'
    meta = ModelMeta.from_json(names)
    assert meta.class_names[0].startswith("__import__") and not marker.exists()
