"""ONNX Runtime backend for .onnx files: TensorRT EP > CUDA EP > CPU, as available or as given.

`InferenceSession.run` is thread-safe (ONNX Runtime documents it), so this backend takes no lock:
several threads may run one session at once. CPU threads: `threads` sets the intra-op pool
(default: ONNX Runtime's choice, one per physical core). `spin=False` stops the pool threads from
spin-waiting between operators: a little slower per run, but the cores stay free for other
processes on a robot.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.backend import check_graph_input, parse_device
from mslseg.runtime.errors import InputError, MissingDependencyError, ModelFormatError, require
from mslseg.runtime.metadata import ModelMeta
from mslseg.runtime.onnx_meta import read_onnx_meta

log = logging.getLogger(__name__)

TRT_EP, CUDA_EP, CPU_EP = "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"
_ORT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(uint8)": np.uint8}
_WHEELS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-directml", "onnxruntime-openvino")


def onnxruntime_conflict() -> str | None:
    """A sentence when more than one ONNX Runtime wheel is installed (they overwrite each other)."""
    names = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name in _WHEELS:
            names.add(name)
    if len(names) < 2:
        return None
    keep = "onnxruntime-gpu" if "onnxruntime-gpu" in names else sorted(names)[0]
    return (
        f"several ONNX Runtime wheels are installed ({', '.join(sorted(names))}); they overwrite each "
        f"other's files, so providers go missing: run 'pip uninstall -y {' '.join(sorted(names))}' "
        f"then 'pip install {keep}' (mslseg[gpu] or mslseg[cpu], never both)"
    )


def default_cache_dir(model: Path) -> Path:
    """Where the TensorRT EP keeps engines and timing caches: one folder per model file."""
    root = Path(os.environ.get("MSLSEG_CACHE_DIR") or Path.home() / ".cache" / "mslseg")
    digest = hashlib.sha256(f"{model.resolve()}:{model.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    return root / "trt" / f"{model.stem}-{digest}"


def choose_providers(device: str, available: list[str], meta: ModelMeta, cache_dir: Path,
                     given: list[Any] | None = None) -> list[Any]:
    """The provider list for `device` ('auto' picks the best available), or `given`, checked."""
    if given:
        names = [p[0] if isinstance(p, (tuple, list)) else p for p in given]
        missing = [n for n in names if n not in available]
        if missing:
            raise MissingDependencyError(_missing_message(missing, available))
        return list(given)
    kind, index = parse_device(device)
    trt = (TRT_EP, {
        "device_id": index,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": True,
        "trt_timing_cache_path": str(cache_dir),
        "trt_fp16_enable": meta.precision == "fp16",
        "trt_int8_enable": meta.precision == "int8",  # Q/DQ nodes: explicit quantisation
    })
    cuda = (CUDA_EP, {"device_id": index})
    if kind == "tensorrt" and meta.extra.get("int8_layout") == "cpu":
        raise InputError("this int8 model was exported for CPUs (uint8 activations), which TensorRT cannot "
                         "run; export it with --int8-layout tensorrt, or use --device cuda or cpu")
    cpu_int8 = meta.extra.get("int8_layout") == "cpu"  # the TensorRT EP cannot build it: skip it
    wanted = {"cpu": [], "cuda": [cuda], "tensorrt": [trt, cuda], "auto": [cuda] if cpu_int8 else [trt, cuda]}[kind]
    if kind != "auto":
        missing = [name for name, _ in wanted if name not in available]
        if missing:
            raise MissingDependencyError(_missing_message(missing, available))
    chosen = [p for p in wanted if p[0] in available]
    if chosen and chosen[0][0] == TRT_EP:
        cache_dir.mkdir(parents=True, exist_ok=True)
    return [*chosen, CPU_EP]


def _missing_message(missing: list[str], available: list[str]) -> str:
    msg = (f"ONNX Runtime here lacks {', '.join(missing)} (available: {', '.join(available)}); "
           "install the GPU build with pip install 'mslseg[gpu]', or use --device cpu")
    conflict = onnxruntime_conflict()
    return f"{msg}; also, {conflict}" if conflict else msg


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, *, device: str = "auto", providers: list[Any] | None = None,
                 threads: int | None = None, cache_dir: str | Path | None = None, spin: bool = True) -> None:
        ort = require("onnxruntime", "cpu", "Running an .onnx model")
        conflict = onnxruntime_conflict()
        if conflict:
            log.warning(conflict)
        self.meta = read_onnx_meta(path)
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        if not spin:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        chosen = choose_providers(device, ort.get_available_providers(), self.meta,
                                  Path(cache_dir) if cache_dir else default_cache_dir(path), providers)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelFormatError(f"cannot load {path} as an ONNX model ({str(exc)[:160]})") from None
        self._bind(path)
        active = self.session.get_providers()
        index = parse_device(device)[1] if device != "auto" else 0
        self.device = {TRT_EP: f"tensorrt:{index}", CUDA_EP: f"cuda:{index}"}.get(active[0], "cpu")
        self.providers = tuple(active)

    def _bind(self, path: Path) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if "input" not in inputs or "output" not in outputs:
            raise ModelFormatError(
                f"{path} does not follow the mslseg graph contract (an input 'input' and an output "
                f"'output'; found inputs {list(inputs)}, outputs {outputs}); "
                "re-export it with 'mslseg export'"
            )
        spec = inputs["input"]
        if spec.type not in _ORT_DTYPES:
            raise ModelFormatError(f"{path}: unsupported input type {spec.type}; re-export it")
        self.input_dtype = np.dtype(_ORT_DTYPES[spec.type])
        self._outputs = ["output"] + (["confidence"] if "confidence" in outputs else [])
        if self.meta.confidence and "confidence" not in outputs:
            raise ModelFormatError(f"{path}: metadata promises a 'confidence' output the graph lacks")
        dims = [d if isinstance(d, int) and d > 0 else None for d in spec.shape]
        hw = dims[2:4] if self.meta.input_kind == "float" else dims[1:3]
        self.fixed_batch = dims[0]
        self.fixed_size = (hw[0], hw[1]) if None not in hw else None
        self.max_batch = self.fixed_batch

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        check_graph_input(self, x)
        outs = self.session.run(self._outputs, {"input": x})
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def close(self) -> None:
        self.session = None  # ONNX Runtime frees the session with its last reference


def open_ort(path: Path, *, device: str = "auto", providers: list[Any] | None = None,
             threads: int | None = None, cache_dir: str | Path | None = None, spin: bool = True,
             **_: Any) -> OrtBackend:
    if providers and device not in ("auto", None):
        raise InputError("pass either device or providers, not both")
    return OrtBackend(path, device=device or "auto", providers=providers, threads=threads,
                      cache_dir=cache_dir, spin=spin)
