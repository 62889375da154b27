#!/usr/bin/env bash
# The robot install, end to end: build the wheel, install it with [cpu] into a fresh venv that has
# no torch, and run `mslseg infer` there on a model exported by the training venv.
# Run from the repository root with the training venv (torch, [train,cpu]) active.
set -euo pipefail
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

python -m pip wheel -q . --no-deps -w "$tmp/dist"
wheel=("$tmp"/dist/mslseg-*-py3-none-any.whl)

# the robot venv installs (network-bound) while the training venv exports (CPU-bound); this
# venv's pip installs into it (--python), which spares a second pip bootstrap
python -m venv --without-pip "$tmp/robot"
python -m pip --python "$tmp/robot/bin/python" install -q --no-compile "${wheel[0]}[cpu]" &
installing=$!

# a tiny random ResNet-18 DeepLab-v2 checkpoint and a short clip, from the training venv
python - "$tmp" <<'EOF'
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from mslseg.checkpoint import save_checkpoint
from mslseg.classes import default_class_names, palette_for
from mslseg.models import deeplabv2
from mslseg.runtime.metadata import ModelMeta

tmp = Path(sys.argv[1])
torch.manual_seed(0)
names = default_class_names(3)
save_checkpoint(tmp / "tiny.pt", deeplabv2("resnet18", num_classes=3).eval(),
                ModelMeta(num_classes=3, class_names=names, palette=palette_for(names)))
video = cv2.VideoWriter(str(tmp / "clip.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10, (64, 48))
rng = np.random.default_rng(0)
for _ in range(6):
    video.write(rng.integers(0, 256, (48, 64, 3), np.uint8))
video.release()
EOF
mslseg export "$tmp/tiny.pt" --input uint8 --output labels --no-slim --out "$tmp/tiny.onnx"
wait "$installing"

if "$tmp/robot/bin/python" -c "import torch" 2>/dev/null; then
    echo "runtime smoke: torch is importable in the [cpu] venv; the robot install must not need it" >&2
    exit 1
fi
"$tmp/robot/bin/mslseg" infer "$tmp/clip.mp4" --model "$tmp/tiny.onnx" --out "$tmp/out" --threads 1 \
    | tee "$tmp/infer.txt"
grep -q "^6 frames " "$tmp/infer.txt"
test -s "$tmp/out/clip_overlay.mp4"
test -s "$tmp/out/summary.json"
echo "runtime smoke: ${wheel[0]##*/}[cpu] without torch ran mslseg infer"
