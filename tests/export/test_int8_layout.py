"""int8 for TensorRT (symmetric int8 activations) vs int8 for x86 CPUs (uint8 activations)."""

import onnx
import pytest

from mslseg.export import build_engine, check_parity, export_onnx, load_meta
from mslseg.export.int8 import float_convs
from mslseg.runtime.backends.ort_backend import TRT_EP, choose_providers
from mslseg.runtime.errors import InputError


def _activation_zero_point_types(path):
    proto = onnx.load(str(path))
    inits = {t.name: t for t in proto.graph.initializer}
    types = set()
    for node in proto.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits:
            types.add(inits[node.input[2]].data_type)
    return types


@pytest.mark.slow
@pytest.mark.parametrize("layout, zp_type", [("tensorrt", onnx.TensorProto.INT8), ("cpu", onnx.TensorProto.UINT8)])
def test_layouts_quantise_activations_as_promised(model_meta, frames, calib_frames, tmp_path, layout, zp_type):
    model, meta = model_meta
    path = export_onnx(model, meta, tmp_path / f"{layout}.onnx", precision="int8", calib=calib_frames,
                       int8_layout=layout, slim=False)
    assert _activation_zero_point_types(path) == {zp_type}
    assert load_meta(path).extra["int8_layout"] == layout
    report = check_parity(path, model, frames, write=False)
    assert report.label_agreement >= 0.9
    # the stem and the classifier heads stay float
    kept = float_convs(tmp_path / f"{layout}.onnx")
    assert any("conv1" in n for n in kept) and any("head_main" in n for n in kept)
    if layout == "cpu":
        with pytest.raises(InputError, match="--int8-layout tensorrt"):
            build_engine(path)
        providers = choose_providers("auto", [TRT_EP, "CUDAExecutionProvider", "CPUExecutionProvider"],
                                     load_meta(path), tmp_path)
        assert TRT_EP not in [p[0] if isinstance(p, tuple) else p for p in providers]


def test_auto_layout_follows_the_target():
    from mslseg.export.int8 import choose_int8_layout

    assert choose_int8_layout("auto", tensorrt=True) == ("tensorrt", "--int8-layout auto with --trt")
    layout, why = choose_int8_layout("auto", tensorrt=False)
    assert layout == "cpu" and "without --trt" in why
    assert choose_int8_layout("tensorrt", tensorrt=False)[0] == "tensorrt"
    assert choose_int8_layout("cpu", tensorrt=False)[0] == "cpu"
    with pytest.raises(InputError, match="valid: auto, tensorrt, cpu"):
        choose_int8_layout("gpu", tensorrt=False)
