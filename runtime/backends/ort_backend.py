"""ONNX Runtime backend for .onnx files: TensorRT EP > CUDA EP > CPU, as available or as given.

`InferenceSession.run` is thread-safe (ONNX Runtime documents it), so this backend takes no lock:
several threads may run one session at once. CPU threads: `threads` sets the intra-op pool
(default: ONNX Runtime's choice, one per physical core). `spin=False` stops the pool threads from
spin-waiting between operators: a little slower per run, but the cores stay free for other
processes on a robot.

A GPU provider that ONNX Runtime lists but cannot load (CUDA, cuDNN or TensorRT libraries missing
or too new for the driver) makes ONNX Runtime log a warning and run on the CPU; this backend checks
`session.get_providers()` instead and raises for a requested device, warns for `device="auto"`.
The TensorRT EP gets no `trt_fp16_enable`/`trt_int8_enable`: those flags let TensorRT pick fp16/int8
for any layer, including the parts an export keeps in fp32 on purpose (normalisation, softmax,
argmax); the file's own types (fp16 casts, Q/DQ nodes) are its precision. Its optimisation profile
follows the Segmenter's batch size and run size (`ort_profile.profile_shapes`). ONNX Runtime's own
C++ log is quiet unless this module logs at DEBUG (`ort_log_severity`).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import importlib.metadata
import io
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mslseg.runtime.backends.base import check_graph_input, parse_device
from mslseg.runtime.backends.ort_profile import check_profile_options, input_dims, profile_shapes
from mslseg.runtime.errors import InputError, MissingDependencyError, ModelFormatError, ProviderLoadError, require
from mslseg.runtime.metadata import ModelMeta
from mslseg.runtime.onnx_reader import read_onnx_meta
from mslseg.runtime.sizes import Size

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
                     given: list[Any] | None = None, dims: list[int | None] | None = None, *,
                     max_batch: int | None = None, max_size: Size | str | None = None) -> list[Any]:
    """The provider list for `device` ('auto' picks the best available), or `given`, checked.

    `dims`: the graph input's shape (None where dynamic); `max_batch`, `max_size`: how the frames
    will run; all three for the TensorRT EP's profile (`profile_shapes`).
    """
    if given:
        names = provider_names(given)
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
        # no trt_fp16_enable / trt_int8_enable: the file's types are its precision (module docstring)
        **((profile_shapes(meta, dims, max_batch=max_batch, max_size=max_size) if dims else None) or {}),
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
    hint = ("pip install 'mslseg[tensorrt]' (TensorRT; with 'mslseg[gpu]')" if missing == [TRT_EP]
            else "pip install 'mslseg[gpu]' (the GPU build)")
    msg = (f"ONNX Runtime here lacks {', '.join(missing)} (available: {', '.join(available)}); "
           f"install {hint}, or use --device cpu")
    conflict = onnxruntime_conflict()
    return f"{msg}; also, {conflict}" if conflict else msg


def provider_names(providers: list[Any]) -> list[str]:
    """The names in an ONNX Runtime provider list (plain names or (name, options) pairs)."""
    return [p[0] if isinstance(p, (tuple, list)) else p for p in providers]


def check_active(requested: list[Any], active: list[str], *, strict: bool,
                 explain: Callable[[str], str] | None = None) -> None:
    """Raise (strict) or warn when a requested GPU provider is not among the session's `active` ones.

    ONNX Runtime falls back to the next provider, ending on the CPU, when one fails to load.
    `explain(name)` may say why that provider did not load ('' when it cannot tell).
    """
    missing = [n for n in provider_names(requested) if n != CPU_EP and n not in active]
    if not missing:
        return
    why = next((w for w in (explain(n) for n in missing) if w), "") if explain else ""
    msg = (f"ONNX Runtime could not load {', '.join(missing)}{f' ({why})' if why else ''} "
           f"and would run on {active[0]}: {_load_hint(missing)}")
    conflict = onnxruntime_conflict()
    msg = f"{msg}; also, {conflict}" if conflict else msg
    if strict:
        raise ProviderLoadError(msg)
    log.warning(msg)


def _load_hint(missing: list[str]) -> str:
    if CUDA_EP in missing:
        return ("its CUDA or cuDNN libraries are missing or need a newer driver (onnxruntime-gpu >= 1.27 is built "
                "for CUDA 13, driver R580+; <= 1.26 for CUDA 12); install them with pip install 'mslseg[gpu]' "
                "(or the CUDA 12 pins in the README), check nvidia-smi, or use --device cpu")
    return ("TensorRT's libraries are missing or do not match this onnxruntime-gpu (its TensorRT EP needs "
            "TensorRT 10 of the same CUDA major); install pip install 'mslseg[tensorrt]' (for a CUDA 12 "
            "onnxruntime-gpu: pip install 'tensorrt-cu12>=10,<11'), or use --device cuda")


def load_error(ort: Any, name: str) -> str:
    """Why the shared library of provider `name` does not load (the dynamic loader's message), or ''."""
    kind = {CUDA_EP: "cuda", TRT_EP: "tensorrt"}.get(name)
    libs = sorted((Path(ort.__file__).parent / "capi").glob(f"*onnxruntime_providers_{kind}.*")) if kind else []
    if not libs:
        return ""
    try:
        ctypes.CDLL(str(libs[0]))  # ONNX Runtime loads the same file; this only repeats its attempt
    except OSError as exc:
        return str(exc).replace(str(libs[0]) + ": ", "")[:200]
    return ""


def ort_log_severity(ort: Any) -> int:
    """Quiets ONNX Runtime's own C++ log, which writes to stderr past Python's logging: fatal only,
    unless this module logs at DEBUG (`mslseg infer --verbose`), then its warnings and errors.

    A provider that fails to load logs an error line and a warning line on the process-wide default
    logger before the session exists; `check_active` says the same in one line, so by default only
    that line shows. Returns the severity for the session's own logger too.
    """
    severity = 2 if log.isEnabledFor(logging.DEBUG) else 4  # 0 verbose .. 2 warning, 3 error, 4 fatal
    ort.set_default_logger_severity(severity)
    return severity


def _preload(ort: Any, providers: list[Any]) -> None:
    """Load the CUDA/cuDNN (and TensorRT) libraries from their pip wheels before the session needs them.

    What the loaders print (a library not found, on a machine without CUDA) goes to the log at
    DEBUG: the provider check reports what is missing in one line.
    """
    names = provider_names(providers)
    if not (CUDA_EP in names or TRT_EP in names):
        return
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if TRT_EP in names:
            try:  # the tensorrt wheel loads libnvinfer from tensorrt_libs when imported; the EP then finds it
                importlib.import_module("tensorrt")
            except ImportError as exc:
                log.debug("import tensorrt failed: %s", exc)  # check_active reports the EP that did not load
        if hasattr(ort, "preload_dlls"):  # onnxruntime-gpu >= 1.21
            try:
                ort.preload_dlls()
            except Exception as exc:  # a partial CUDA install: the provider check says what is missing
                log.debug("onnxruntime.preload_dlls failed: %s", exc)
    for line in [*printed.getvalue().splitlines(), *(str(w.message) for w in caught)]:
        if line.strip():
            log.debug("preload: %s", line.strip())


class OrtBackend:
    name = "onnxruntime"

    def __init__(self, path: Path, *, device: str = "auto", providers: list[Any] | None = None,
                 threads: int | None = None, cache_dir: str | Path | None = None, spin: bool = True,
                 trt_max_batch: int | None = None, trt_max_size: Size | str | None = None) -> None:
        max_batch, max_size = check_profile_options(trt_max_batch, trt_max_size)
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
        so.log_severity_level = ort_log_severity(ort)  # before the preload and the session: both may log
        dims = input_dims(path)
        chosen = choose_providers(device, ort.get_available_providers(), self.meta,
                                  Path(cache_dir) if cache_dir else default_cache_dir(path), providers, dims,
                                  max_batch=max_batch, max_size=max_size)
        _preload(ort, chosen)
        try:
            self.session = ort.InferenceSession(str(path), so, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own exception types for bad files
            raise ModelFormatError(f"cannot load {path} as an ONNX model ({str(exc)[:160]})") from None
        active = self.session.get_providers()
        try:
            check_active(chosen, active, strict=bool(providers) or device not in ("auto", None),
                         explain=lambda name: load_error(ort, name))
        except ProviderLoadError:
            self.session = None
            raise
        self._bind(path)
        self.opt_size = self._opt_size(chosen)
        if active[0] == TRT_EP and self.fixed_batch is None and self._profile(chosen):
            self.max_batch = max_batch or 1  # the profile's largest batch: more would fail in TensorRT
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

    @staticmethod
    def _profile(chosen: list[Any]) -> dict[str, Any]:
        """The TensorRT EP's options in `chosen` when they carry a profile, else {}."""
        for p in chosen:
            if isinstance(p, (tuple, list)) and p[0] == TRT_EP and "trt_profile_opt_shapes" in p[1]:
                return p[1]
        return {}

    def _opt_size(self, chosen: list[Any]) -> tuple[int, int] | None:
        """(h, w) the TensorRT EP's profile is tuned for, which the Segmenter warms up at; else None."""
        profile = self._profile(chosen)
        if not profile:
            return self.fixed_size
        dims = [int(d) for d in profile["trt_profile_opt_shapes"].split(":", 1)[1].split("x")]
        h, w = dims[2:4] if self.meta.input_kind == "float" else dims[1:3]
        return h, w

    def infer(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        check_graph_input(self, x)
        outs = self.session.run(self._outputs, {"input": x})
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def close(self) -> None:
        self.session = None  # ONNX Runtime frees the session with its last reference


def open_ort(path: Path, *, device: str = "auto", providers: list[Any] | None = None,
             threads: int | None = None, cache_dir: str | Path | None = None, spin: bool = True,
             trt_max_batch: int | None = None, trt_max_size: Size | str | None = None) -> OrtBackend:
    """`trt_max_batch`, `trt_max_size`: the TensorRT EP profile's largest batch and frame size
    (`profile_shapes`); the Segmenter passes its batch size and run size unless they are given."""
    if providers and device not in ("auto", None):
        raise InputError("pass either device or providers, not both")
    return OrtBackend(path, device=device or "auto", providers=providers, threads=threads,
                      cache_dir=cache_dir, spin=spin, trt_max_batch=trt_max_batch, trt_max_size=trt_max_size)
