"""build_engine: an mslseg .onnx -> a serialized TensorRT engine plus its sidecar model.json.

Written against the documented Python API of TensorRT 10 and 11. Precision comes from the ONNX
file (fp16 weights and casts, int8 Q/DQ nodes, and the fp32 islands the export keeps on purpose:
normalisation, softmax, argmax), so the network is built strongly typed: the file's types are
what runs. TensorRT 11 networks are always strongly typed; on TensorRT 10 the network is created
with NetworkDefinitionCreationFlag.STRONGLY_TYPED. Weak typing (the FP16/INT8 builder flags, under
which TensorRT may run fp32 layers in fp16; deprecated by NVIDIA in 10.12) is used only when asked
for (`strongly_typed=False`, TensorRT 10), or, with a warning, by a TensorRT without the flag.
Explicit batch needs no flag in either (10 ignores EXPLICIT_BATCH, 11 removed it).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import onnx

from mslseg.export.onnx_contract import load_meta, load_proto
from mslseg.export.trt_ops import check_trt_ops
from mslseg.export.trt_profile import (
    HARDWARE_LEVELS,
    INSTALL_HINT,
    EngineOptions,
    ProfilePoint,
    ProfileShapes,
    check_engine_target,
    check_tensorrt_features,
    engine_outputs,
    import_tensorrt,
    resolve_profile,
    tensorrt_info,
    write_sidecar,
)
from mslseg.runtime.backends.engine_sidecar import sidecar_path
from mslseg.runtime.errors import ExportError, InputError, MissingDependencyError
from mslseg.runtime.io.atomic import atomic_write_bytes, refuse_existing
from mslseg.runtime.sizes import Size

log = logging.getLogger(__name__)


def _fixed_input(proto: onnx.ModelProto, input_kind: str) -> ProfilePoint | None:
    dims = [d.dim_value if d.HasField("dim_value") else -1
            for d in proto.graph.input[0].type.tensor_type.shape.dim]
    n, h, w = (dims[0], dims[1], dims[2]) if input_kind == "uint8" else (dims[0], dims[2], dims[3])
    return ProfilePoint(n, Size(w, h)) if min(n, h, w) > 0 else None


def gpu_info() -> tuple[str, str]:
    """(GPU name, compute capability 'major.minor') of device 0, through cuda-python or torch."""
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
            return name.rstrip("\x00"), f"{props.major}.{props.minor}"
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability(0)
            return torch.cuda.get_device_name(0), f"{major}.{minor}"
    except ImportError:
        pass
    return "unknown", "unknown"


def _network(trt: Any, onnx_path: Path, strongly_typed: bool) -> tuple[Any, Any, Any]:
    """(builder, network parsed from the file, its parser); explicit batch needs no flag in 10 or 11."""
    logger = trt.Logger(trt.Logger.WARNING)
    try:
        builder = trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:  # no GPU/driver: the factory returns nullptr
        raise MissingDependencyError(f"TensorRT could not start on this machine ({exc}); "
                                     f"{INSTALL_HINT}") from None
    flags = 0
    if strongly_typed and hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            e = parser.get_error(i)
            node = f" at node {e.node_name()} ({e.node_operator()})" if hasattr(e, "node_name") else ""
            errors.append(f"{e.desc()}{node}")
        detail = "; ".join(errors[:3]) or "no detail"
        raise ExportError(f"TensorRT's ONNX parser rejected {onnx_path}: {detail}; "
                          "re-export with 'mslseg export' (opset 17) or update TensorRT")
    return builder, network, parser


def engine_path(onnx_path: str | Path, out: str | Path | None = None) -> Path:
    """Where build_engine writes: `out`, else beside the ONNX file with .engine."""
    return Path(out) if out is not None else Path(onnx_path).with_suffix(".engine")


def check_engine_path(out: Path, overwrite: bool = True) -> None:
    """InputError when the engine cannot be written at `out` (or, without `overwrite`, would replace one)."""
    if not out.parent.is_dir():
        raise InputError(f"cannot write {out}: folder {out.parent} does not exist; create it first")
    if out.is_dir():
        raise InputError(f"{out} is a folder; give a file name such as {out / 'model.engine'}")
    for path in engine_outputs(out):
        refuse_existing(path, overwrite, option="-o")


def build_engine(onnx_path: str | Path, out: str | Path | None = None, *,
                 min_size: Size | str | None = None, opt_size: Size | str | None = None,
                 max_size: Size | str | None = None, min_batch: int | None = None,
                 opt_batch: int | None = None, max_batch: int | None = None, workspace_gib: float = 4.0,
                 timing_cache: str | Path | bool = True, version_compatible: bool = False,
                 hardware_compatibility: str = "none", dla_core: int | None = None,
                 strongly_typed: bool | None = None, overwrite: bool = True) -> Path:
    """Build `out` (default: beside the ONNX, .engine) and its sidecar .json; returns the engine path.

    The one optimisation profile of a dynamic model: sizes WIDTHxHEIGHT (`Size` or '1024x512')
    and batches, defaults as `resolve_profile` says. `timing_cache` True keeps it beside the
    engine, named for the TensorRT major (model.trt10.timing.cache), a path puts it there, False
    uses none; a cache TensorRT rejects (another version or GPU) is replaced by an empty one.
    `strongly_typed` None or True: strongly typed; False (TensorRT 10 only): the deprecated weak
    typing with FP16/INT8 builder flags, for comparison.
    `overwrite=False` refuses an existing engine or sidecar. Everything is checked before
    TensorRT is imported, and what the installed TensorRT cannot honour before it builds.
    """
    options = EngineOptions(min_size=min_size, opt_size=opt_size, max_size=max_size, min_batch=min_batch,
                            opt_batch=opt_batch, max_batch=max_batch, workspace_gib=workspace_gib,
                            timing_cache=timing_cache, version_compatible=version_compatible,
                            hardware_compatibility=hardware_compatibility, dla_core=dla_core,
                            strongly_typed=strongly_typed)
    onnx_path = Path(onnx_path)
    out = engine_path(onnx_path, out)
    check_engine_path(out, overwrite)
    proto = load_proto(onnx_path)
    meta = load_meta(proto, str(onnx_path))
    profile = resolve_profile(meta, _fixed_input(proto, meta.input_kind), min_size=options.min_size,
                              opt_size=options.opt_size, max_size=options.max_size,
                              min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch)
    check_engine_target(options, precision=meta.precision, int8_layout=meta.extra.get("int8_layout"),
                        source=str(onnx_path))
    check_trt_ops(proto)
    del proto  # TensorRT reads the file itself
    trt = import_tensorrt()
    check_tensorrt_features(trt, options)
    strongly = _strongly_typed(trt, strongly_typed)
    # the parser owns the weights the network points at: keep it alive until the build is done
    builder, network, _parser = _network(trt, onnx_path, strongly)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if not strongly:
        _set_precision_flags(trt, config, meta.precision)
    tensor = network.get_input(0)
    if -1 in tuple(tensor.shape):
        points = profile.for_layout(meta.input_kind)
        opt_profile = builder.create_optimization_profile()
        opt_profile.set_shape(tensor.name, points["min"], points["opt"], points["max"])
        config.add_optimization_profile(opt_profile)
    cache_file = _timing_cache_path(out, timing_cache, trt.__version__)
    if cache_file is not None:
        _load_timing_cache(config, cache_file)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if hardware_compatibility != "none":
        config.hardware_compatibility_level = getattr(
            trt.HardwareCompatibilityLevel, HARDWARE_LEVELS[hardware_compatibility])
    if dla_core is not None:
        _use_dla(trt, builder, config, dla_core)
    log.info("building a TensorRT %s engine from %s, profile min %s, opt %s, max %s (minutes for a large "
             "model)", trt.__version__, onnx_path, profile.min, profile.opt, profile.max)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT could not build an engine from {onnx_path}; its log above says why "
                          "(a larger --workspace or a smaller --max size or --max-batch often helps)")
    # the old sidecar goes first: a kill between the two writes below leaves an engine without a
    # sidecar (a clear error at load), never the new engine described by the old build's sidecar
    sidecar_path(out).unlink(missing_ok=True)
    atomic_write_bytes(out, memoryview(serialized).tobytes())
    if cache_file is not None:
        atomic_write_bytes(cache_file, memoryview(config.get_timing_cache().serialize()).tobytes())
    name, cc = gpu_info()
    write_sidecar(out, meta, tensorrt_info(
        version=trt.__version__, gpu=name, compute_capability=cc, profile=profile,
        input_kind=meta.input_kind, precision=meta.precision, strongly_typed=strongly,
        version_compatible=version_compatible, hardware_compatibility=hardware_compatibility,
        dla_core=dla_core, workspace_gib=workspace_gib, onnx=onnx_path.name,
    ))
    return out


def _strongly_typed(trt: Any, requested: bool | None) -> bool:
    """Whether to build strongly typed; what this TensorRT cannot honour was refused before."""
    if int(trt.__version__.split(".")[0]) >= 11 or requested is not None:
        return True if requested is None else requested
    if hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED"):
        return True
    log.warning("TensorRT %s cannot build strongly typed networks (no NetworkDefinitionCreationFlag."
                "STRONGLY_TYPED); building with its FP16/INT8 precision flags, under which it may run the "
                "model's fp32 layers in lower precision: upgrade TensorRT to build what the file says",
                trt.__version__)
    return False


def _set_precision_flags(trt: Any, config: Any, precision: str) -> None:
    # weak typing: a flag lets TensorRT pick that precision for any layer, fp32 islands included
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # Q/DQ nodes: explicit quantisation, no calibrator


def _load_timing_cache(config: Any, cache_file: Path) -> None:
    data = cache_file.read_bytes() if cache_file.is_file() else b""
    # bytes of another TensorRT version make create_timing_cache return None (set_timing_cache(None)
    # would raise TypeError); another GPU's make set_timing_cache refuse it: start empty either way
    cache = config.create_timing_cache(data)
    if cache is not None and config.set_timing_cache(cache, False):
        return
    log.warning("timing cache %s is from another TensorRT version or GPU; starting an empty one", cache_file)
    empty = config.create_timing_cache(b"")
    if empty is None or not config.set_timing_cache(empty, False):
        raise ExportError(f"TensorRT could not start an empty timing cache in place of {cache_file}; "
                          "build without one (build_engine(..., timing_cache=False))")


def _timing_cache_path(engine: Path, timing_cache: str | Path | bool, trt_version: str) -> Path | None:
    if timing_cache is False:
        return None
    if timing_cache is True:  # one per major: a rebuild after an upgrade does not meet the old one
        return engine.with_name(f"{engine.stem}.trt{trt_version.split('.')[0]}.timing.cache")
    return Path(timing_cache)


def _use_dla(trt: Any, builder: Any, config: Any, core: int) -> None:
    cores = builder.num_DLA_cores
    if not 0 <= core < cores:
        raise InputError(f"DLA core {core} does not exist here ({cores} DLA cores); "
                         "DLA exists on Jetson/DRIVE devices only")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


__all__ = ["HARDWARE_LEVELS", "ProfileShapes", "build_engine", "check_engine_path", "engine_path", "gpu_info"]
