"""Probe stage of scripts/gpu_check.sh: what this machine has, one line each, SKIPPED for what is absent."""
import importlib
import os
import platform
import shutil
import subprocess
import sys

import torch


def line(name: str, text: str) -> None:
    print(f"{name:14} {text}", flush=True)


def version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", "present")
    except Exception:  # noqa: BLE001 (a broken install is as good as absent here)
        return None


dry = os.environ.get("GPU_CHECK_CPU_DRY_RUN") == "1"
line("python", f"{sys.version.split()[0]} ({sys.executable}), {platform.machine()}")
line("torch", f"{torch.__version__}, CUDA build {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    line("gpu", f"{p.name}, {p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor}, {p.multi_processor_count} SMs, "
                f"bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}")
else:
    line("gpu", "none visible to torch" + (" (CPU dry run)" if dry else " -- the GPU stages will fail"))
if shutil.which("nvidia-smi"):
    r = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                       capture_output=True, text=True, timeout=20)
    line("driver", (r.stdout.strip() or r.stderr.strip()).replace("\n", "; "))
else:
    line("driver", "SKIPPED: nvidia-smi not found")
try:
    from cuda.bindings import runtime as cudart

    err, rt = cudart.cudaRuntimeGetVersion()
    err2, drv = cudart.cudaDriverGetVersion()
    line("cuda-python", f"{version('cuda.bindings')}, runtime {rt // 1000}.{rt % 1000 // 10}, "
                        f"driver API {drv // 1000}.{drv % 1000 // 10}" if int(err) == int(err2) == 0
         else f"{version('cuda.bindings')}, no CUDA driver ({err2})")
except ImportError:
    line("cuda-python", "SKIPPED: cuda-python (cuda.bindings) not installed; TrtBackend cannot run")
import onnxruntime as ort  # noqa: E402

providers = ort.get_available_providers()
line("onnxruntime", f"{ort.__version__} {providers}")
if "CUDAExecutionProvider" not in providers:
    line("ort cuda", "SKIPPED: no CUDAExecutionProvider (onnxruntime-gpu not installed)")
if "TensorrtExecutionProvider" not in providers:
    line("ort tensorrt", "SKIPPED: no TensorrtExecutionProvider")
line("onnx", version("onnx") or "absent")
trt = version("tensorrt")
line("tensorrt", trt or "SKIPPED: not installed (engines skipped; trt-standin exercises TrtBackend instead)")
line("cupy", version("cupy") or "absent")
line("mslseg", f"{version('mslseg')} from {importlib.import_module('mslseg').__file__}")

# what mslseg decides from these facts: AMP auto (bf16 only with native bf16 convolutions, sm_80+)
# and restoring RNG states saved on more GPUs than this machine has (issue 12)
from mslseg.training.device import amp_dtype, capture_rng, restore_rng  # noqa: E402

if torch.cuda.is_available():
    dev = torch.device("cuda", 0)
    cap = torch.cuda.get_device_capability(dev)
    got, want = amp_dtype(dev, "auto"), torch.bfloat16 if cap >= (8, 0) else torch.float16
    line("amp auto", f"sm_{cap[0]}{cap[1]} -> {got}" + ("" if got == want else f"  FAILED: expected {want}"))
    state = capture_rng()
    state["cuda"] = list(state["cuda"]) * (torch.cuda.device_count() + 2)
    restore_rng(state)
    restore_rng(state, own_cuda=0)
    line("rng restore", f"states of {len(state['cuda'])} GPUs restored on {torch.cuda.device_count()}: ok")
    if got != want:
        sys.exit(1)
else:
    line("amp auto", "SKIPPED: no CUDA GPU")
