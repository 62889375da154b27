"""Step-matrix stage of scripts/gpu_check.sh: the IW-MSL + multi-level adaptation step under
amp off / bf16 / fp16 + GradScaler, each with torch.compile off and on. A row passes when every
loss is finite and the weights moved. Rows without compile run first (compiling takes longest),
and each row is printed as soon as it is measured, so a deadline loses only the rows not reached.

GPU: ResNet-18 DeepLab-v2 at 512x256, batch 2 + 2, inductor. GPU_CHECK_CPU_DRY_RUN=1: the CPU, 16x16,
fp16 autocast on the CPU and torch.compile with the "eager" backend (plumbing only).
"""
import os
import sys
import time

import torch

from mslseg.models import deeplabv2
from mslseg.training.config import MethodConfig, OptimConfig
from mslseg.training.runtime_env import amp_dtype
from mslseg.training.step import adapt_step, build_optimizer

dry = os.environ.get("GPU_CHECK_CPU_DRY_RUN") == "1"
device = torch.device("cpu" if dry else "cuda")
w, h = (16, 16) if dry else (512, 256)
steps = int(os.environ.get("GPU_CHECK_MATRIX_STEPS", "2" if dry else "4"))
backend = os.environ.get("GPU_CHECK_COMPILE_BACKEND", "eager" if dry else "inductor")
method = MethodConfig(target_loss="iw-msl", multi_level=True, lambda_target=0.09)
gen = torch.Generator().manual_seed(0)
src = {"image": torch.randn(2, 3, h, w, generator=gen), "label": torch.randint(0, 19, (2, h, w), generator=gen)}
tgt = {"image": torch.randn(2, 3, h, w, generator=gen)}


def row(amp: str, compiled: bool) -> bool:
    torch.manual_seed(0)
    model = deeplabv2("resnet18", num_classes=19, multi_level=True).to(device).train()
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, OptimConfig(lr=1e-3))
    if dry and amp == "fp16":  # amp_dtype refuses fp16 on the CPU (rightly); the dry run forces it
        dtype = torch.float16
    else:
        dtype = amp_dtype(device, amp)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    before = [p.detach().clone() for p in model.parameters()]
    net = torch.compile(model, backend=backend) if compiled else model
    t0 = time.perf_counter()
    losses, finite = [], True
    for i in range(steps):
        s = adapt_step(net, opt, src, tgt, method, iteration=i, lr=1e-3, device=device, amp_dtype=dtype,
                       scaler=scaler, channels_last=channels_last)
        finite &= s.finite
        losses.append(s.loss_source + s.loss_source_aux + s.loss_target + s.loss_guidance)
    if device.type == "cuda":
        torch.cuda.synchronize()
    sec = time.perf_counter() - t0
    moved = max((p.detach().float() - b.float()).abs().max().item() for p, b in zip(model.parameters(), before, strict=True))
    weights_finite = all(torch.isfinite(p).all().item() for p in model.parameters())
    ok = finite and weights_finite and moved > 0
    scale = f", scale {scaler.get_scale():.0f}" if scaler is not None else ""
    print(f"| {amp:4} | {str(dtype).replace('torch.', '') if dtype else 'float32':8} | "
          f"{('on (' + backend + ')') if compiled else 'off':15} | {' '.join(f'{v:.3f}' for v in losses)} | "
          f"{moved:.2e} | {sec:.1f}s{scale} | {'ok' if ok else 'FAILED'} |", flush=True)
    return ok


print(f"ResNet-18 DeepLab-v2, IW-MSL + multi-level, {w}x{h}, batch 2+2, {steps} steps, {device}")
print("| amp | dtype | compile | total loss per step | max weight change | time | verdict |")
print("|---|---|---|---|---|---|---|", flush=True)
failed = 0
for compiled in (False, True):
    for amp in ("off", "bf16", "fp16"):
        try:
            failed += not row(amp, compiled)
        except Exception as exc:  # noqa: BLE001 (report the row and go on to the next)
            failed += 1
            print(f"| {amp} | | {'on' if compiled else 'off'} | | | | FAILED: {type(exc).__name__}: "
                  f"{str(exc).splitlines()[0][:200] if str(exc) else ''} |", flush=True)
print(f"{6 - failed}/6 rows ok")
sys.exit(1 if failed else 0)
