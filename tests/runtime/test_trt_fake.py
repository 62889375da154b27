"""The TensorRT backend's own logic, run against small fakes of tensorrt and cuda-python.

There is no GPU here: these fakes check what the backend does with the documented API (name-based
I/O, set_input_shape, set_tensor_address, execute_async_v3, buffers sized for the profile's
largest shape, copies in and out, CUDA-graph capture and replay for static shapes), not TensorRT.
The fake engine's "network" is labels = first channel // 64, so results are checkable.
"""

from __future__ import annotations

import ctypes
import json
import types

import numpy as np
import pytest

from mslseg.runtime import Segmenter, Size
from mslseg.runtime.backends import cuda_calls
from mslseg.runtime.errors import BackendError, InputError, ModelFormatError
from tests.runtime import models


class FakeCudart:
    cudaStreamNonBlocking = 1  # noqa: N815

    class cudaMemcpyKind:  # noqa: N801 (cuda-python's names)
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaStreamCaptureMode:  # noqa: N801
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self) -> None:
        self.device: dict[int, np.ndarray] = {}
        self.host: dict[int, np.ndarray] = {}
        self.capturing: list | None = None
        self.graphs: dict[int, list] = {}
        self.launches = self.enqueues = 0
        self.next_id = 1000
        self.calls: dict[str, int] = {}
        self.fail_at: dict[str, int] = {}  # call name -> which call of it (1-based) fails
        self.live: dict[int, str] = {}  # what is allocated and not freed: pointer -> kind
        self.stream_flags: list[int] = []
        self.capture_modes: list[int] = []

    def _id(self) -> int:
        self.next_id += 8
        return self.next_id

    def _failing(self, name: str) -> bool:
        self.calls[name] = self.calls.get(name, 0) + 1
        return self.fail_at.get(name) == self.calls[name]

    def _free(self, name, ptr):
        if self._failing(name):
            return (2,)  # cudaErrorMemoryAllocation, say: a free that fails
        self.live.pop(ptr)
        return (0,)

    def cudaSetDevice(self, index):  # noqa: N802
        return (0,)

    def cudaGetDeviceProperties(self, index):  # noqa: N802
        return 0, types.SimpleNamespace(name=b"Fake GPU", major=9, minor=0)

    def cudaStreamCreateWithFlags(self, flags):  # noqa: N802
        self.stream_flags.append(flags)
        stream = self._id()
        self.live[stream] = "stream"
        return 0, stream

    def cudaMalloc(self, nbytes):  # noqa: N802
        if self._failing("cudaMalloc"):
            return 2, None
        ptr = self._id()
        self.device[ptr] = np.zeros(nbytes, np.uint8)
        self.live[ptr] = "device"
        return 0, ptr

    def cudaMallocHost(self, nbytes):  # noqa: N802
        if self._failing("cudaMallocHost"):
            return 2, None
        buf = np.zeros(nbytes, np.uint8)
        self.host[buf.ctypes.data] = buf
        self.live[buf.ctypes.data] = "host"
        return 0, buf.ctypes.data

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):  # noqa: N802
        op = ("copy", dst, src, nbytes, kind)
        self.capturing.append(op) if self.capturing is not None else self._run(op)
        return (0,)

    def _run(self, op):
        if op[0] == "exec":
            return op[1]()
        _, dst, src, nbytes, kind = op
        if kind == self.cudaMemcpyKind.cudaMemcpyHostToDevice:
            ctypes.memmove(self.device[dst].ctypes.data, src, nbytes)
        else:
            ctypes.memmove(dst, self.device[src].ctypes.data, nbytes)

    def cudaStreamSynchronize(self, stream):  # noqa: N802
        return (0,)

    def cudaMemGetInfo(self):  # noqa: N802
        return 0, 300 << 20, 1 << 30

    def cudaStreamBeginCapture(self, stream, mode):  # noqa: N802
        self.capture_modes.append(mode)
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream):  # noqa: N802
        graph = self._id()
        self.graphs[graph], self.capturing = self.capturing, None
        self.live[graph] = "captured graph"
        return 0, graph

    def cudaGraphInstantiate(self, graph, flags):  # noqa: N802
        graph_exec = self._id()
        self.graphs[graph_exec] = self.graphs[graph]
        self.live[graph_exec] = "graph"
        return 0, graph_exec

    def cudaGraphLaunch(self, graph, stream):  # noqa: N802
        self.launches += 1
        for op in self.graphs[graph]:
            self._run(op)
        return (0,)

    def cudaGraphDestroy(self, graph):  # noqa: N802
        self.live.pop(graph)
        return (0,)

    def cudaGraphExecDestroy(self, graph):  # noqa: N802
        return self._free("cudaGraphExecDestroy", graph)

    def cudaFree(self, ptr):  # noqa: N802
        return self._free("cudaFree", ptr)

    def cudaFreeHost(self, ptr):  # noqa: N802
        return self._free("cudaFreeHost", ptr)

    def cudaStreamDestroy(self, stream):  # noqa: N802
        return self._free("cudaStreamDestroy", stream)


def fake_tensorrt(cuda: FakeCudart, shape_lo, shape_hi, version="10.9.0", *, context_memory=None,
                  fail_in_capture=False):
    """`context_memory`: bytes the engine needs, which the GPU lacks (no context); `fail_in_capture`:
    execute_async_v3 fails while the stream is capturing."""
    trt = types.SimpleNamespace(__version__=version, host_code_at_deserialize=[])
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dtype: dtype

    class Context:
        def __init__(self):
            self.shape, self.addr = None, {}

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shape if name == "input" else self.shape[:3]

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr

        def execute_async_v3(self, stream):
            if fail_in_capture and cuda.capturing is not None:
                return False
            shape, addr = self.shape, dict(self.addr)  # what a captured graph freezes

            def run():
                cuda.enqueues += 1
                n = int(np.prod(shape))
                x = cuda.device[addr["input"]][:n].reshape(shape)
                out = (x[..., 0] // 64).astype(np.uint8)
                cuda.device[addr["output"]][: out.size] = out.ravel()

            op = ("exec", run)
            cuda.capturing.append(op) if cuda.capturing is not None else cuda._run(op)
            return True

    class Engine:
        num_io_tensors = 2
        device_memory_size_v2 = context_memory or 0

        def get_tensor_name(self, i):
            return ["input", "output"][i]

        def get_tensor_mode(self, name):
            return "in" if name == "input" else "out"

        def get_tensor_dtype(self, name):
            return np.uint8

        def get_tensor_shape(self, name):
            dyn = shape_lo != shape_hi
            return tuple(-1 if dyn else d for d in shape_hi)

        def get_tensor_profile_shape(self, name, profile):
            return [shape_lo, shape_lo, shape_hi]

        def create_execution_context(self):
            return None if context_memory else Context()

    class Runtime:
        def __init__(self, logger):
            self.engine_host_code_allowed = False  # TensorRT's default

        def deserialize_cuda_engine(self, data):
            trt.host_code_at_deserialize.append(self.engine_host_code_allowed)
            return None if data == b"bad" else Engine()

    trt.Runtime = Runtime
    return trt


@pytest.fixture
def engine(tmp_path, monkeypatch):
    def make(lo, hi, data=b"engine bytes", version="10.9.0", here="10.9.0", fake=None, **build):
        cuda = FakeCudart()
        trt = fake_tensorrt(cuda, lo, hi, here, **(fake or {}))
        monkeypatch.setitem(__import__("sys").modules, "tensorrt", trt)
        monkeypatch.setattr(cuda_calls, "_import_cudart", lambda: cuda)
        cuda.trt = trt
        path = tmp_path / "model.engine"
        path.write_bytes(data)
        info = {"version": version, "gpu": "NVIDIA A100", **build}
        meta = models.meta().with_(input_kind="uint8", output_kind="labels", extra={"tensorrt": info})
        (tmp_path / "model.json").write_text(json.dumps(meta.to_dict()))
        return path, cuda

    return make


def _expected(frame):
    return (frame[..., 0] // 64).astype(np.uint8)


def test_dynamic_engine_runs_frames_of_any_size_in_the_profile(engine):
    path, cuda = engine((1, 8, 8, 3), (4, 128, 128, 3))
    frames = models.frames(3, (48, 64)) + models.frames(2, (32, 40))
    with Segmenter(path, device="cuda", batch_size=8) as seg:
        assert (seg.backend_name, seg.device, seg.batch_size) == ("tensorrt", "cuda:0", 4)
        results = seg(frames)
        with pytest.raises(InputError, match="outside the engine's profile"):
            seg(np.zeros((200, 64, 3), np.uint8))
    for f, r in zip(frames, results, strict=True):
        assert np.array_equal(r.labels, _expected(f))
    assert cuda.launches == 0 and cuda.enqueues >= 2


def test_static_engine_captures_once_and_replays_a_cuda_graph(engine):
    path, cuda = engine((2, 48, 64, 3), (2, 48, 64, 3))
    frames = models.frames(5, (48, 64))
    with Segmenter(path, device="cuda") as seg:  # warm-up: one plain run, then the capture
        assert (seg.batch_size, seg.run_size) == (2, Size(64, 48))
        results = seg(frames)  # batches of 2, 2 and 1 (+1 blank)
    for f, r in zip(frames, results, strict=True):
        assert np.array_equal(r.labels, _expected(f))
    assert cuda.launches == 4  # warm-up + 3 batches, all replays of the one captured graph


def test_engine_for_another_tensorrt_is_refused_before_deserialising(engine):
    path, cuda = engine((1, 8, 8, 3), (1, 64, 64, 3), version="10.8")
    with pytest.raises(ModelFormatError, match=r"built with TensorRT 10\.8 and this machine has TensorRT 10\.9\.0.*rebuild"):
        Segmenter(path, device="cuda")


def test_engine_that_fails_to_deserialise(engine):
    path, _ = engine((1, 8, 8, 3), (1, 64, 64, 3), data=b"bad")
    with pytest.raises(ModelFormatError, match=r"version 10\.9\.0, gpu NVIDIA A100.*Fake GPU, sm_90.*rebuild"):
        Segmenter(path, device="cuda")


def test_engine_refuses_cpu(engine):
    path, _ = engine((1, 8, 8, 3), (1, 64, 64, 3))
    with pytest.raises(InputError, match="GPU only"):
        Segmenter(path, device="cpu")


def test_warm_up_inside_a_profile_that_excludes_64x64(engine):
    path, cuda = engine((1, 100, 120, 3), (2, 200, 240, 3))
    with Segmenter(path, device="cuda") as seg:
        assert cuda.enqueues == 1 and seg(np.zeros((150, 150, 3), np.uint8)).labels.shape == (150, 150)


def test_version_compatible_engine_may_run_host_code_and_later_tensorrt(engine):
    path, cuda = engine((1, 8, 8, 3), (1, 64, 64, 3), version="10.3.0", here="10.9.0", version_compatible=True)
    with Segmenter(path, device="cuda", warmup=False):
        pass
    assert cuda.trt.host_code_at_deserialize == [True]  # set before deserialize_cuda_engine
    path, cuda = engine((1, 8, 8, 3), (1, 64, 64, 3))  # a plain engine: host code stays refused
    with Segmenter(path, device="cuda", warmup=False):
        pass
    assert cuda.trt.host_code_at_deserialize == [False]


def test_version_compatible_engine_that_fails_to_load_says_what_it_needs(engine):
    path, _ = engine((1, 8, 8, 3), (1, 64, 64, 3), data=b"bad", version_compatible=True)
    with pytest.raises(ModelFormatError, match=r"version-compatible engine runs on the same or a later"):
        Segmenter(path, device="cuda")
    path, _ = engine((1, 8, 8, 3), (1, 64, 64, 3), version="10.9.0", here="10.8.0", version_compatible=True)
    with pytest.raises(ModelFormatError, match=r"runs on TensorRT 10\.9\.0 or a later 10\.x or 11\.x\) and this "
                                               r"machine has TensorRT 10\.8\.0"):
        Segmenter(path, device="cuda")


def test_stream_is_non_blocking_and_close_frees_everything(engine):
    path, cuda = engine((2, 48, 64, 3), (2, 48, 64, 3))
    with Segmenter(path, device="cuda") as seg:  # warm-up captures a graph
        seg(models.frames(2, (48, 64)))
        assert sorted(cuda.live.values()) == ["device", "device", "graph", "host", "host", "stream"]
    assert cuda.stream_flags == [FakeCudart.cudaStreamNonBlocking] and cuda.live == {}


@pytest.mark.parametrize("call", ["cudaMalloc", "cudaMallocHost"])
def test_failed_second_allocation_frees_the_first(engine, call):
    path, cuda = engine((1, 8, 8, 3), (1, 64, 64, 3))
    cuda.fail_at[call] = 2  # the output's buffer, after the input's
    with pytest.raises(BackendError, match=f"CUDA call {call} failed"):
        Segmenter(path, device="cuda")
    assert cuda.live == {}  # the input's buffers and the stream were freed


def test_a_failing_free_in_close_still_frees_the_rest(engine):
    path, cuda = engine((2, 48, 64, 3), (2, 48, 64, 3))
    seg = Segmenter(path, device="cuda")
    cuda.fail_at["cudaFree"] = 1  # the first device free of close()
    with pytest.raises(BackendError, match="cudaFree failed"):
        seg.close()
    assert list(cuda.live.values()) == ["device"]  # only the one whose free failed
    seg.close()  # closed already: nothing freed twice, no error


def test_no_execution_context_is_one_line_naming_the_memory_and_the_profile(engine):
    path, cuda = engine((1, 8, 8, 3), (2, 64, 64, 3), fake={"context_memory": 1536 << 20},
                        profile_sizes={"min": "8x8", "opt": "64x64", "max": "64x64"},
                        profile_batches={"min": 1, "opt": 1, "max": 2})
    with pytest.raises(BackendError) as err:
        Segmenter(path, device="cuda")
    assert str(err.value) == (
        f"TensorRT could not create an execution context for {path}: it needs 1536 MiB of GPU memory, "
        "300 MiB free for its profile (min 8x8 at batch 1, opt 64x64 at batch 1, max 64x64 at batch 2); "
        "free GPU memory (nvidia-smi shows who holds it), or rebuild the engine with a smaller --max size "
        "or --max-batch")
    assert cuda.live == {}  # nothing was allocated before


def test_threads_share_a_captured_graph_one_call_at_a_time(engine):
    from concurrent.futures import ThreadPoolExecutor

    path, cuda = engine((2, 48, 64, 3), (2, 48, 64, 3))
    batches = [np.stack(models.frames(2, (48, 64), seed=i)) for i in range(12)]
    from mslseg.runtime.backends.trt_backend import TrtBackend

    backend = TrtBackend(path, device="cuda")
    try:
        with ThreadPoolExecutor(4) as pool:
            got = list(pool.map(lambda b: backend.infer(b)[0], batches))
    finally:
        backend.close()
    for b, labels in zip(batches, got, strict=True):
        assert np.array_equal(labels, _expected(b))  # each call's own input, copied in under the lock
    assert cuda.capture_modes == [FakeCudart.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal]
    assert cuda.launches == 12 and cuda.live == {}


def test_a_capture_that_fails_half_way_is_dropped_and_the_enqueue_runs(engine):
    path, cuda = engine((2, 48, 64, 3), (2, 48, 64, 3), fake={"fail_in_capture": True})
    frames = models.frames(2, (48, 64))
    with Segmenter(path, device="cuda") as seg:
        results = seg(frames)
        assert "captured graph" not in cuda.live.values()  # the broken-off capture's graph was destroyed
    assert [np.array_equal(r.labels, _expected(f)) for f, r in zip(frames, results, strict=True)] == [True, True]
    assert cuda.launches == 0 and cuda.live == {}
