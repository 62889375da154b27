"""Step-matrix stage of scripts/gpu_check.sh: the IW-MSL + multi-level adaptation step under
amp off / bf16 / fp16 + GradScaler, then the two AMP modes again under torch.compile. A row passes
when every loss is finite and the weights moved. Each row prints its first step (for a compiled
row: the compile) apart from the median of its later steps, as soon as it is measured, so a
deadline loses only the rows not reached.

Compiled rows (a cold inductor compile of forward + backward takes a minute or so, so only one):
  fp16 + aot_eager  dynamo + AOTAutograd under GradScaler, no codegen: the tracing, in seconds
  bf16 + inductor   what `train.compile` runs with train.amp=auto on an sm_80+ GPU (codegen, Triton)
A compiled row that cannot finish before the stage's end (GPU_CHECK_STAGE_END, epoch seconds, set
by gpu_check.sh) prints SKIPPED with the time left instead of being cut off mid-compile.

GPU: ResNet-18 DeepLab-v2 at 512x256, batch 2 + 2, 4 steps. GPU_CHECK_CPU_DRY_RUN=1: the CPU,
16x16, batch 1 + 1, 1 step (2 under a GradScaler; without native bf16 a CPU runs a bf16/fp16 convolution's backward
through slow reference kernels: seconds a step whatever the size), fp16 autocast forced on the
CPU, and the "eager" backend in place of inductor (GPU_CHECK_COMPILE_BACKEND overrides it); the
rows, the checks and the code are the same.
"""
import os
import statistics
import sys
import time

import torch

from mslseg.models import deeplabv2
from mslseg.training.config import MethodConfig, OptimConfig
from mslseg.training.device import amp_dtype
from mslseg.training.step import adapt_step, build_optimizer

dry = os.environ.get("GPU_CHECK_CPU_DRY_RUN") == "1"
device = torch.device("cpu" if dry else "cuda")
w, h = (16, 16) if dry else (512, 256)
steps = int(os.environ.get("GPU_CHECK_MATRIX_STEPS", "1" if dry else "4"))
batch = 1 if dry else 2
main_backend = os.environ.get("GPU_CHECK_COMPILE_BACKEND", "eager" if dry else "inductor")
# (amp, compile backend or None, seconds the stage must have left to start the row)
# the cold inductor compile (about a minute on a GPU host: an estimate, not yet measured there) comes last,
# so a slow one cuts nothing else
ROWS = [("off", None, 0), ("bf16", None, 0), ("fp16", None, 0), ("fp16", "aot_eager", 30),
        ("bf16", main_backend, 100 if main_backend == "inductor" else 20)]
stage_end = float(os.environ.get("GPU_CHECK_STAGE_END", "inf"))
method = MethodConfig(target_loss="iw-msl", multi_level=True, lambda_target=0.09)
gen = torch.Generator().manual_seed(0)
src = {"image": torch.randn(batch, 3, h, w, generator=gen),
       "label": torch.randint(0, 19, (batch, h, w), generator=gen)}
tgt = {"image": torch.randn(batch, 3, h, w, generator=gen)}


def _sync() -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def row(amp: str, backend: str | None) -> bool:
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
    if backend:
        torch._dynamo.reset()  # each compiled row from cold: no cache entry or recompile count of an earlier row
    net = torch.compile(model, backend=backend) if backend else model
    losses, finite, times = [], True, []
    # a GradScaler's first step is skipped when its scale (2**16 to begin) overflows fp16: give it a second
    for i in range(max(steps, 2) if scaler is not None else steps):
        _sync()
        t0 = time.perf_counter()
        s = adapt_step(net, opt, src, tgt, method, iteration=i, lr=1e-3, device=device, amp_dtype=dtype,
                       scaler=scaler, channels_last=channels_last)
        _sync()
        times.append(time.perf_counter() - t0)
        finite &= s.finite
        losses.append(s.loss_source + s.loss_source_aux + s.loss_target + s.loss_guidance)
    moved = max((p.detach().float() - b.float()).abs().max().item() for p, b in zip(model.parameters(), before, strict=True))
    weights_finite = all(torch.isfinite(p).all().item() for p in model.parameters())
    ok = finite and weights_finite and moved > 0
    scale = f" (scale {scaler.get_scale():.0f})" if scaler is not None else ""
    later = f"{1000 * statistics.median(times[1:]):.0f}" if len(times) > 1 else ""
    print(f"| {amp:4} | {str(dtype).replace('torch.', '') if dtype else 'float32':8} | {backend or 'off':9} | "
          f"{' '.join(f'{v:.3f}' for v in losses)}{scale} | {moved:.2e} | {times[0]:.1f} | {later} | "
          f"{'ok' if ok else 'FAILED'} |", flush=True)
    return ok


print(f"ResNet-18 DeepLab-v2, IW-MSL + multi-level, {w}x{h}, batch {batch}+{batch}, {steps} steps, {device}")
print("| amp | dtype | compile | total loss per step | max weight change | first step s (compile) "
      "| later steps ms (median) | verdict |")
print("|---|---|---|---|---|---|---|---|", flush=True)
failed = skipped = 0
for amp, backend, needs in ROWS:
    left = stage_end - time.time()
    if left < needs:
        skipped += 1
        print(f"| {amp} | | {backend} | | | | | SKIPPED: {left:.0f}s left in the stage, a cold {backend} compile "
              f"needs ~{needs}s |", flush=True)
        continue
    try:
        failed += not row(amp, backend)
    except Exception as exc:  # noqa: BLE001 (report the row and go on to the next)
        failed += 1
        print(f"| {amp} | | {backend or 'off'} | | | | | FAILED: {type(exc).__name__}: "
              f"{str(exc).splitlines()[0][:200] if str(exc) else ''} |", flush=True)
print(f"{len(ROWS) - failed - skipped}/{len(ROWS)} rows ok" + (f", {skipped} SKIPPED (time)" if skipped else ""))
sys.exit(1 if failed else 0)
