"""ONNX files are data: external tensors outside the model's folder are refused before anything
reads them, and metadata is parsed as JSON, never evaluated."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.metadata import ONNX_METADATA_KEY, ModelMeta
from mslseg.runtime.onnx_reader import check_external_data, read_onnx_meta


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
    from mslseg.export.onnx_contract import load_proto

    with pytest.raises(ModelFormatError, match="outside the model's folder"):
        load_proto(path)


def _external(location, name="w"):
    t = numpy_helper.from_array(np.ones((4, 4), np.float32), name)
    t.data_location = TensorProto.EXTERNAL
    t.ClearField("raw_data")
    for key, value in (("location", location), ("offset", "0"), ("length", "64")):
        t.external_data.add(key=key, value=value)
    return t


def _io(graph_nodes, initializers=(), sparse=()):
    return helper.make_graph(graph_nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])],
                             list(initializers), sparse_initializer=list(sparse))


def _in_subgraph(loc):
    const = helper.make_node("Constant", [], ["y"], value=_external(loc))
    branch = helper.make_graph([const], "b", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])])
    cond = helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True), "c"))
    return helper.make_model(_io([cond, helper.make_node("If", ["c"], ["y"], then_branch=branch,
                                                         else_branch=branch)]))


def _in_attribute_list(loc):
    node = helper.make_node("Custom", ["x"], ["y"], domain="example", tables=[_external(loc, "t")])
    return helper.make_model(_io([node]))


def _in_sparse_initializer(loc):
    sparse = helper.make_sparse_tensor(_external(loc, "v"), numpy_helper.from_array(np.arange(16), "i"), [4, 4])
    sparse.values.dims[:] = [16]
    return helper.make_model(_io([helper.make_node("MatMul", ["x", "v"], ["y"])], sparse=[sparse]))


def _in_function(loc):
    const = helper.make_node("Constant", [], ["w"], value=_external(loc))
    body = helper.make_node("MatMul", ["x", "w"], ["y"])
    fn = helper.make_function("example", "Fn", ["x"], ["y"], [const, body], [helper.make_opsetid("", 17)])
    model = helper.make_model(_io([helper.make_node("Fn", ["x"], ["y"], domain="example")]),
                              functions=[fn], opset_imports=[helper.make_opsetid("", 17),
                                                             helper.make_opsetid("example", 1)])
    return model


@pytest.mark.parametrize("build", [_in_subgraph, _in_attribute_list, _in_sparse_initializer, _in_function])
@pytest.mark.parametrize("location", ["../secret.bin", "/etc/passwd", "a\0b"])
def test_external_data_anywhere_in_the_model_is_checked(tmp_path, build, location):
    folder = tmp_path / "m"
    folder.mkdir()
    path = folder / "model.onnx"
    path.write_bytes(build(location).SerializeToString())
    with pytest.raises(ModelFormatError, match="outside the model's folder"):
        check_external_data(path)


def test_the_runtime_and_the_exporter_refuse_it_before_loading(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    path = _model_with_external(folder, "../secret.bin")
    from mslseg.export.trt_ops import trt_op_problems
    from mslseg.runtime import Segmenter

    with pytest.raises(ModelFormatError, match="outside the model's folder"):
        Segmenter(path, device="cpu", warmup=False)
    with pytest.raises(ModelFormatError, match="outside the model's folder"):
        trt_op_problems(path)


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
