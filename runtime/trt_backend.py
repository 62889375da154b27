"""TensorRT backend for serialized engines (.engine / .plan) and their sidecar model.json.

Written against the TensorRT 10/11 Python API (name-based I/O tensors, `set_input_shape`,
`set_tensor_address`, `execute_async_v3`) with device and pinned host buffers from cuda-python.
Buffers are allocated once, for the largest shape the engine's optimisation profile allows. For
an engine with static shapes the copy-in, the enqueue and the copy-out are captured once into a
CUDA graph and replayed (one launch per batch instead of one per kernel).

Thread safety: one execution context, one stream and one set of buffers, guarded by a lock, so
concurrent `infer` calls run one after another (a GPU runs them one after another anyway).
"""

from __future__ import annotations

import ctypes
import json
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.backend import check_graph_input, parse_device
from mslseg.runtime.errors import BackendError, InputError, ModelFormatError, require
from mslseg.runtime.metadata import ModelMeta

log = logging.getLogger(__name__)


def sidecar_path(engine: Path) -> Path:
    return engine.with_suffix(".json")


def read_engine_meta(engine: str | Path) -> tuple[ModelMeta, dict[str, Any]]:
    """(ModelMeta, build info) from the sidecar JSON beside an engine.

    `mslseg export --trt` writes the ModelMeta dict with the build under extra["tensorrt"]
    (version, gpu, compute_capability, profile). Also read: the meta under a "meta" key, and
    other top-level keys, which count as build info.
    """
    path = sidecar_path(Path(engine))
    if not path.is_file():
        raise ModelFormatError(
            f"engine {engine} has no sidecar {path.name} beside it (written with the engine by "
            "'mslseg export --trt'); copy it along with the engine, or rebuild the engine"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{path} is not valid JSON ({exc}); re-export the engine") from None
    if not isinstance(data, dict):
        raise ModelFormatError(f"{path} is not a JSON object; re-export the engine")
    fields = set(ModelMeta.__dataclass_fields__)
    if isinstance(data.get("meta"), dict):
        meta_dict, info = data["meta"], {k: v for k, v in data.items() if k != "meta"}
    else:
        meta_dict = {k: v for k, v in data.items() if k in fields}
        info = {k: v for k, v in data.items() if k not in fields}
    meta = ModelMeta.from_dict(meta_dict, str(path))
    trt_info = meta.extra.get("tensorrt")
    return meta, {**info, **(trt_info if isinstance(trt_info, dict) else {})}


def engine_mismatch(info: dict[str, Any], *, trt_version: str, gpu: str, compute_capability: str) -> str | None:
    """Why an engine built as `info` (its sidecar) cannot run here, or None. Pure: checked before
    any deserialisation. Engines are tied to their TensorRT version (a version-compatible one to
    its major version) and to their GPU's compute capability (unless built hardware-compatible)."""
    built = str(info.get("version") or info.get("tensorrt_version") or "")
    if built:
        same = built.split(".")[:1 if info.get("version_compatible") else 3] == \
            trt_version.split(".")[:1 if info.get("version_compatible") else 3]
        if not same:
            return f"it was built with TensorRT {built} and this machine has TensorRT {trt_version}"
    cc = str(info.get("compute_capability") or "")
    level = info.get("hardware_compatibility", "none")

    def number(text: str) -> float:
        return float(text.replace("sm_", "").replace("sm", "")) if text else 0.0

    if cc and level in ("none", "same-cc") and number(cc) != number(compute_capability):
        return (f"it was built for compute capability {cc} ({info.get('gpu', 'another GPU')}) and this "
                f"GPU ({gpu}) has {compute_capability}")
    if level == "ampere+" and number(compute_capability) < 8.0:
        return f"it was built for Ampere or newer GPUs and this GPU ({gpu}) has compute capability {compute_capability}"
    return None


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            require("cuda.bindings", "gpu", "Running a TensorRT engine")
    return cudart


class _Cuda:
    """The few CUDA runtime calls this backend needs, with errors turned into BackendError."""

    def __init__(self) -> None:
        self.rt = _import_cudart()

    def __call__(self, name: str, *args: Any) -> Any:
        ret = getattr(self.rt, name)(*args)
        err, rest = (ret[0], ret[1:]) if isinstance(ret, tuple) else (ret, ())
        if int(err) != 0:
            raise BackendError(f"CUDA call {name} failed ({err}); "
                               "check the driver and the GPU with nvidia-smi")
        return rest[0] if len(rest) == 1 else rest

    def pinned(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, Any]:
        nbytes = max(int(np.prod(shape)) * dtype.itemsize, 1)
        ptr = self("cudaMallocHost", nbytes)
        raw = (ctypes.c_byte * nbytes).from_address(int(ptr))
        return np.frombuffer(raw, dtype=dtype, count=int(np.prod(shape))).reshape(shape), ptr


class TrtBackend:
    name = "tensorrt"

    def __init__(self, path: Path, *, device: str = "auto") -> None:
        trt = require("tensorrt", "gpu", "Running a TensorRT engine")
        self.meta, self.build_info = read_engine_meta(path)
        kind, index = parse_device(device)
        if kind == "cpu":
            raise InputError("a TensorRT engine runs on a GPU only; use the .onnx file for --device cpu")
        self.device = f"cuda:{index}"
        self._cuda = cuda = _Cuda()
        self._index = index
        cuda("cudaSetDevice", index)
        prop = cuda("cudaGetDeviceProperties", index)
        gpu = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        problem = engine_mismatch(self.build_info, trt_version=trt.__version__, gpu=gpu,
                                  compute_capability=f"{prop.major}.{prop.minor}")
        if problem:
            raise ModelFormatError(f"{path} cannot run here: {problem}; rebuild the engine on this machine "
                                   "with 'mslseg export MODEL.onnx --trt'")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelFormatError(self._mismatch(path, trt.__version__))
        self.context = self.engine.create_execution_context()
        self._lock = threading.Lock()
        self._graph_exec: Any = None
        self._graph_failed = False
        self._bind(trt, path)
        self.stream = cuda("cudaStreamCreate")

    def _mismatch(self, path: Path, version: str) -> str:
        prop = self._cuda("cudaGetDeviceProperties", self._index)
        gpu = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        keys = ("version", "tensorrt_version", "gpu", "gpu_name", "compute_capability")
        built = ", ".join(f"{k} {self.build_info[k]}" for k in keys if k in self.build_info)
        built = built or "unknown build"
        return (f"TensorRT {version} cannot load {path} ({built}; this machine: {gpu}, "
                f"sm_{prop.major}{prop.minor}); engines are tied to one TensorRT version and GPU: "
                "rebuild it here with 'mslseg export --trt' from the .onnx")

    def _bind(self, trt: Any, path: Path) -> None:
        engine = self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if "input" not in names or "output" not in outputs:
            raise ModelFormatError(f"{path} lacks the tensors 'input' and 'output' of the mslseg contract "
                                   f"(found {names}); rebuild it with 'mslseg export --trt'")
        self._outputs = ["output"] + (["confidence"] if "confidence" in outputs else [])
        self._dtypes = {n: np.dtype(trt.nptype(engine.get_tensor_dtype(n)))
                        for n in ["input", *self._outputs]}
        self.input_dtype = self._dtypes["input"]
        shape = tuple(engine.get_tensor_shape("input"))
        if -1 in shape:
            lo, opt, hi = (tuple(s) for s in engine.get_tensor_profile_shape("input", 0))
        else:
            lo = opt = hi = shape
        hw = slice(2, 4) if self.meta.input_kind == "float" else slice(1, 3)
        self.fixed_batch = hi[0] if lo[0] == hi[0] else None
        self.max_batch = hi[0]
        self.fixed_size = tuple(hi[hw]) if lo[hw] == hi[hw] else None
        self.min_shape, self.max_shape = lo, hi
        self.opt_size = tuple(opt[hw])  # what the Segmenter warms up at
        self.context.set_input_shape("input", hi)
        self._host: dict[str, np.ndarray] = {}
        self._ptrs: dict[str, tuple[Any, Any]] = {}  # name -> (device pointer, pinned host pointer)
        for name in ["input", *self._outputs]:
            full = tuple(self.context.get_tensor_shape(name))
            dtype = self._dtypes[name]
            host, host_ptr = self._cuda.pinned(full, dtype)
            dev = self._cuda("cudaMalloc", max(host.nbytes, 1))
            self._host[name], self._ptrs[name] = host, (dev, host_ptr)
            self.context.set_tensor_address(name, int(dev))

    def _enqueue(self, shapes: dict[str, tuple[int, ...]]) -> None:
        cuda, rt = self._cuda, self._cuda.rt
        h2d, d2h = rt.cudaMemcpyKind.cudaMemcpyHostToDevice, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        size = int(np.prod(shapes["input"])) * self.input_dtype.itemsize
        cuda("cudaMemcpyAsync", self._ptrs["input"][0], self._ptrs["input"][1], size, h2d, self.stream)
        if not self.context.execute_async_v3(int(self.stream)):
            raise BackendError("TensorRT execution failed; run with -v for TensorRT's log")
        for name in self._outputs:
            size = int(np.prod(shapes[name])) * self._dtypes[name].itemsize
            cuda("cudaMemcpyAsync", self._ptrs[name][1], self._ptrs[name][0], size, d2h, self.stream)

    def _capture(self, shapes: dict[str, tuple[int, ...]]) -> None:
        """Record copy-in, enqueue and copy-out as a CUDA graph (static shapes only)."""
        cuda, rt = self._cuda, self._cuda.rt
        try:
            cuda("cudaStreamBeginCapture", self.stream,
                 rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
            try:
                self._enqueue(shapes)
            finally:
                graph = cuda("cudaStreamEndCapture", self.stream)
            self._graph_exec = cuda("cudaGraphInstantiate", graph, 0)
            cuda("cudaGraphDestroy", graph)
        except BackendError as exc:
            self._graph_failed = True
            log.info("CUDA graph capture failed (%s); replaying the enqueue instead", exc)

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        check_graph_input(self, x)
        if any(a < b or a > c for a, b, c in zip(x.shape, self.min_shape, self.max_shape, strict=True)):
            raise InputError(f"input {x.shape} is outside the engine's profile "
                             f"{self.min_shape}..{self.max_shape}; pass size=(H, W) to the Segmenter "
                             "or rebuild the engine for this size")
        with self._lock:
            if self.engine is None:
                raise BackendError("the TensorRT backend is closed")
            self._cuda("cudaSetDevice", self._index)
            self.context.set_input_shape("input", x.shape)
            shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in ["input", *self._outputs]}
            np.copyto(self._host["input"].reshape(-1)[: x.size].reshape(x.shape), x)
            static = self.fixed_batch is not None and self.fixed_size is not None
            if static and self._graph_exec is None and not self._graph_failed:
                self._enqueue(shapes)  # one plain run first: TensorRT sets up its state outside capture
                self._cuda("cudaStreamSynchronize", self.stream)
                self._capture(shapes)
            if self._graph_exec is not None:
                self._cuda("cudaGraphLaunch", self._graph_exec, self.stream)
            else:
                self._enqueue(shapes)
            self._cuda("cudaStreamSynchronize", self.stream)
            outs = [self._host[n].reshape(-1)[: int(np.prod(shapes[n]))].reshape(shapes[n]).copy()
                    for n in self._outputs]
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def close(self) -> None:
        with self._lock:
            if self.engine is None:
                return
            cuda = self._cuda
            if self._graph_exec is not None:
                cuda("cudaGraphExecDestroy", self._graph_exec)
            for dev, host in self._ptrs.values():
                cuda("cudaFree", dev)
                cuda("cudaFreeHost", host)
            cuda("cudaStreamDestroy", self.stream)
            self.context = self.engine = None
            self._host.clear()


def open_trt(path: Path, *, device: str = "auto", providers: Any = None, **_: Any) -> TrtBackend:
    if providers:
        raise InputError("providers apply to .onnx models only; pass device for an engine")
    return TrtBackend(path, device=device or "auto")
