"""TensorRT backend for serialized engines (.engine / .plan) and their sidecar model.json.

Written against the TensorRT 10/11 Python API (name-based I/O tensors, `set_input_shape`,
`set_tensor_address`, `execute_async_v3`) with device and pinned host buffers from cuda-python
(`cuda_calls`).
Buffers are allocated once, for the largest shape the engine's optimisation profile allows, on a
non-blocking stream (no implicit synchronisation with the legacy default stream, which also keeps
other libraries' work from breaking a capture). Every allocation registers its free on an
ExitStack, so a failure half-way through the set-up frees what was allocated, and `close()` runs
every free even when one fails. For an engine with static shapes the copy-in, the enqueue and the
copy-out are captured once into a CUDA graph and replayed (`CudaGraph`: one launch per batch
instead of one per kernel).

Thread safety: one execution context, one stream and one set of buffers, guarded by a lock, so
concurrent `infer` calls run one after another (a GPU runs them one after another anyway).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.backends.base import check_graph_input, parse_device
from mslseg.runtime.backends.cuda_calls import Cuda, CudaGraph
from mslseg.runtime.backends.engine_sidecar import parse_capability, sidecar_path
from mslseg.runtime.errors import BackendError, InputError, ModelFormatError, require
from mslseg.runtime.metadata import ModelMeta

log = logging.getLogger(__name__)


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


# Pairs of majors (built, run) across which a version-compatible engine runs, besides its own major
# (TensorRT 11.4 support matrix, "Engine Portability"); no other pair is supported.
_CROSS_MAJOR = {(8, 10), (10, 11)}


def version_tuple(text: str) -> tuple[int, ...]:
    """'10.9.0.34' -> (10, 9, 0, 34); stops at the first part that is not a number ('11.0.0rc1' -> (11, 0, 0))."""
    parts = []
    for part in text.split("."):
        digits = re.match(r"\d+", part)
        if digits is None:
            break
        parts.append(int(digits.group()))
        if digits.group() != part:
            break
    return tuple(parts)


def _version_problem(built: str, here: str, compatible: bool) -> str | None:
    if not compatible:
        if built.split(".")[:3] == here.split(".")[:3]:
            return None
        return f"it was built with TensorRT {built} and this machine has TensorRT {here}"
    b, h = version_tuple(built), version_tuple(here)
    if b and h and h[:3] >= b[:3] and (b[0] == h[0] or (b[0], h[0]) in _CROSS_MAJOR):
        return None
    later = f"{b[0]}.x" + "".join(f" or {r}.x" for a, r in sorted(_CROSS_MAJOR) if b and a == b[0])
    return (f"it was built with TensorRT {built} (version-compatible: it runs on TensorRT {built} or a later "
            f"{later}) and this machine has TensorRT {here}")


def engine_mismatch(info: dict[str, Any], *, trt_version: str, gpu: str, compute_capability: str) -> str | None:
    """Why an engine built as `info` (its sidecar) cannot run here, or None. Pure: checked before
    any deserialisation. Engines are tied to their TensorRT version (a version-compatible one runs
    on the same or a later version of its major, and a TensorRT 10 one on 11) and to their GPU's
    compute capability (unless built hardware-compatible)."""
    built = str(info.get("version") or info.get("tensorrt_version") or "")
    if built:
        problem = _version_problem(built, trt_version, bool(info.get("version_compatible")))
        if problem:
            return problem
    cc = str(info.get("compute_capability") or "")
    level = info.get("hardware_compatibility", "none")
    # "unknown" (built where neither cuda-python nor torch could tell) cannot be compared: TensorRT's
    # own check at deserialisation decides then
    built_cc, here_cc = parse_capability(cc), parse_capability(compute_capability)
    if built_cc and here_cc and level in ("none", "same-cc") and built_cc != here_cc:
        return (f"it was built for compute capability {cc} ({info.get('gpu', 'another GPU')}) and this "
                f"GPU ({gpu}) has {compute_capability}")
    if level == "ampere+" and here_cc and here_cc < (8, 0):
        return f"it was built for Ampere or newer GPUs and this GPU ({gpu}) has compute capability {compute_capability}"
    return None


def create_context(engine: Any, info: dict[str, Any], path: str | Path,
                   free_bytes: Callable[[], int] | None = None) -> Any:
    """`engine.create_execution_context()`, or one BackendError when TensorRT returns None (it does
    when the GPU lacks the memory the profile's largest shape needs), naming that need and the
    profile from the sidecar (`info`, as read_engine_meta returns it)."""
    context = engine.create_execution_context()
    if context is not None:
        return context
    # device_memory_size_v2 from 10.1 on; device_memory_size is deprecated there and gone in 11
    need = next((getattr(engine, a) for a in ("device_memory_size_v2", "device_memory_size")
                 if isinstance(getattr(engine, a, None), int)), None)
    sizes, batches = info.get("profile_sizes") or {}, info.get("profile_batches") or {}
    points = [f"{p} {sizes[p]} at batch {batches.get(p, '?')}" for p in ("min", "opt", "max") if p in sizes]
    profile = f"its profile ({', '.join(points)})" if points else "its optimisation profile"
    try:
        free = f", {free_bytes() / 2**20:.0f} MiB free" if free_bytes else ""
    except (BackendError, RuntimeError):  # the memory query is for the message only
        free = ""
    need_text = f"{need / 2**20:.0f} MiB of GPU memory" if need is not None else "more GPU memory than is free"
    raise BackendError(f"TensorRT could not create an execution context for {path}: it needs {need_text}{free} "
                       f"for {profile}; free GPU memory (nvidia-smi shows who holds it), or rebuild the engine "
                       "with a smaller --max size or --max-batch")


class TrtBackend:
    name = "tensorrt"

    def __init__(self, path: Path, *, device: str = "auto") -> None:
        trt = require("tensorrt", "tensorrt", "Running a TensorRT engine")
        self.meta, self.build_info = read_engine_meta(path)
        kind, index = parse_device(device)
        if kind == "cpu":
            raise InputError("a TensorRT engine runs on a GPU only; use the .onnx file for --device cpu")
        self.device = f"cuda:{index}"
        self._cuda = cuda = Cuda()
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
        if self.build_info.get("version_compatible"):
            # such a plan carries its own lean runtime (host code), which TensorRT runs only when
            # allowed, as trtexec --versionCompatible and Polygraphy allow it; never for other plans
            self._runtime.engine_host_code_allowed = True
        self.engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ModelFormatError(self._mismatch(path, trt.__version__))
        self.context = create_context(self.engine, self.build_info, path,
                                      lambda: int(cuda("cudaMemGetInfo")[0]))
        self._lock = threading.Lock()
        self._bind(trt, path)
        frees = contextlib.ExitStack()
        try:
            self.stream = cuda("cudaStreamCreateWithFlags", cuda.rt.cudaStreamNonBlocking)
            frees.callback(cuda, "cudaStreamDestroy", self.stream)
            self._allocate(frees)
            self._graph = CudaGraph(cuda, self.stream)
            frees.callback(self._graph.close)  # last in, so first out: before the buffers it copies
        except BaseException:
            try:
                frees.close()
            except BackendError as exc:  # the error that stopped the set-up is the one to report
                log.warning("freeing after a failed set-up also failed: %s", exc)
            raise
        self._frees = frees

    def _mismatch(self, path: Path, version: str) -> str:
        prop = self._cuda("cudaGetDeviceProperties", self._index)
        gpu = prop.name.decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
        keys = ("version", "tensorrt_version", "gpu", "gpu_name", "compute_capability")
        built = ", ".join(f"{k} {self.build_info[k]}" for k in keys if k in self.build_info)
        built = built or "unknown build"
        why = ("a version-compatible engine runs on the same or a later TensorRT and its GPU's "
               "compute capability (TensorRT's log above says more)" if self.build_info.get("version_compatible")
               else "engines are tied to one TensorRT version and GPU (one built --version-compatible "
               "elsewhere needs \"version_compatible\": true in its sidecar's extra.tensorrt)")
        return (f"TensorRT {version} cannot load {path} ({built}; this machine: {gpu}, "
                f"sm_{prop.major}{prop.minor}); {why}: rebuild it here with 'mslseg export --trt' from the .onnx")

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
        self._hw = hw = slice(2, 4) if self.meta.input_kind == "float" else slice(1, 3)
        self.fixed_batch = hi[0] if lo[0] == hi[0] else None
        self.max_batch = hi[0]
        self.fixed_size = tuple(hi[hw]) if lo[hw] == hi[hw] else None
        self.min_shape, self.max_shape = lo, hi
        self.opt_size = tuple(opt[hw])  # what the Segmenter warms up at

    def _allocate(self, frees: contextlib.ExitStack) -> None:
        """Pinned host and device buffers for the profile's largest shape; each free goes on `frees`."""
        cuda = self._cuda
        self.context.set_input_shape("input", self.max_shape)
        self._host: dict[str, np.ndarray] = {}
        self._ptrs: dict[str, tuple[Any, Any]] = {}  # name -> (device pointer, pinned host pointer)
        for name in ["input", *self._outputs]:
            full = tuple(self.context.get_tensor_shape(name))
            host, host_ptr = cuda.pinned(full, self._dtypes[name])
            frees.callback(cuda, "cudaFreeHost", host_ptr)
            dev = cuda("cudaMalloc", max(host.nbytes, 1))
            frees.callback(cuda, "cudaFree", dev)
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

    def _describe(self, shape: tuple[int, ...]) -> str:
        h, w = shape[self._hw]
        return f"{w}x{h} at batch {shape[0]}"

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        check_graph_input(self, x)
        if any(a < b or a > c for a, b, c in zip(x.shape, self.min_shape, self.max_shape, strict=True)):
            raise InputError(f"input {self._describe(x.shape)} is outside the engine's profile "
                             f"{self._describe(self.min_shape)} .. {self._describe(self.max_shape)}; pass "
                             "size='WIDTHxHEIGHT' to the Segmenter or rebuild the engine for this size")
        with self._lock:
            if self.engine is None:
                raise BackendError("the TensorRT backend is closed")
            self._cuda("cudaSetDevice", self._index)
            self.context.set_input_shape("input", x.shape)
            shapes = {n: tuple(self.context.get_tensor_shape(n)) for n in ["input", *self._outputs]}
            np.copyto(self._host["input"].reshape(-1)[: x.size].reshape(x.shape), x)
            static = self.fixed_batch is not None and self.fixed_size is not None
            if static and not self._graph.ready and not self._graph.failed:
                self._enqueue(shapes)  # one plain run first: TensorRT sets up its state outside capture
                self._cuda("cudaStreamSynchronize", self.stream)
                self._graph.capture(lambda: self._enqueue(shapes))
            if self._graph.ready:
                self._graph.launch()
            else:
                self._enqueue(shapes)
            self._cuda("cudaStreamSynchronize", self.stream)
            outs = [self._host[n].reshape(-1)[: int(np.prod(shapes[n]))].reshape(shapes[n]).copy()
                    for n in self._outputs]
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def close(self) -> None:
        """Free the graph, buffers and stream; every free runs, and a failed one is raised after."""
        with self._lock:
            if self.engine is None:
                return
            self.context = self.engine = None  # closed even if a free fails: no second free
            self._host.clear()  # views of the pinned memory about to be freed
            self._frees.close()


def open_trt(path: Path, *, device: str = "auto") -> TrtBackend:
    """An engine takes only `device`: its precision, profile and threads were fixed when it was built."""
    return TrtBackend(path, device=device or "auto")
