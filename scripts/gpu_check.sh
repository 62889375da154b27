#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU and no internet, in under 8 minutes.
#
# Needs torch (CUDA build), onnx, onnxruntime (or -gpu), numpy, opencv; TensorRT is optional.
# Stages (each with its own time limit; a failing stage is reported and the next one runs):
#   1. adaptation speed: IW-MSL + multi-level steps of ResNet-101 DeepLab-v2 at the paper's sizes
#      (source 1280x720, target 1024x512), fp32 vs AMP, images/s and share of the FLOP floor
#   2. adapt + resume: `mslseg adapt` on generated data on the GPU with AMP, stopped after 1 of 2
#      iterations and resumed
#   3. export: ONNX fp32/fp16/int8 with parity on ORT CPU and CUDA; TensorRT engines if present
#   4. bench: `mslseg bench` on the .pt (eager, bf16, fp16 + CUDA graphs) and the ONNX files
# Then one summary. Paste its output (with the GPU's name) into benchmarks/RESULTS.md.
#
#   bash scripts/gpu_check.sh [OUT_DIR]      (default: a temporary folder)
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=${1:-$(mktemp -d -t mslseg-gpu-check.XXXXXX)}
mkdir -p "$OUT"
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi

# mslseg.export and mslseg.runtime live in export/ and runtime/ (setuptools package-dir); when
# mslseg is not installed, lay out the package in a temporary folder instead of installing it.
if ! python -c "import mslseg.export, mslseg.runtime" 2>/dev/null; then
  SHIM=$(mktemp -d -t mslseg-shim.XXXXXX)
  mkdir -p "$SHIM/mslseg"
  for f in "$REPO"/mslseg/*; do ln -s "$f" "$SHIM/mslseg/$(basename "$f")"; done
  ln -s "$REPO/export" "$SHIM/mslseg/export"
  ln -s "$REPO/runtime" "$SHIM/mslseg/runtime"
  export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}"
fi
export OUT REPO PYTHONUNBUFFERED=1
declare -A STATUS
stage() {  # stage NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  echo; echo "=== $name (limit ${limit}s) ==="
  local t0=$SECONDS
  timeout "$limit" "$@"; local rc=$?
  STATUS[$name]="rc=$rc, $((SECONDS - t0))s"
}

python -c "import torch; print('torch', torch.__version__, '| GPU:', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true

stage speed 150 python benchmarks/train_speed.py --steps 8 --warmup 3 --json "$OUT/train_speed.json"

DATA="$OUT/synth"
stage adapt-resume 150 bash -c "
  python -m mslseg synth '$DATA' --source 16 --target-train 16 --target-val 8 --size 512x256 --no-video --overwrite &&
  python -m mslseg adapt -c synthetic --source '$DATA/gta5' --target '$DATA/cityscapes' --target-val '$DATA/cityscapes' \
     --method iw-msl --multi-level --backbone resnet101 --size 512x256 --batch 2 --iterations 2 --device cuda \
     --out '$OUT/adapt' --set train.stop_after=1 --set train.amp=auto --set train.workers=2 &&
  python -m mslseg adapt --resume '$OUT/adapt' --set train.stop_after=null &&
  python -c \"from mslseg.checkpoint import load_checkpoint; t=load_checkpoint('$OUT/adapt/last.pt')['training']; assert t['iteration']==2, t; print('resumed to iteration', t['iteration'])\"
"

stage export 200 python scripts/gpu_export_check.py

stage bench 120 bash -c "
  python -m mslseg bench '$OUT/adapt/last.pt' '$OUT'/model_fp32.onnx '$OUT'/model_fp16.onnx '$OUT'/model_int8.onnx \
     --size 1024x512 --batch 1 --repeats 10 --out '$OUT/bench.json'
"

echo; echo "=== summary ==="
for s in speed adapt-resume export bench; do echo "$s: ${STATUS[$s]:-not run}"; done
[ -f "$OUT/train_speed.json" ] && python -c "
import json; d = json.load(open('$OUT/train_speed.json'))
print(d['device']); [print(f\"  {r['amp']:5} {r['images_per_s']:.2f} img/s, floor {r['floor_pct']:.1f}%, peak mem {r['peak_mem_gib']} GiB\") for r in d['rows']]"
echo "files in $OUT"
