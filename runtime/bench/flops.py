"""GFLOPs of one frame through an ONNX graph, counted from the graph: `mslseg bench`'s GFLOPs column.

A FLOP here is half a multiply-add: the count is 2 x the multiply-adds of the ops that hold a
segmentation network's compute, at a given input size (batch 1):

- Conv (and QLinearConv, ConvInteger): 2 * N*Cout*Hout*Wout * Cin/group*kh*kw
- ConvTranspose: 2 * N*Cin*Hin*Win * Cout/group*kh*kw
- MatMul (and QLinearMatMul, MatMulInteger): 2 * batch dims * M*N*K; Gemm: 2 * M*N*K

Everything else is ignored: biases, normalisation, activations, softmax, pooling, resizing,
elementwise arithmetic, argmax. Those are memory-bound and a few percent of the total at most;
PyTorch's `torch.utils.flop_counter.FlopCounterMode` (the count of a .pt row) ignores the same,
so the two counts of one network agree. An int8 file counts the same as its fp32 source (the
same multiply-adds, in another precision).

Shapes: the graph's input is fixed to (1, H, W) (its layout, NCHW or NHWC, kept), then
`onnx.shape_inference` runs with data propagation, which resolves the Shape -> Gather -> Concat
chains that the traced graphs feed into Reshape and Resize (DeepLab's final upsampling,
SegFormer's token reshapes and decoder upsampling). Where a shape that a counted op needs is
still unknown (another exporter's graph), ONNX Runtime runs the graph once on zeros with those
tensors exposed as outputs and reads their actual shapes: exact, at the price of one inference.

`onnx` comes with the [train] extra only; without it the count is None (an empty column), never
an error.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.sizes import Size

log = logging.getLogger(__name__)

# op -> (index of the input with the data, index of the weight / second operand)
CONV_OPS = {"Conv": (0, 1), "ConvInteger": (0, 1), "QLinearConv": (0, 3)}
MATMUL_OPS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3)}
COUNTED_OPS = (*CONV_OPS, *MATMUL_OPS, "Gemm", "ConvTranspose")
_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 6: np.int32, 7: np.int64, 10: np.float16, 11: np.float64}


def onnx_gflops(path: str | Path, size: Size | str) -> float | None:
    """GFLOPs (1e9) of one frame of `size` (WIDTHxHEIGHT) through the .onnx at `path`; None without onnx.

    A graph with a static batch is counted at that batch and divided by it; a static input size
    is counted at its own size, whatever `size` says.
    """
    try:
        import onnx
    except ImportError:  # a [cpu]-only install: the column stays empty
        return None
    model = onnx.load(str(path))
    batch = _fix_input(model, Size.of(size, "size"))
    shapes = _infer_shapes(model)
    wanted = [n for node in model.graph.node if node.op_type in COUNTED_OPS for n in _needed(node)]
    missing = [n for n in dict.fromkeys(wanted) if not _known(shapes.get(n))]
    if missing:
        log.info("%s: shape inference left %d tensors unresolved; reading them from one ONNX Runtime run",
                 Path(path).name, len(missing))
        shapes.update(_run_shapes(model, missing))
    return sum(_node_flops(node, shapes) for node in model.graph.node) / batch / 1e9


def _fix_input(model: Any, size: Size) -> int:
    """Set the first graph input's dynamic dims to batch 1 and `size`; return its batch."""
    graph_inputs = {i.name for i in model.graph.initializer}
    inp = next(i for i in model.graph.input if i.name not in graph_inputs)
    dims = inp.type.tensor_type.shape.dim
    h, w = size.hw
    nhwc = len(dims) == 4 and dims[3].HasField("dim_value") and dims[3].dim_value == 3
    wanted = [1, h, w, 3] if nhwc else [1, 3, h, w]
    for d, v in zip(dims, wanted, strict=False):
        if not d.HasField("dim_value"):
            d.Clear()
            d.dim_value = v
    return dims[0].dim_value if dims and dims[0].dim_value > 0 else 1


def _infer_shapes(model: Any) -> dict[str, tuple]:
    """name -> shape (ints, or None for an unknown dim) of every tensor shape inference resolves."""
    import onnx

    del model.graph.value_info[:]  # stale symbolic shapes (a quantiser's) must not win over the fixed input
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # noqa: BLE001 - an op schema onnx does not know: fall back to ONNX Runtime
        log.info("onnx shape inference failed (%s); every counted shape comes from ONNX Runtime", exc)
        inferred = model
    g = inferred.graph
    shapes = {init.name: tuple(init.dims) for init in g.initializer}
    for vi in (*g.input, *g.value_info, *g.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                    for d in vi.type.tensor_type.shape.dim)
    return shapes


def _needed(node: Any) -> list[str]:
    """The tensors whose shapes count `node`."""
    if node.op_type in CONV_OPS:
        return [node.input[CONV_OPS[node.op_type][1]], node.output[0]]
    if node.op_type in MATMUL_OPS:
        return [node.input[MATMUL_OPS[node.op_type][0]], node.output[0]]
    if node.op_type == "ConvTranspose":
        return [node.input[0], node.input[1]]
    if node.op_type == "Gemm":
        return [node.input[0], node.output[0]]
    return []


def _known(shape: tuple | None) -> bool:
    return shape is not None and all(isinstance(d, int) and d > 0 for d in shape)


def _run_shapes(model: Any, names: list[str]) -> dict[str, tuple]:
    """The actual shapes of tensors `names`, from one ONNX Runtime run on zeros at the fixed input."""
    import onnx
    import onnxruntime as ort

    present = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in present)
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    feeds = {}
    for i in sess.get_inputs():
        vi = next(v for v in model.graph.input if v.name == i.name)
        dtype = _ONNX_DTYPES.get(vi.type.tensor_type.elem_type, np.float32)
        feeds[i.name] = np.zeros([d if isinstance(d, int) else 1 for d in i.shape], dtype)
    outs = sess.run(names, feeds)
    return {n: tuple(o.shape) for n, o in zip(names, outs, strict=True)}


def _node_flops(node: Any, shapes: dict[str, tuple]) -> int:
    op = node.op_type
    if op not in COUNTED_OPS:
        return 0
    s = [shapes.get(n) for n in _needed(node)]
    if not all(_known(x) for x in s):
        log.warning("%s %s: shapes unknown, not counted", op, node.name)
        return 0
    if op in CONV_OPS:  # weight (Cout, Cin/group, kh, kw), output (N, Cout, Hout, Wout)
        weight, out = s
        return 2 * math.prod(out) * math.prod(weight[1:])
    if op == "ConvTranspose":  # input (N, Cin, H, W), weight (Cin, Cout/group, kh, kw)
        x, weight = s
        return 2 * math.prod(x) * math.prod(weight[1:])
    if op == "Gemm":  # A (M, K) or (K, M) with transA, output (M, N)
        a, out = s
        trans_a = any(at.name == "transA" and at.i for at in node.attribute)
        return 2 * math.prod(out) * (a[0] if trans_a else a[-1])
    a, out = s  # MatMul: A (..., M, K) -> (..., M, N); K is A's last dim
    return 2 * math.prod(out) * a[-1]


def frame_gflops(path: str | Path, size: Size | str, *, factory: str | None = None) -> float | None:
    """GFLOPs of one frame of `size` through a model file: .onnx counted from the graph, .pt by
    PyTorch's FlopCounterMode (mslseg.runtime.backends.torch_backend); None for an engine or without onnx."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return onnx_gflops(path, size)
    if suffix == ".pt":
        from mslseg.runtime.backends.torch_backend import checkpoint_gflops

        return checkpoint_gflops(Path(path), Size.of(size, "size"), factory=factory)
    return None
