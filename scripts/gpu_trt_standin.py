"""TensorRT stand-in stage of scripts/gpu_check.sh: TrtBackend's own CUDA code (cudaMalloc,
cudaMallocHost, cudaMemcpyAsync on its stream, CUDA-graph capture and replay for static engines,
the frees in close()) run for real on the GPU, with a stand-in for the TensorRT engine.

The stand-in `tensorrt` module follows the API the backend calls (name-based I/O tensors,
set_input_shape, set_tensor_address, execute_async_v3(stream)); its execution context runs torch
kernels on the raw device pointers it was given, on the backend's own stream:
labels = input[..., 0] >> 6 (uint8) and confidence = input[..., 1] / 255 (float32), written in place
with no allocation, so they can be captured into the backend's CUDA graph. Outputs are compared
with the same function in numpy. Real TensorRT engines are the export stage's.

GPU_CHECK_CPU_DRY_RUN=1: a host-memory stand-in for cuda-python's runtime too (plumbing only).
"""
import ctypes
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch

from mslseg.runtime.backends import trt_backend

try:  # where the backend imports cuda-python from (it moved between versions of this repo)
    from mslseg.runtime.backends import cuda_calls as cudart_home
except ImportError:
    cudart_home = trt_backend
from mslseg.runtime.metadata import ModelMeta, default_palette
from mslseg.runtime.sizes import Size

dry = os.environ.get("GPU_CHECK_CPU_DRY_RUN") == "1"
VERSION = "10.99.0-standin"
H, W = (32, 64) if dry else (512, 1024)


def expected(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x[..., 0] >> 6, x[..., 1].astype(np.float32) / np.float32(255)


class HostCudart:
    """Dry run only: cuda-python's runtime calls on host memory; a 'graph' is a list of ops."""

    class cudaMemcpyKind:  # noqa: N801 (cuda-python's names)
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaStreamCaptureMode:  # noqa: N801
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self) -> None:
        self.buffers: dict[int, np.ndarray] = {}
        self.capturing: list | None = None
        self.graphs: dict[int, list] = {}

    def _alloc(self, nbytes):
        buf = np.zeros(nbytes, np.uint8)
        self.buffers[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    cudaMalloc = cudaMallocHost = _alloc  # noqa: N815

    def _free(self, ptr):
        self.buffers.pop(int(ptr), None)
        return (0,)

    cudaFree = cudaFreeHost = _free  # noqa: N815

    def cudaSetDevice(self, index):  # noqa: N802
        return (0,)

    def cudaGetDeviceProperties(self, index):  # noqa: N802
        return 0, types.SimpleNamespace(name=b"host stand-in", major=0, minor=0)

    cudaStreamNonBlocking = 1  # noqa: N815

    def cudaStreamCreate(self, *flags):  # noqa: N802
        return 0, 1

    cudaStreamCreateWithFlags = cudaStreamCreate  # noqa: N815

    def __getattr__(self, name):  # other calls without an effect on host memory (events, ...): succeed
        if name.startswith("cuda"):
            return lambda *args: (0, 0)
        raise AttributeError(name)

    cudaStreamDestroy = cudaStreamSynchronize = cudaGraphDestroy = cudaGraphExecDestroy = cudaSetDevice  # noqa: N815

    def launch(self, fn):
        self.capturing.append(fn) if self.capturing is not None else fn()

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        self.launch(lambda: ctypes.memmove(int(dst), int(src), nbytes))
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream):  # noqa: N802
        self.graphs[id(self.capturing)], self.capturing = self.capturing, None
        return 0, max(self.graphs)

    def cudaGraphInstantiate(self, graph, flags):  # noqa: N802
        return 0, graph

    def cudaGraphLaunch(self, graph, stream):  # noqa: N802
        for fn in self.graphs[graph]:
            fn()
        return (0,)


class _CudaArray:
    def __init__(self, ptr: int, shape: tuple[int, ...], typestr: str) -> None:
        self.__cuda_array_interface__ = {"shape": shape, "typestr": typestr, "data": (ptr, False),
                                         "version": 3, "strides": None}


def raw_tensor(ptr: int, shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """A torch tensor over memory that torch did not allocate (no copy)."""
    if dry:
        n = int(np.prod(shape)) * dtype.itemsize
        return torch.frombuffer((ctypes.c_uint8 * n).from_address(ptr), dtype=torch.uint8).view(
            torch.float32 if dtype == np.float32 else torch.uint8).reshape(shape)
    return torch.as_tensor(_CudaArray(ptr, shape, dtype.str), device="cuda")


def standin_tensorrt(launch, lo: tuple[int, ...], hi: tuple[int, ...]) -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = VERSION
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: dtype
    names = ["input", "output", "confidence"]
    dtypes = {"input": np.dtype(np.uint8), "output": np.dtype(np.uint8), "confidence": np.dtype(np.float32)}
    stats = trt.stats = {"executes": 0}

    class Context:
        def __init__(self):
            self.shape, self.addr, self.views = None, {}, {}

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shape if name == "input" else self.shape[:3]

        def set_tensor_address(self, name, ptr):
            self.addr[name] = int(ptr)

        def _views(self):  # cached per shape: none are made while the stream is being captured
            key = (self.shape, tuple(sorted(self.addr.items())))
            if key not in self.views:
                self.views[key] = tuple(raw_tensor(self.addr[n], self.get_tensor_shape(n), dtypes[n]) for n in names)
            return self.views[key]

        def execute_async_v3(self, stream):
            x, labels, conf = self._views()

            def run():
                stats["executes"] += 1
                torch.bitwise_right_shift(x[..., 0], 6, out=labels)
                torch.div(x[..., 1], 255.0, out=conf)

            launch(stream, run)
            return True

    class Engine:
        num_io_tensors = 3

        def get_tensor_name(self, i):
            return names[i]

        def get_tensor_mode(self, name):
            return "in" if name == "input" else "out"

        def get_tensor_dtype(self, name):
            return dtypes[name].type

        def get_tensor_shape(self, name):
            return tuple(-1 if lo != hi else d for d in hi) if name == "input" else (-1, -1, -1)

        def get_tensor_profile_shape(self, name, profile):
            return [lo, lo, hi]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            return Engine()

    trt.Runtime = Runtime
    return trt


class CountingCudart:
    """cuda-python's runtime, passed through, counting the calls that show what the backend did."""

    COUNTED = ("cudaMalloc", "cudaMallocHost", "cudaMemcpyAsync", "cudaStreamBeginCapture", "cudaGraphLaunch",
               "cudaFree", "cudaFreeHost", "cudaStreamDestroy", "cudaGraphExecDestroy")

    def __init__(self, rt) -> None:
        self._rt, self.calls = rt, dict.fromkeys(self.COUNTED, 0)

    def __getattr__(self, name):
        attr = getattr(self._rt, name)
        if name not in self.COUNTED:
            return attr

        def call(*args):
            self.calls[name] += 1
            return attr(*args)

        return call


def cuda_launch(stream, fn):
    with torch.cuda.stream(torch.cuda.ExternalStream(int(stream))):
        fn()


if dry:
    host = HostCudart()
    rt = CountingCudart(host)
    launch = lambda stream, fn: host.launch(fn)  # noqa: E731
    device_name = "host stand-in (CPU dry run)"
else:
    try:
        rt = CountingCudart(cudart_home._import_cudart())
    except Exception as exc:  # noqa: BLE001
        print(f"SKIPPED: cuda-python is not installed ({exc})")
        sys.exit(0)
    if not torch.cuda.is_available():
        print("FAILED: torch sees no CUDA GPU")
        sys.exit(1)
    torch.cuda.init()
    launch, device_name = cuda_launch, torch.cuda.get_device_name(0)

cudart_home._import_cudart = lambda: rt
folder = Path(tempfile.mkdtemp(prefix="mslseg-trt-standin-"))
meta = ModelMeta(num_classes=4, class_names=("a", "b", "c", "d"), palette=default_palette(4),
                 train_size=Size(W, H)).with_(input_kind="uint8", output_kind="labels", confidence=True,
                                               extra={"tensorrt": {"version": VERSION}})
rng = np.random.default_rng(0)
print(f"TrtBackend with a stand-in engine on {device_name}")
print("| engine | input (N, H, W, 3) | frames | labels equal | confidence max err | CUDA graph | ms/infer | verdict |")
print("|---|---|---|---|---|---|---|---|", flush=True)
failed = 0
cases = {"dynamic": ((1, 16, 16, 3), (2, H, W, 3), [(2, H, W, 3), (1, H // 2, W // 2, 3), (2, 24, 40, 3)]),
         "static": ((1, H, W, 3), (1, H, W, 3), [(1, H, W, 3)] * 5)}
for kind, (lo, hi, shapes) in cases.items():
    trt = standin_tensorrt(launch, lo, hi)
    sys.modules["tensorrt"] = trt
    path = folder / f"{kind}.engine"
    path.write_bytes(b"stand-in")
    path.with_suffix(".json").write_text(json.dumps(meta.to_dict()))
    free0 = torch.cuda.mem_get_info()[0] if not dry else 0
    rt.calls = dict.fromkeys(rt.COUNTED, 0)
    backend = trt_backend.TrtBackend(path, device="cuda")
    taken = (free0 - torch.cuda.mem_get_info()[0]) / 2**20 if not dry else 0
    ok, times, worst_conf = True, [], 0.0
    for shape in shapes:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        t0 = time.perf_counter()
        labels, conf = backend.infer(x)
        times.append(1000 * (time.perf_counter() - t0))
        want_labels, want_conf = expected(x)
        ok &= labels.shape == want_labels.shape and bool(np.array_equal(labels, want_labels))
        worst_conf = max(worst_conf, float(np.abs(conf - want_conf).max()))
    graph = rt.calls["cudaGraphLaunch"] > 0
    ok &= worst_conf < 1e-6 and graph == (kind == "static") and trt.stats["executes"] >= 1
    backend.close()
    backend.close()  # idempotent
    c = rt.calls
    freed = c["cudaFree"] == c["cudaMalloc"] and c["cudaFreeHost"] == c["cudaMallocHost"] and c["cudaStreamDestroy"] == 1
    ok &= freed
    failed += not ok
    print(f"| {kind} ({trt.stats['executes']} engine runs, {c['cudaGraphLaunch']} graph launches, "
          f"{c['cudaMemcpyAsync']} copies enqueued, {c['cudaMalloc']} cudaMalloc = {taken:.0f} MiB, "
          f"{'all freed' if freed else 'NOT all freed'}) | "
          f"{', '.join(str(s) for s in sorted(set(shapes)))} | {len(shapes)} | {'yes' if ok else 'NO'} | "
          f"{worst_conf:.1e} | {'captured, replayed' if graph else 'no'} | {np.median(times):.2f} | "
          f"{'ok' if ok else 'FAILED'} |", flush=True)
sys.exit(1 if failed else 0)
