"""Adaptation-step throughput: fp32 vs AMP, and the share of the FLOP floor reached.

    python benchmarks/train_speed.py                       # GPU: ResNet-101 at the paper's sizes
    python benchmarks/train_speed.py --device cpu --backbone resnet18 --source-size 128x64 --target-size 128x64

One step = the full IW-MSL + multi-level step (source CE + aux CE, target IW-MSL + guidance, SGD),
on random tensors of the paper's sizes (source 1280x720, target 1024x512, batch 1 + 1), so the
data pipeline is out of the measurement. FLOPs of one step are counted with
torch.utils.flop_counter; the floor is FLOPs / the measured matmul peak of the same dtype, and
"floor %" = floor time / measured step time. Prints a table and writes JSON (--json).

Modes (--amp): strict-fp32 (TF32 off for cuDNN convolutions and matmuls: true fp32), off (no
autocast, TF32 allowed: torch's default for cuDNN convolutions, and this script's for matmuls, so
on an Ampere or newer GPU this row is TF32, and is labelled so), bf16, fp16 (+ GradScaler), auto
(what train.amp=auto picks). Each row records `tf32` (whether TF32 could run) and a `label`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def _wh(text: str) -> tuple[int, int]:
    w, h = (int(v) for v in text.lower().split("x"))
    return w, h


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 8192, repeats: int = 10) -> float:
    """Measured dense matmul FLOP/s for `dtype` on `device`."""
    if device.type == "cpu":
        n = 512  # a CPU reaches its peak at this size already
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - t)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def has_tf32(device: torch.device) -> bool:
    """Whether `device` has TF32 tensor cores (an NVIDIA GPU of compute capability 8.0 or newer)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def set_tf32(device: torch.device, allow: bool) -> bool:
    """Allow or forbid TF32 in cuDNN convolutions and matmuls; whether TF32 runs."""
    torch.backends.cudnn.allow_tf32 = allow
    torch.backends.cuda.matmul.allow_tf32 = allow
    return allow and has_tf32(device)


def label(dtype: torch.dtype | None, tf32: bool, device: torch.device) -> str:
    if dtype is not None:
        return f"{str(dtype).replace('torch.', '')} autocast"
    if not has_tf32(device):
        return "fp32"
    return "fp32 (TF32 conv+matmul)" if tf32 else "fp32 (TF32 off)"


def measure(args: argparse.Namespace, amp: str, device: torch.device) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from mslseg.models import deeplabv2
    from mslseg.training.config import MethodConfig, OptimConfig
    from mslseg.training.device import amp_dtype
    from mslseg.training.step import adapt_step, build_optimizer

    torch.manual_seed(0)
    if device.type == "cuda":  # each row reports its own peak, not the largest of all rows so far
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = deeplabv2(args.backbone, num_classes=19, multi_level=True).to(device).train()
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, OptimConfig())
    tf32 = set_tf32(device, amp != "strict-fp32")  # also the fp32 left outside autocast in AMP rows
    dtype = amp_dtype(device, "off" if amp == "strict-fp32" else amp)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    method = MethodConfig(target_loss="iw-msl", multi_level=True, lambda_target=0.09)
    (sw, sh), (tw, th) = _wh(args.source_size), _wh(args.target_size)
    src = {"image": torch.randn(args.batch, 3, sh, sw), "label": torch.randint(0, 19, (args.batch, sh, sw))}
    tgt = {"image": torch.randn(args.batch, 3, th, tw)}
    if device.type == "cuda":
        src = {k: v.pin_memory() for k, v in src.items()}
        tgt = {k: v.pin_memory() for k, v in tgt.items()}

    def step(i: int) -> None:
        adapt_step(model, opt, src, tgt, method, iteration=i, lr=1e-4, device=device, amp_dtype=dtype,
                   scaler=scaler, channels_last=channels_last)

    for i in range(args.warmup):
        step(i)
    counter = FlopCounterMode(display=False)
    with counter:
        step(0)
    flops = counter.get_total_flops()
    times = []
    for i in range(args.steps):
        _sync(device)
        t = time.perf_counter()
        step(i)
        _sync(device)
        times.append(time.perf_counter() - t)
    sec = statistics.median(times)
    peak_mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    peak = matmul_peak(device, dtype or torch.float32)
    images = 2 * args.batch
    return {"amp": amp, "dtype": str(dtype or torch.float32).replace("torch.", ""),
            "tf32": tf32, "label": label(dtype, tf32, device),
            "step_s": sec, "images_per_s": images / sec, "tflop_per_step": flops / 1e12,
            "matmul_peak_tflops": peak / 1e12, "floor_pct": 100 * (flops / peak) / sec,
            "peak_mem_gib": peak_mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--backbone", default="resnet101")
    ap.add_argument("--source-size", default="1280x720")
    ap.add_argument("--target-size", default="1024x512")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--amp", nargs="+", default=None, choices=("strict-fp32", "off", "bf16", "fp16", "auto"),
                    help="modes to compare (default on a GPU: strict-fp32, off, auto; on the CPU: off, bf16)")
    ap.add_argument("--json", default=None, help="write the rows here (rewritten after each row)")
    ap.add_argument("--goal", type=float, default=2.0, help="speed-up of the last mode over the first to report as met")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    modes = args.amp or (["strict-fp32", "off", "auto"] if device.type == "cuda" else ["off", "bf16"])
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{args.backbone} DeepLab-v2, source {args.source_size} + target {args.target_size}, "
          f"batch {args.batch}+{args.batch}, {name}")
    print(f"{'amp':11} {'precision':23} {'step ms':>8} {'img/s':>7} {'TFLOP/step':>10} {'peak TFLOP/s':>12} "
          f"{'floor %':>8} {'peak GiB':>8}", flush=True)
    rows = []
    for mode in modes:  # each row printed (and the JSON rewritten) as soon as it is measured
        r = measure(args, mode, device)
        rows.append(r)
        mem = "" if r["peak_mem_gib"] is None else f"{r['peak_mem_gib']:.2f}"
        print(f"{r['amp']:11} {r['label']:23} {1000 * r['step_s']:8.1f} {r['images_per_s']:7.2f} "
              f"{r['tflop_per_step']:10.3f} {r['matmul_peak_tflops']:12.1f} {r['floor_pct']:8.1f} {mem:>8}", flush=True)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"device": name, "args": vars(args), "rows": rows}, f, indent=2)
    for i, base in enumerate(rows[:-1]):  # the last mode against each earlier one; the goal against the first
        ratio = rows[-1]["images_per_s"] / base["images_per_s"]
        goal = f" (goal >= {args.goal:g}x: {'met' if ratio >= args.goal else 'NOT met'})" if args.goal and i == 0 else ""
        print(f"speed-up {rows[-1]['amp']} ({rows[-1]['label']}) vs {base['amp']} ({base['label']}): {ratio:.2f}x{goal}")

if __name__ == "__main__":
    main()
