"""Export stage of scripts/gpu_check.sh: ONNX fp32/fp16/int8 parity on ORT (CPU and CUDA), and
TensorRT engines with their latency and label agreement when TensorRT is present.

Each row is printed as soon as it is measured (a deadline loses only the rows not reached); a
runtime that is absent gets a SKIPPED line. The runtime column names the providers the session
actually ran on, not the ones asked for. GPU_CHECK_SIZE (WIDTHxHEIGHT, default 1024x512).
"""
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
from mslseg.checkpoint import save_checkpoint
from mslseg.export import build_engine, check_parity, export_onnx, synthetic_frames
from mslseg.models import deeplabv2
from mslseg.runtime.backends.trt_backend import create_context, read_engine_meta
from mslseg.runtime.metadata import ModelMeta, default_palette
from mslseg.runtime.sizes import Size

out = Path(os.environ["OUT"])
size = Size.parse(os.environ.get("GPU_CHECK_SIZE", "1024x512"), "GPU_CHECK_SIZE")  # WIDTHxHEIGHT
h, w = size.hw
iters = int(os.environ.get("GPU_CHECK_ITERS", "50"))
cuda = torch.cuda.is_available()
import onnxruntime as ort

providers = ort.get_available_providers()
try:
    import tensorrt as trt
except ImportError:
    trt = None
print(f"torch {torch.__version__}, CUDA GPU: {torch.cuda.get_device_name(0) if cuda else 'none'}; "
      f"onnxruntime {ort.__version__} {providers}; TensorRT {trt.__version__ if trt else 'absent'}")

torch.manual_seed(0)
C = 19
model = deeplabv2("resnet18", num_classes=C, multi_level=False)
meta = ModelMeta(num_classes=C, class_names=tuple(f"c{i}" for i in range(C)),
                 palette=default_palette(C), train_size=size)
model.train()
with torch.no_grad():  # BatchNorm statistics from image-like frames; no weight is trained
    for i in range(3):
        batch = np.stack(synthetic_frames(2, Size(w // 4, h // 4), seed=i))
        model(torch.from_numpy(meta.normalization.apply(batch)))
model.eval()
save_checkpoint(out / "export_model.pt", model, meta)  # the .pt these ONNX files come from (bench stage)
calib = synthetic_frames(16, Size(w // 2, h // 2), seed=10)
samples = synthetic_frames(2, Size(w // 2, h // 2), seed=20) + synthetic_frames(1, Size(w // 4, h // 4), seed=21)

print("\n| precision | runtime | labels agree | max confidence error | ms/frame | note |")
print("|---|---|---|---|---|---|", flush=True)


def row(p: str, rt: str, agree: float, conf: float | None, ms: float, note: str) -> None:
    conf_s = "" if conf is None else f"{conf:.2g}"
    print(f"| {p} | {rt} | {100 * agree:.2f}% | {conf_s} | {ms:.1f} | {note} |", flush=True)


def ran_on(rep) -> str:
    """'onnxruntime cuda' only when the session's first provider is CUDA's."""
    first = (rep.providers or ["?"])[0]
    return "onnxruntime " + {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu",
                             "TensorrtExecutionProvider": "tensorrt"}.get(first, first)


if "CUDAExecutionProvider" not in providers:
    print("SKIPPED onnxruntime cuda: no CUDAExecutionProvider (onnxruntime-gpu is not installed)", flush=True)
for precision in ("fp32", "fp16", "int8"):
    t0 = time.perf_counter()
    path = export_onnx(model, meta, out / f"model_{precision}.onnx", input_kind="uint8",
                       output_kind="labels", confidence=True, precision=precision,
                       calib=calib if precision == "int8" else None)
    t_export = time.perf_counter() - t0
    # write=False: report, do not gate; random weights have small logit margins, so int8 agreement
    # here understates what an adapted model reaches (the gate is meant for real models)
    rep = check_parity(path, model, samples, write=False)
    row(precision, ran_on(rep), rep.label_agreement, rep.confidence_max_abs_err,
                 rep.ort_ms_per_frame, f"gate {100 * rep.gate:.1f}% {'passed' if rep.passed else 'FAILED'}, "
                 f"export {t_export:.1f}s")
    if "CUDAExecutionProvider" in providers:
        rep = check_parity(path, model, samples, providers=["CUDAExecutionProvider"], write=False)
        fell_back = "CUDAExecutionProvider" not in rep.providers
        row(precision, ran_on(rep), rep.label_agreement, rep.confidence_max_abs_err, rep.ort_ms_per_frame,
            f"asked for CUDA, ran on {rep.providers}: FAILED" if fell_back else "first runs, untuned")

if trt is not None and cuda:
    dtypes = {trt.DataType.UINT8: torch.uint8, trt.DataType.FLOAT: torch.float32,
              trt.DataType.INT32: torch.int32, trt.DataType.HALF: torch.float16}
    bgr = np.stack(synthetic_frames(1, size, seed=30))
    frames = torch.from_numpy(bgr).cuda()
    gpu_model = model.cuda()
    with torch.no_grad():
        x = torch.from_numpy(meta.normalization.apply(bgr, "bgr")).cuda()
        ref = gpu_model(x).argmax(1)
        for _ in range(5):
            gpu_model(x)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            gpu_model(x)
        torch.cuda.synchronize()
    row("fp32", "pytorch cuda", 1.0, 0.0, 1000 * (time.perf_counter() - t0) / iters, str(size))
    major = int(trt.__version__.split(".")[0])
    # strongly typed by default (the file's types run); on TensorRT 10 one weakly typed int8 build
    # (the deprecated FP16/INT8 builder flags) beside it, for comparison
    builds = [(p, None) for p in ("fp32", "fp16", "int8")] + ([("int8", False)] if major == 10 else [])
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    for precision, strong in builds:
        onnx_path = out / f"model_{precision}.onnx"
        engine_path = out / f"model_{precision}{'_weak' if strong is False else ''}.engine"
        t0 = time.perf_counter()
        build_engine(onnx_path, engine_path, min_size=Size(w // 2, h // 2), opt_size=size, max_size=size,
                     max_batch=2, timing_cache=out / "timing.cache", strongly_typed=strong)
        t_build = time.perf_counter() - t0
        info = read_engine_meta(engine_path)[1]  # the sidecar: profile, strongly_typed
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        context = create_context(engine, info, engine_path, lambda: torch.cuda.mem_get_info()[0])
        context.set_input_shape("input", tuple(frames.shape))
        buffers = {"input": frames}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
                buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)),
                                            dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda")
        for name, buf in buffers.items():
            context.set_tensor_address(name, buf.data_ptr())
        stream = torch.cuda.current_stream().cuda_stream
        for _ in range(5):
            context.execute_async_v3(stream)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(iters):
            context.execute_async_v3(stream)
        torch.cuda.synchronize()
        ms = 1000 * (time.perf_counter() - t0) / iters
        agree = (buffers["output"].long() == ref).float().mean().item()
        kind = "strongly typed" if info.get("strongly_typed") else "weakly typed (builder flags)"
        row(precision, f"tensorrt {trt.__version__}", agree, None, ms, f"{kind}, build {t_build:.0f}s, {size}")
elif trt is not None:
    print("SKIPPED tensorrt engines: TensorRT is installed but torch sees no CUDA GPU")
else:
    print("SKIPPED tensorrt engines: TensorRT is not installed (pip install 'mslseg[tensorrt]' on a GPU machine)")
print(f"files in {out}")
