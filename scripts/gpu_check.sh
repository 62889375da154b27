#!/usr/bin/env bash
# One prepared check for a machine with an NVIDIA GPU and no network, in under 8 minutes in all.
#
#   bash scripts/gpu_check.sh [OUT_DIR]                  (default OUT_DIR: a temporary folder)
#   bash scripts/gpu_check.sh [OUT_DIR] --cpu-dry-run    (or GPU_CHECK_CPU_DRY_RUN=1): every stage
#        on the CPU at tiny sizes, to prove the plumbing on a machine without a GPU
#
# Needs python3 with torch, onnx, onnxruntime, numpy, opencv-python-headless, typer, rich, pyyaml;
# TensorRT, onnxruntime-gpu, cuda-python and CuPy are optional (what is absent is reported as a
# SKIPPED line). mslseg need not be installed: the package is laid out from this checkout in a
# temporary folder, and python runs with PYTHONSAFEPATH=1 from OUT_DIR, so the repository's own
# mslseg/ (which lacks export/ and runtime/) never shadows it.
#
# Stages (a failing stage is reported and the next one runs; one global deadline, default 440 s:
# each stage gets min(its own limit, the time left), and a stage that cannot start any more says
# SKIPPED (deadline)). The script exits 1 unless every stage is ok (FAILED, TIMED OUT or SKIPPED
# all fail it), so a wrapper can trust its exit code:
#   probe         GPU, driver, CUDA, torch, ONNX Runtime providers, TensorRT, cuda-python, CuPy
#   adapt-resume  `mslseg adapt` (IW-MSL + multi-level, ResNet-18, 512x256, AMP) stopped after 1 of
#                 2 iterations, then resumed to 2
#   speed         images/s of the adaptation step, ResNet-101 at 1024x512: fp32 with TF32 off, fp32
#                 with TF32 (torch's cuDNN default), AMP auto (goal: AMP >= 2x true fp32)
#   torch-runtime the .pt backend with fp16 weights + CUDA graphs on several frames and two shapes,
#                 labels vs eager fp32 (gate 99.5% of pixels)
#   trt-standin   TrtBackend's real cudaMalloc / cudaMemcpyAsync / stream / CUDA-graph code against a
#                 stand-in engine (torch kernels on the raw device pointers) when TensorRT is absent
#   export        ONNX fp32/fp16/int8 parity on ORT CPU, ORT CUDA and TensorRT engines where installed
#   bench         `mslseg bench --device cuda` on the export stage's .pt and ONNX files: rows whose
#                 runtime is missing (a CPU-only ONNX Runtime) say SKIPPED, the .pt rows run
#   step-matrix   amp off / bf16 / fp16 + GradScaler, then bf16 + inductor and fp16 + aot_eager
#                 compiled: finite losses, weights move; last, as its cold compile is the least
#                 predictable (it gets what is left, up to 180 s, and skips a compile it cannot finish)
# The dry run takes the GPU run's path wherever a CPU can: the same commands and flags at tiny sizes;
# the bench stage runs the GPU run's `--device cuda` command (every row must say SKIPPED) and then
# the same files on the CPU. Every row is printed as it is measured. Paste the output into
# benchmarks/RESULTS.md.
set -uo pipefail
START=$SECONDS
REPO=$(cd "$(dirname "$0")/.." && pwd)
DRY=${GPU_CHECK_CPU_DRY_RUN:-0}
OUT=""
for arg in "$@"; do
  case $arg in
    --cpu-dry-run) DRY=1 ;;
    -h|--help) sed -n '2,36p' "$0"; exit 0 ;;
    *) OUT=$arg ;;
  esac
done
OUT=${OUT:-$(mktemp -d -t mslseg-gpu-check.XXXXXX)}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
BUDGET=${GPU_CHECK_BUDGET_S:-440}
DEADLINE=$((START + BUDGET))
if [ -f "$REPO/.venv/bin/activate" ]; then . "$REPO/.venv/bin/activate"; fi
PY=${PYTHON:-python3}

# mslseg.export and mslseg.runtime live in export/ and runtime/ (setuptools package-dir). Lay the
# package out from this checkout (always: the check is of this tree, not of whatever is installed;
# PYTHONPATH comes before site-packages and editable-install finders).
SHIM=$(mktemp -d -t mslseg-shim.XXXXXX)
trap 'rm -rf "$SHIM"' EXIT  # on every exit, so the exit code stays the verdict's
mkdir -p "$SHIM/mslseg"
for f in "$REPO"/mslseg/*; do ln -s "$f" "$SHIM/mslseg/$(basename "$f")"; done
ln -sfn "$REPO/export" "$SHIM/mslseg/export"
ln -sfn "$REPO/runtime" "$SHIM/mslseg/runtime"
# PYTHONSAFEPATH (Python >= 3.11): `python -m`, `-c` and scripts do not put the working directory or
# the script's folder first on sys.path; running from OUT covers older Pythons too.
export PYTHONPATH="$SHIM${PYTHONPATH:+:$PYTHONPATH}" PYTHONSAFEPATH=1 PYTHONUNBUFFERED=1
export OUT REPO GPU_CHECK_CPU_DRY_RUN=$DRY
cd "$OUT" || exit 1
# the same flags in both runs; only the device and the sizes differ
SPEED_ARGS=(--amp strict-fp32 off auto --json "$OUT/train_speed.json")
if [ "$DRY" = 1 ]; then
  export CUDA_VISIBLE_DEVICES="" GPU_CHECK_SIZE=${GPU_CHECK_SIZE:-64x32}
  DEV=cpu; ADAPT_SIZE=64x32; N_SRC=2
  SPEED_ARGS+=(--device cpu --backbone resnet18 --source-size 64x32 --target-size 64x32 --steps 1 --warmup 0)
else
  DEV=cuda; ADAPT_SIZE=512x256; N_SRC=8
  SPEED_ARGS+=(--device cuda --backbone resnet101 --source-size 1024x512 --target-size 1024x512 --steps 6 --warmup 3)
fi

declare -A STATUS
STAGES=()
stage() {  # stage NAME SECONDS CMD...
  local name=$1 limit=$2; shift 2
  STAGES+=("$name")
  local left=$((DEADLINE - SECONDS))
  echo; echo "=== $name ==="
  if [ "$left" -lt 15 ]; then
    echo "SKIPPED (deadline): ${left}s left of ${BUDGET}s"; STATUS[$name]="SKIPPED (deadline)"; return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "(limit ${limit}s, ${left}s left)"
  local t0=$SECONDS
  # GPU_CHECK_STAGE_END: when the stage will be cut, for a stage that can skip what it cannot finish
  GPU_CHECK_STAGE_END=$(($(date +%s) + limit)) timeout -k 5 "$limit" "$@"; local rc=$?
  local verdict=ok
  [ $rc -ne 0 ] && verdict=FAILED
  [ $rc -eq 124 ] || [ $rc -eq 137 ] && verdict="TIMED OUT"
  STATUS[$name]="$verdict (rc=$rc, $((SECONDS - t0))s)"
}

stage probe 30 "$PY" "$REPO/scripts/gpu_probe.py"

DATA="$OUT/synth"
rm -rf "$OUT/adapt"
stage adapt-resume 90 bash -c "
  $PY -m mslseg synth '$DATA' --source $N_SRC --target-train $N_SRC --target-val 2 --size $ADAPT_SIZE --no-video --overwrite &&
  $PY -m mslseg adapt -c synthetic --source '$DATA/gta5' --target '$DATA/cityscapes' --target-val '$DATA/cityscapes' \
     --method iw-msl --multi-level --backbone resnet18 --size $ADAPT_SIZE --batch 2 --iterations 2 --device $DEV \
     --out '$OUT/adapt' --set train.stop_after=1 --set train.amp=auto --set train.workers=2 &&
  $PY -m mslseg adapt --resume '$OUT/adapt' --set train.stop_after=null &&
  $PY -c \"from mslseg.checkpoint import load_checkpoint; t=load_checkpoint('$OUT/adapt/last.pt')['training']; assert t['iteration']==2, t; print('resumed to iteration', t['iteration'])\"
"

stage speed 120 "$PY" "$REPO/benchmarks/train_speed.py" "${SPEED_ARGS[@]}"
stage torch-runtime 60 "$PY" "$REPO/scripts/gpu_torch_runtime.py"
stage trt-standin 40 "$PY" "$REPO/scripts/gpu_trt_standin.py"
stage export 90 "$PY" "$REPO/scripts/gpu_export_check.py"

bench_files=()
for f in "$OUT/export_model.pt" "$OUT"/model_fp32.onnx "$OUT"/model_fp16.onnx; do [ -f "$f" ] && bench_files+=("$f"); done
if [ ${#bench_files[@]} -gt 0 ]; then
  stage bench 60 "$PY" "$REPO/scripts/gpu_bench_stage.py" "${bench_files[@]}"
else
  echo; echo "=== bench ==="; echo "SKIPPED: no .pt or .onnx from the earlier stages"; STAGES+=(bench); STATUS[bench]="SKIPPED (no inputs)"
fi
stage step-matrix 180 "$PY" "$REPO/scripts/gpu_step_matrix.py"

echo; echo "=== summary ($((SECONDS - START))s of ${BUDGET}s) ==="
failed=0
for s in "${STAGES[@]}"; do
  echo "$s: ${STATUS[$s]:-not run}"
  case ${STATUS[$s]:-} in ok*) ;; *) failed=$((failed + 1)) ;; esac
done
echo "files in $OUT"
if [ $failed -gt 0 ]; then echo "gpu_check: $failed of ${#STAGES[@]} stages not ok"; exit 1; fi
echo "gpu_check: all ${#STAGES[@]} stages ok"
