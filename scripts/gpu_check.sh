#!/usr/bin/env bash
# One prepared GPU session of at most 8 minutes (the step limits sum to 480 s): the CUDA
# tests, then the GPU benchmarks (TorchScript fp32/fp16 and a .pt2 package compiled for
# CUDA), every output kept under $OUT (or ./out).
#
#   scripts/gpu_check.sh            # on a machine with an NVIDIA GPU, from the repository root
#
# Each step has its own time limit so that one slow step cannot eat the others' time; a step
# that fails is reported and the next one still runs. Exit status: the number of failed steps.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-out}
mkdir -p "$OUT"
IMAGES=""
for dir in shared/imagenet-samples ../shared/imagenet-samples; do
    [ -d "$dir" ] && IMAGES="--images $dir" && break
done
failed=0

step() {  # step NAME SECONDS COMMAND...: run with a limit, keep its output, count failures
    local name=$1 limit=$2
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local began=$SECONDS
    if timeout "$limit" "$@" >"$OUT/$name.log" 2>&1; then
        echo "   ok in $((SECONDS - began)) s"
    else
        echo "   FAILED (status $?) in $((SECONDS - began)) s; tail of $OUT/$name.log:"
        tail -n 20 "$OUT/$name.log"
        failed=$((failed + 1))
    fi
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"

# The artifacts: TorchScript (seeded random init offline) and a CUDA fp32 package, max batch 64.
[ -f models/resnet18.pt ] || step export-torchscript 60 "$PY" -m app.export
step export-pt2-cuda 150 "$PY" -m app.export --format pt2 --precision fp32 \
    --device cuda --max-batch 64 --out models/resnet18-cuda-fp32.pt2

step cuda-tests 110 "$PY" -m pytest -q -k cuda \
    tests/test_runtime.py tests/test_gunicorn.py tests/test_pt2.py
step bench-model-cuda 60 "$PY" -m scripts.bench_model --device cuda --precisions fp32,fp16 \
    --batch-sizes 1,8,32,64 --reps 20 --package models/resnet18-cuda-fp32.pt2 $IMAGES
step bench-service-cuda-ts-fp16 50 "$PY" -m scripts.bench_service --set DEVICE=cuda \
    --set PRECISION=fp16 --set MAX_BATCH=32 --concurrency 1,32 --seconds 10 $IMAGES
step bench-service-cuda-pt2 50 "$PY" -m scripts.bench_service --set DEVICE=cuda \
    --model models/resnet18-cuda-fp32.pt2 --set MAX_BATCH=32 --concurrency 1,32 --seconds 10 \
    $IMAGES

for log in "$OUT"/bench-*.log; do
    echo "---- $log"
    cat "$log"
done
exit "$failed"
