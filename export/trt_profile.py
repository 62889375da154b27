"""What surrounds a TensorRT build and needs no TensorRT: the build options, profile, sidecar, preflight.

A profile point is a batch and a frame size, given as WIDTHxHEIGHT like every size a user types
(`Size`), and mapped onto the input's tensor layout (NCHW for float input, NHWC for uint8) only
where TensorRT is called. The engine's metadata goes in a sidecar `model.json` beside
`model.engine`: the model's ModelMeta with a `tensorrt` entry in `extra`, so
`ModelMeta.from_json` reads it as it is. The engine file holds the engine bytes only, so trtexec
and every other TensorRT tool can read it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mslseg.runtime.backends.engine_sidecar import sidecar_path
from mslseg.runtime.backends.trt_backend import version_tuple
from mslseg.runtime.errors import InputError, MissingDependencyError
from mslseg.runtime.io.atomic import atomic_write_text
from mslseg.runtime.metadata import ModelMeta
from mslseg.runtime.sizes import Size

INSTALL_HINT = ("TensorRT engines need TensorRT and an NVIDIA GPU with its driver: on the machine that "
                "will run the engine, pip install 'mslseg[gpu,tensorrt]'")
HARDWARE_LEVELS = {"none": "NONE", "ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}
DEFAULT_OPT_SIZE = Size(1024, 512)  # the profile's opt size of a model without a training size
_POINTS = ("min", "opt", "max")


@dataclass(frozen=True)
class ProfilePoint:
    """One point of an optimisation profile: `batch` frames of `size`."""

    batch: int
    size: Size

    def nhw(self) -> tuple[int, int, int]:
        """(batch, height, width): the order of tensor shapes."""
        return (self.batch, *self.size.hw)

    def __str__(self) -> str:
        return f"{self.size} at batch {self.batch}"


@dataclass(frozen=True)
class ProfileShapes:
    """One optimisation profile: its smallest, tuned-for and largest point."""

    min: ProfilePoint
    opt: ProfilePoint
    max: ProfilePoint

    def __post_init__(self) -> None:
        for a, b, names in ((self.min, self.opt, "min <= opt"), (self.opt, self.max, "opt <= max")):
            if any(x > y for x, y in zip(a.nhw(), b.nhw(), strict=True)):
                raise InputError(f"profile points must satisfy {names} in batch, width and height, got "
                                 f"min {self.min}, opt {self.opt}, max {self.max}")

    def for_layout(self, input_kind: str) -> dict[str, list[int]]:
        """Full input shapes per profile point: NCHW for float input, NHWC for uint8."""
        def full(point: ProfilePoint) -> list[int]:
            n, h, w = point.nhw()
            return [n, h, w, 3] if input_kind == "uint8" else [n, 3, h, w]
        return {name: full(getattr(self, name)) for name in _POINTS}


@dataclass(frozen=True)
class EngineOptions:
    """What a TensorRT build takes besides the ONNX file (build_engine's keywords), checked on creation.

    Sizes are WIDTHxHEIGHT (`Size` or '1024x512'), batches ints; None takes the default of
    `resolve_profile`. `timing_cache` True keeps it beside the engine, a path puts it there, False
    uses none. `strongly_typed` None or True: a strongly typed network (the ONNX file's types are
    what runs); False (TensorRT 10 only): weak typing with the FP16/INT8 builder flags, deprecated
    by NVIDIA in 10.12, under which TensorRT may run the file's fp32 layers in lower precision.
    """

    min_size: Size | str | None = None
    opt_size: Size | str | None = None
    max_size: Size | str | None = None
    min_batch: int | None = None
    opt_batch: int | None = None
    max_batch: int | None = None
    workspace_gib: float = 4.0
    timing_cache: str | Path | bool = True
    version_compatible: bool = False
    hardware_compatibility: str = "none"
    dla_core: int | None = None
    strongly_typed: bool | None = None

    def __post_init__(self) -> None:
        for point in _POINTS:
            value = getattr(self, f"{point}_size")
            if value is not None:  # normalised, so every later use sees a Size
                object.__setattr__(self, f"{point}_size", Size.of(value, f"--{point}"))
            batch = getattr(self, f"{point}_batch")
            if batch is not None and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
                raise InputError(f"--{point}-batch must be an integer >= 1, got {batch!r}")
        if not self.workspace_gib > 0:
            raise InputError(f"the TensorRT workspace must be > 0 GiB, got {self.workspace_gib}")
        if self.hardware_compatibility not in HARDWARE_LEVELS:
            raise InputError(f"unknown hardware compatibility '{self.hardware_compatibility}'; "
                             f"valid: {', '.join(HARDWARE_LEVELS)}")
        if self.dla_core is not None and self.dla_core < 0:
            raise InputError(f"--dla-core must be >= 0, got {self.dla_core}")

    def as_kwargs(self) -> dict[str, Any]:
        """The options as build_engine's keyword arguments."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def check_engine_target(options: EngineOptions, *, precision: str, int8_layout: str | None,
                        source: str = "the model") -> None:
    """InputError when the file to build cannot become the engine `options` ask for."""
    if precision == "int8" and int8_layout == "cpu":
        raise InputError(f"{source} is an int8 export for CPUs (uint8 activations), which TensorRT cannot "
                         "build; export it again with --int8-layout tensorrt")
    if options.dla_core is not None and precision == "fp32":
        raise InputError("DLA runs fp16 or int8 only; export with --precision fp16 or int8 for --dla-core")


def check_tensorrt_features(trt: Any, options: EngineOptions) -> None:
    """An error naming the version when the installed TensorRT cannot honour `options`, before any build.

    --hardware-compat same-cc needs 10.9 (HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY);
    TensorRT 11 builds strongly typed only (its FP16/INT8 builder flags are gone); strongly_typed=True
    needs NetworkDefinitionCreationFlag.STRONGLY_TYPED on a TensorRT before 11; DLA is absent
    from TensorRT 11.0 to 11.4.0 (11.4.1 brings it back on Jetson AGX Orin with JetPack 7.2.2).
    """
    version = str(trt.__version__)
    v = version_tuple(version) + (0, 0, 0)
    if options.hardware_compatibility == "same-cc" and (
            v[:2] < (10, 9) or not hasattr(getattr(trt, "HardwareCompatibilityLevel", None),
                                            "SAME_COMPUTE_CAPABILITY")):
        raise MissingDependencyError(
            f"--hardware-compat same-cc needs TensorRT 10.9 or later and this is TensorRT {version}; "
            "upgrade it (pip install -U 'tensorrt>=10.9'), or use --hardware-compat ampere+")
    if v[0] >= 11 and options.strongly_typed is False:
        raise InputError(
            f"TensorRT {version} builds strongly typed networks only (TensorRT 11 removed the FP16 and INT8 "
            "builder flags), so strongly_typed=False cannot apply; drop it (the file's types set the "
            "precision), or build with TensorRT 10")
    if (options.strongly_typed and v[0] < 11
            and not hasattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED")):
        raise MissingDependencyError(
            f"TensorRT {version} cannot build strongly typed networks (it has no "
            "NetworkDefinitionCreationFlag.STRONGLY_TYPED); upgrade it (pip install -U 'tensorrt>=10'), "
            "or drop strongly_typed=True to build with its precision flags")
    if options.dla_core is not None and v[0] == 11 and v[:3] < (11, 4, 1):
        raise InputError(
            f"TensorRT {version} cannot build for DLA (TensorRT 11.0 to 11.4.0 have no DLA; 11.4.1 has it on "
            "Jetson AGX Orin with JetPack 7.2.2 or later); build there with TensorRT 11.4.1 or later, or "
            "with the TensorRT 10 of JetPack 6, or drop --dla-core")


def resolve_profile(meta: ModelMeta, fixed: ProfilePoint | None, *, min_size: Size | str | None = None,
                    opt_size: Size | str | None = None, max_size: Size | str | None = None,
                    min_batch: int | None = None, opt_batch: int | None = None,
                    max_batch: int | None = None) -> ProfileShapes:
    """The profile to build: the given points, defaults from the training size, checked against `fixed`.

    `fixed` is the input of a static model (None when dynamic): then every given size and batch
    must be its own. Defaults: opt at the training size (else 1024x512), min at half of it (at
    least 8x8), max at opt; batches min 1, opt 1, max = opt.
    """
    given = EngineOptions(min_size=min_size, opt_size=opt_size, max_size=max_size,
                          min_batch=min_batch, opt_batch=opt_batch, max_batch=max_batch)
    if fixed is not None:
        wrong = [f"--{p} {getattr(given, f'{p}_size')}" for p in _POINTS
                 if getattr(given, f"{p}_size") not in (None, fixed.size)]
        wrong += [f"--{p}-batch {getattr(given, f'{p}_batch')}" for p in _POINTS
                  if getattr(given, f"{p}_batch") not in (None, fixed.batch)]
        if wrong:
            raise InputError(f"the model has the fixed input {fixed}; {', '.join(wrong)} cannot apply "
                             "(drop them, or export without --static)")
        return ProfileShapes(fixed, fixed, fixed)
    opt = given.opt_size or (meta.train_size or DEFAULT_OPT_SIZE)
    mn = given.min_size or Size(max(opt.width // 2, 8), max(opt.height // 2, 8))
    mx = given.max_size or opt
    ob = given.opt_batch or 1
    return ProfileShapes(ProfilePoint(given.min_batch or 1, mn), ProfilePoint(ob, opt),
                         ProfilePoint(given.max_batch or ob, mx))


def write_sidecar(engine: str | Path, meta: ModelMeta, tensorrt: dict[str, Any]) -> Path:
    """Write the engine's `model.json`: `meta` with `extra['tensorrt'] = tensorrt`; returns its path."""
    full = meta.with_(extra={**meta.extra, "tensorrt": tensorrt})
    path = sidecar_path(engine)
    atomic_write_text(path, json.dumps(full.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def tensorrt_info(*, version: str, gpu: str, compute_capability: str, profile: ProfileShapes,
                  input_kind: str, precision: str, **build: Any) -> dict[str, Any]:
    """The `tensorrt` entry of the sidecar (plain JSON types only)."""
    return {
        "version": version,
        "gpu": gpu,
        "compute_capability": compute_capability,
        "precision": precision,
        "profile": profile.for_layout(input_kind),  # tensor shapes, in the input's layout
        "profile_sizes": {p: str(getattr(profile, p).size) for p in _POINTS},  # WIDTHxHEIGHT
        "profile_batches": {p: getattr(profile, p).batch for p in _POINTS},
        **build,
    }


def import_tensorrt() -> Any:
    """The tensorrt module, or MissingDependencyError saying what to install and that a GPU is needed."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise MissingDependencyError(f"TensorRT is not installed ({exc}); {INSTALL_HINT}") from None
    major = int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)
    if major < 10:
        raise MissingDependencyError(f"TensorRT {trt.__version__} is too old: mslseg builds with "
                                     f"TensorRT 10 or 11; {INSTALL_HINT}")
    return trt


def engine_outputs(engine: str | Path) -> list[Path]:
    """The files a build writes (the timing cache is reused, not an output): the engine, its sidecar."""
    return [Path(engine), sidecar_path(engine)]
