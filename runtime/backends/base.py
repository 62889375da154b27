"""The inference-engine Protocol and the registry that picks one by file suffix.

A backend runs the exported graph and nothing else: it takes exactly what the graph takes
(``float`` kind: (N, 3, H, W) normalised; ``uint8`` kind: (N, H, W, 3) raw frames) and returns the
graph's outputs as host arrays. Everything the graph does not do (normalising, argmax, resizing)
is the Segmenter's job, so the three backends stay small and interchangeable.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mslseg.runtime.errors import InputError, ModelFormatError
from mslseg.runtime.metadata import ModelMeta

# suffix -> "module:factory"; strings so that nothing heavy is imported until a model is opened
BACKENDS: dict[str, str] = {
    ".onnx": "mslseg.runtime.backends.ort_backend:open_ort",
    ".engine": "mslseg.runtime.backends.trt_backend:open_trt",
    ".plan": "mslseg.runtime.backends.trt_backend:open_trt",
    ".pt": "mslseg.runtime.backends.torch_backend:open_torch",
}

DEVICE_KINDS = ("auto", "cpu", "cuda", "tensorrt")
# A factory's keyword-only parameters are the options its backend takes (the one owner of that
# fact); an option it does not take is an error, never silently dropped. What each one means, for
# the error that names the backends taking it:
OPTION_HELP: dict[str, str] = {
    "device": "where the model runs",
    "providers": "an ONNX Runtime provider list",
    "threads": "CPU threads: ONNX Runtime's intra-op pool, torch.set_num_threads for a .pt",
    "cache_dir": "the engine and timing caches of ONNX Runtime's TensorRT EP",
    "confidence": "a confidence map computed in torch",
    "spin": "ONNX Runtime's spin-waiting pool threads",
    "trt_max_batch": "the TensorRT EP profile's largest batch",
    "trt_max_size": "the TensorRT EP profile's largest frame size",
    "bf16": "bf16 autocast", "channels_last": "channels-last memory format", "fp16": "fp16 weights on a GPU",
    "cuda_graphs": "CUDA graph replay", "factory": "the code that builds a user's own network",
    "adapt": "online adaptation on the frames, which needs torch's gradients (export the adapted snapshot "
             "for the torch-free fleet)",
    "adapt_from": "continuing online adaptation from a snapshot",
}


@runtime_checkable
class Backend(Protocol):
    """One loaded model on one device. `infer` may be called from several threads."""

    name: str  # "onnxruntime" | "tensorrt" | "torch"
    device: str  # where it runs, in words: "cpu", "cuda:0", "tensorrt:0"
    meta: ModelMeta  # what `infer` takes and returns (input_kind, output_kind, confidence)
    input_dtype: np.dtype  # float32, float16 or uint8
    fixed_batch: int | None  # the graph's batch size when static, else None
    fixed_size: tuple[int, int] | None  # the graph's (height, width) when static, else None
    max_batch: int | None  # the largest batch the graph accepts, None for no limit

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Graph input -> (first output, confidence output or None), both on the host."""
        ...

    def close(self) -> None: ...


def supported_suffixes() -> str:
    return ", ".join(BACKENDS)


def open_backend(path: str | Path, **options: Any) -> Backend:
    """Open `path` with the backend its suffix names; `options` go to that backend's factory.

    An option that factory does not take is an InputError naming the backends that take it.
    """
    path = Path(path)
    factory = _factory(path)
    check_backend_options(path, options)
    if not path.is_file():
        raise ModelFormatError(f"model {path} does not exist; check the path")
    return factory(path, **options)


def _factory(path: Path) -> Any:
    key = BACKENDS.get(path.suffix.lower())
    if key is None:
        raise ModelFormatError(
            f"unknown model kind '{path.name}'; supported suffixes: {supported_suffixes()} "
            "(export a checkpoint with 'mslseg export')"
        )
    module_name, factory = key.split(":")
    return getattr(importlib.import_module(module_name), factory)


def backend_options(path: str | Path) -> tuple[str, ...]:
    """Every option the backend of `path` takes: its factory's keyword-only parameters."""
    params = inspect.signature(_factory(Path(path))).parameters.values()
    return tuple(p.name for p in params if p.kind is p.KEYWORD_ONLY)


def suffixes_taking(option: str) -> tuple[str, ...]:
    """The model suffixes whose backend takes `option`, e.g. ('.onnx',) for 'spin'."""
    return tuple(s for s in BACKENDS if option in backend_options(Path("model" + s)))


def check_backend_options(path: str | Path, options: dict[str, Any]) -> None:
    """An option the backend of `path` does not take is an error naming the backends that do."""
    kind = Path(path).suffix.lower()
    valid = backend_options(path)
    for name in sorted(set(options) - set(valid)):
        takers = suffixes_taking(name)
        where = (f"applies to {', '.join(takers)} models ({OPTION_HELP.get(name, name)})" if takers
                 else "is not an option of any backend")
        raise InputError(f"{name} {where}; a {kind} model does not take it (its backend takes "
                         f"{', '.join(valid)})")


def parse_device(device: str) -> tuple[str, int]:
    """'auto' | 'cpu' | 'cuda[:N]' | 'tensorrt[:N]' -> (kind, index)."""
    kind, _, index = str(device).strip().lower().partition(":")
    if kind not in DEVICE_KINDS or (index and not index.isdigit()) or (index and kind in ("auto", "cpu")):
        raise InputError(
            f"unknown device '{device}'; valid: auto, cpu, cuda, cuda:N, tensorrt, tensorrt:N"
        )
    return kind, int(index or 0)


def check_graph_input(backend: Backend, x: np.ndarray) -> None:
    """The check at the top of every `infer`: dtype, rank, channels, static dimensions."""
    kind = backend.meta.input_kind
    channels = x.shape[1] if kind == "float" else x.shape[-1] if x.ndim == 4 else None
    if x.dtype != backend.input_dtype or x.ndim != 4 or channels != 3:
        layout = "(N, 3, H, W)" if kind == "float" else "(N, H, W, 3)"
        raise InputError(
            f"{backend.name} backend expects {layout} {backend.input_dtype} input, "
            f"got {x.shape} {x.dtype}; call the Segmenter with HxWx3 uint8 frames instead"
        )
    n, (h, w) = x.shape[0], (x.shape[2:] if kind == "float" else x.shape[1:3])
    if backend.fixed_batch is not None and n != backend.fixed_batch:
        raise InputError(f"the model was exported with a fixed batch of {backend.fixed_batch}, got {n}")
    if backend.max_batch is not None and n > backend.max_batch:
        raise InputError(f"the model accepts at most {backend.max_batch} frames per batch, got {n}")
    if backend.fixed_size is not None and (h, w) != backend.fixed_size:
        raise InputError(f"the model was exported for {backend.fixed_size} (H, W) input, got {(h, w)}")
