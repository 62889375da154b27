"""Torch-runtime stage of scripts/gpu_check.sh: the .pt backend with fp16 weights + CUDA graphs
against eager fp32, on several different frames of one shape (one capture, many replays: a stale
static buffer would show) and a second shape (a second capture), then the first shape again.
Gate: labels equal on >= 99.5% of the pixels. Rows print as they are measured.

The model is ResNet-18 DeepLab-v2 with random weights and BatchNorm statistics taken from
image-like frames (so eval-mode activations stay in range); its logit margins are smaller than a
trained model's, so the agreement here is a lower bound. GPU_CHECK_CPU_DRY_RUN=1: channels_last on
the CPU instead (fp16 weights and CUDA graphs need a GPU; bf16 autocast, without native bf16, takes
seconds a frame), tiny sizes, the same frames, plan and gate.
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from mslseg.checkpoint import save_checkpoint
from mslseg.export import synthetic_frames
from mslseg.models import deeplabv2
from mslseg.runtime.backends.base import open_backend
from mslseg.runtime.metadata import ModelMeta, default_palette
from mslseg.runtime.sizes import Size

GATE = 0.995
dry = os.environ.get("GPU_CHECK_CPU_DRY_RUN") == "1"
out = Path(os.environ.get("OUT", "."))
sizes = [Size(64, 32), Size(48, 32)] if dry else [Size(1024, 512), Size(512, 256)]
n_frames = 2 if dry else 6
C = 19

torch.manual_seed(0)
model = deeplabv2("resnet18", num_classes=C, multi_level=False)
meta = ModelMeta(num_classes=C, class_names=tuple(f"c{i}" for i in range(C)), palette=default_palette(C),
                 train_size=sizes[0])
model.train()
with torch.no_grad():  # BatchNorm statistics from image-like frames; no weight is trained
    for i in range(3):
        model(torch.from_numpy(meta.normalization.apply(np.stack(synthetic_frames(2, Size(128, 64), seed=i)))))
model.eval()
path = save_checkpoint(out / "runtime_model.pt", model, meta)

device = "cpu" if dry else "cuda"
fast_opts = {"channels_last": True} if dry else {"fp16": True, "cuda_graphs": True}
fast_name = "channels_last fp32 (CPU dry run)" if dry else "fp16 weights + CUDA graphs"
ref = open_backend(path, device=device)
fast = open_backend(path, device=device, **fast_opts)
print(f"{fast_name} vs eager fp32, {device}; gate {100 * GATE:.1f}% of pixels per frame")
print("| shape (WxH) | frame | labels agree | classes seen | eager ms | fast ms |")
print("|---|---|---|---|---|---|", flush=True)


def timed(backend, x: np.ndarray) -> tuple[np.ndarray, float]:
    t0 = time.perf_counter()
    labels, _ = backend.infer(x)
    return labels, 1000 * (time.perf_counter() - t0)


worst, outputs = 1.0, []
plan = [(sizes[0], i) for i in range(n_frames)] + [(sizes[1], i) for i in range(2)] + [(sizes[0], n_frames)]
for size, i in plan:
    x = meta.normalization.apply(np.stack(synthetic_frames(1, size, seed=100 + i)))
    want, ms_ref = timed(ref, x)
    got, ms_fast = timed(fast, x)
    agree = float((want == got).mean())
    worst = min(worst, agree)
    outputs.append(got)
    print(f"| {size} | {i} | {100 * agree:.3f}% | {len(np.unique(want))} | {ms_ref:.1f} | {ms_fast:.1f} |", flush=True)
# frames differ, so replays that returned a stale capture would repeat one output
distinct = len({o.tobytes() for o in outputs})
print(f"{distinct} distinct label maps from {len(outputs)} frames")
ok = worst >= GATE and distinct > 1
print(f"worst frame {100 * worst:.3f}% {'>=' if worst >= GATE else '<'} {100 * GATE:.1f}%: {'ok' if ok else 'FAILED'}")
ref.close()
fast.close()
sys.exit(0 if ok else 1)
