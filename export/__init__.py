"""mslseg.export: ONNX export (fp32, fp16, int8 Q/DQ), parity checks, TensorRT engines.

    from mslseg.export import export_onnx, check_parity, build_engine
    path = export_onnx(model, meta, "model.onnx", input_kind="uint8", output_kind="labels",
                       precision="int8", calib=["footage.mp4"])
    report = check_parity(path, model, frames)          # ParityReport; JSON beside the model
    engine = build_engine(path, "model.engine")         # TensorRT; writes model.json beside it

Names load on first use: building an engine from an .onnx needs onnx and tensorrt, not torch;
onnxruntime and tensorrt load inside the functions that use them.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "export_onnx": "onnx_export",
    "check_parity": "parity", "ParityReport": "parity", "GATES": "parity",
    "export_checkpoint": "export_job", "ExportResult": "export_job", "ExportSpec": "spec",
    "build_engine": "trt_build", "gpu_info": "trt_build",
    "check_trt_ops": "trt_ops", "trt_op_problems": "trt_ops",
    "ProfileShapes": "trt_profile", "ProfilePoint": "trt_profile", "EngineOptions": "trt_profile",
    "resolve_profile": "trt_profile",
    "write_sidecar": "trt_profile", "sidecar_path": "trt_profile", "import_tensorrt": "trt_profile",
    "load_meta": "onnx_contract", "check_contract": "onnx_contract",
    "load_frames": "calibration", "synthetic_frames": "calibration",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'mslseg.export' has no attribute {name!r}")
    return getattr(importlib.import_module(f"mslseg.export.{_WHERE[name]}"), name)


def __dir__() -> list[str]:
    return __all__
