"""The machine a benchmark ran on: CPU model, SIMD flags, native bf16, package versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 (/proc/cpuinfo flags), Arm (Features)
# the CPU flags that decide which kernels ONNX Runtime and PyTorch can use
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
              "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "sve", *BF16_FLAGS)


def cpu_flags(cpuinfo: str | None = None) -> set[str] | None:
    """The first CPU's flags (x86 `flags`, Arm `Features`) from /proc/cpuinfo; None where unreadable."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return None


def native_bf16(flags: set[str] | None) -> bool:
    return bool(flags and flags.intersection(BF16_FLAGS))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.split(":")[0].strip() in ("model name", "Hardware", "Model"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(threads: int | None, flags: set[str] | None = None) -> dict[str, Any]:
    """Versions, CPU model and SIMD flags (`flags`: cpu_flags() unless given)."""
    versions = {}
    for dist in ("onnxruntime", "onnxruntime-gpu", "torch", "tensorrt", "opencv-python-headless", "av"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    flags = cpu_flags() if flags is None else flags
    return {"cpu": _cpu_model(), "arch": platform.machine(), "cores": os.cpu_count(), "threads": threads,
            "cpu_flags": None if flags is None else [f for f in SIMD_FLAGS if f in flags],
            "native_bf16": native_bf16(flags), "python": platform.python_version(), "versions": versions}


def describe_cpu(machine: dict[str, Any]) -> str:
    """One line: model, SIMD flags, native bf16, PyTorch's CPU capability where measured."""
    flags = machine.get("cpu_flags")
    line = (f"CPU: {machine.get('cpu')} ({machine.get('arch')}, {machine.get('cores')} cores); flags: "
            f"{' '.join(flags) if flags else 'unknown'}; native bf16: {'yes' if machine.get('native_bf16') else 'no'}")
    if machine.get("torch_cpu_capability"):
        line += f"; PyTorch CPU capability: {machine['torch_cpu_capability']}"
    return line
