"""GFLOPs per frame: counted from an ONNX graph, and by PyTorch for a checkpoint; the two agree."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from mslseg.runtime.bench import flops
from mslseg.runtime.sizes import Size
from tests.runtime import models


def _graph(path, *, nhwc: bool = False):
    """Conv 3->8 (3x3, stride 2), ConvTranspose 8->4 (2x2, stride 2), MatMul over W, Gemm: dynamic N, H, W."""
    rng = np.random.default_rng(0)

    def init(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    dims = ["n", "h", "w", 3] if nhwc else ["n", 3, "h", "w"]
    nodes = [helper.make_node("Transpose", ["x"], ["xc"], perm=[0, 3, 1, 2])] if nhwc else []
    nodes += [
        helper.make_node("Conv", ["xc" if nhwc else "x", "wc"], ["c"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1]),
        helper.make_node("ConvTranspose", ["c", "wt"], ["t"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("MatMul", ["t", "wm"], ["m"]),  # (N, 4, H, W) @ (W, 5)
        helper.make_node("ReduceMean", ["m"], ["r"], axes=[2, 3], keepdims=0),  # (N, 4)
        helper.make_node("Gemm", ["r", "wg"], ["y"], transB=1),  # (N, 4) x (6, 4)^T
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 6])],
                              [init("wc", 8, 3, 3, 3), init("wt", 8, 4, 2, 2), init("wm", 64, 5),
                               init("wg", 6, 4)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return path


def _expected(h: int, w: int) -> float:
    conv = 2 * 8 * (h // 2) * (w // 2) * 3 * 3 * 3
    convt = 2 * 8 * (h // 2) * (w // 2) * 4 * 2 * 2
    matmul = 2 * 4 * h * 5 * w
    gemm = 2 * 6 * 4
    return (conv + convt + matmul + gemm) / 1e9


@pytest.mark.parametrize("nhwc", [False, True])
def test_counts_a_hand_built_graph(tmp_path, nhwc):
    path = _graph(tmp_path / "g.onnx", nhwc=nhwc)
    assert flops.onnx_gflops(path, Size(64, 32)) == pytest.approx(_expected(32, 64))
    assert flops.frame_gflops(path, "64x48") == pytest.approx(_expected(48, 64))


def test_unresolved_shapes_come_from_onnx_runtime(tmp_path, monkeypatch):
    path = _graph(tmp_path / "g.onnx")
    original = flops._infer_shapes
    monkeypatch.setattr(flops, "_infer_shapes", lambda m: {k: v for k, v in original(m).items()
                                                           if k not in ("c", "m", "y")})
    assert flops.onnx_gflops(path, Size(64, 32)) == pytest.approx(_expected(32, 64))


def test_engine_is_not_counted(tmp_path):
    assert flops.frame_gflops(tmp_path / "m.engine", Size(64, 32)) is None


def test_onnx_and_torch_count_the_tiny_model_alike():
    size = Size(64, 48)
    from_graph = flops.frame_gflops(models.onnx_model("uint8_labels"), size)
    from_torch = flops.frame_gflops(models.checkpoint(), size)
    assert from_graph > 0.1 and from_graph == pytest.approx(from_torch, rel=0.02)
    # a static batch of 2 is counted per frame
    assert flops.frame_gflops(models.onnx_model("static_float_logits"), size) == pytest.approx(from_graph)


def test_bench_without_onnx_leaves_the_column_empty():
    """No `onnx` (an [cpu]-only install): the rows come without GFLOPs and one note says why; no error, no torch."""
    code = f"""
import sys
class NoOnnx:
    def find_spec(self, name, path=None, target=None):
        if name == "onnx" or name.startswith("onnx."):
            raise ModuleNotFoundError("No module named 'onnx'")
sys.meta_path.insert(0, NoOnnx())
from mslseg.runtime.bench.harness import bench_models
from mslseg.runtime.sizes import Size
report = bench_models([{str(models.onnx_model("float_logits"))!r}], batch_sizes=[1], sizes=[Size(48, 32)],
                      warmup=0, repeats=1, device="cpu", threads=1)
print([r.gflops for r in report.rows], report.notes, "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ("[None] ['GFLOPs not counted: counting reads the graph with the onnx package "
                                  "(pip install onnx)'] False")


@pytest.mark.slow
@pytest.mark.parametrize("arch,backbone", [("deeplabv2", "resnet18"), ("segformer-b0", "resnet101")])
def test_graph_and_torch_counts_agree(tmp_path, arch, backbone):
    """The exported graph (uint8 in, labels out) and FlopCounterMode on the checkpoint, at 256x128."""
    from mslseg.checkpoint import save_checkpoint
    from mslseg.classes import default_class_names
    from mslseg.export.onnx_export import export_onnx
    from mslseg.training.config import ModelConfig
    from mslseg.training.loop import build_model

    model, meta = build_model(ModelConfig(arch=arch, backbone=backbone, multi_level=False),
                              default_class_names(19), Size(256, 128))
    ckpt = save_checkpoint(tmp_path / "m.pt", model, meta)
    graph = export_onnx(model.eval(), meta, tmp_path / "m.onnx", input_kind="uint8", output_kind="labels",
                        slim=False)
    size = Size(256, 128)
    from_graph, from_torch = flops.frame_gflops(graph, size), flops.frame_gflops(ckpt, size)
    assert from_graph == pytest.approx(from_torch, rel=0.02)
    assert from_graph == pytest.approx(13.5 if arch == "deeplabv2" else 1.73, rel=0.05)


@pytest.mark.slow
@pytest.mark.parametrize("arch,backbone,classes,size,gflops", [
    # the figure for the paper's model: ASPP of 4 branches, single-level as exported
    ("deeplabv2", "resnet101", 19, Size(1024, 512), 749),
    # the SegFormer paper's "8.4G FLOPs" for B0 on ADE20K (150 classes) at 512x512 are multiply-adds
    ("segformer-b0", "resnet101", 150, Size(512, 512), 2 * 8.4),
])
def test_published_figures(tmp_path, arch, backbone, classes, size, gflops):
    from mslseg.checkpoint import save_checkpoint
    from mslseg.classes import default_class_names
    from mslseg.training.config import ModelConfig
    from mslseg.training.loop import build_model

    model, meta = build_model(ModelConfig(arch=arch, backbone=backbone, multi_level=False),
                              default_class_names(classes))
    ckpt = save_checkpoint(tmp_path / "m.pt", model, meta)
    assert flops.frame_gflops(ckpt, size) == pytest.approx(gflops, rel=0.01)
