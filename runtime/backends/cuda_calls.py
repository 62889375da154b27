"""The few CUDA runtime calls (cuda-python) the TensorRT backend makes, and its CUDA-graph replay."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from mslseg.runtime.errors import BackendError, require

log = logging.getLogger(__name__)


def _import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            require("cuda.bindings", "gpu", "Running a TensorRT engine")
    return cudart


class Cuda:
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


class CudaGraph:
    """Copy-in, enqueue and copy-out captured once on `stream` and replayed (static shapes only).

    A capture that fails is logged once; the caller then keeps enqueueing directly.
    """

    def __init__(self, cuda: Cuda, stream: Any) -> None:
        self._cuda, self._stream = cuda, stream
        self._exec: Any = None
        self.failed = False

    @property
    def ready(self) -> bool:
        return self._exec is not None

    def capture(self, record: Callable[[], None]) -> None:
        """Capture what `record` enqueues on the stream; call with the caller's lock held.

        Thread-local capture mode: only this thread's unsafe calls (a cudaMalloc, a synchronisation)
        invalidate the capture, so other threads of the process (another backend, a decoder) may
        keep using the GPU meanwhile; this backend's own threads wait on its lock.
        """
        cuda, rt = self._cuda, self._cuda.rt
        try:
            cuda("cudaStreamBeginCapture", self._stream,
                 rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
            try:
                record()
            except BaseException:
                self._abandon()
                raise
            graph = cuda("cudaStreamEndCapture", self._stream)
            try:
                self._exec = cuda("cudaGraphInstantiate", graph, 0)
            finally:
                cuda("cudaGraphDestroy", graph)
        except BackendError as exc:
            self.failed = True
            log.info("CUDA graph capture failed (%s); replaying the enqueue instead", exc)

    def _abandon(self) -> None:
        """End a capture that `record` broke off, and drop what it holds; the error to report is record's."""
        ret = self._cuda.rt.cudaStreamEndCapture(self._stream)
        err, graph = (ret[0], ret[1]) if isinstance(ret, tuple) and len(ret) > 1 else (ret, None)
        if int(err) == 0 and graph is not None:
            self._cuda.rt.cudaGraphDestroy(graph)

    def launch(self) -> None:
        self._cuda("cudaGraphLaunch", self._exec, self._stream)

    def close(self) -> None:
        graph_exec, self._exec = self._exec, None
        if graph_exec is not None:
            self._cuda("cudaGraphExecDestroy", graph_exec)
