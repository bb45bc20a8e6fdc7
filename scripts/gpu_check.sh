#!/usr/bin/env bash
# The GPU check: one call on a lent GPU machine as it comes (python3 with torch, no network,
# no project venv), over in at most 8 minutes, every figure in at most 8 files under $OUT.
#
#   .venv/bin/python -m scripts.gpu_bundle   # here, first: wheels + photos into .gpu-bundle/
#   scripts/gpu_check.sh                     # there: the device call, carry [".gpu-bundle"]
#   scripts/gpu_rehearsal.sh                 # here: the same script on CPU (docs/BENCHMARKS.md)
#
# The bundle's wheels are installed with --no-deps into $SITE and put on PYTHONPATH with the
# working tree: the project runs from its sources on the machine's own torch, which exports
# the artifacts the check measures (TorchScript, and a .pt2 package compiled for CUDA).
# Each step has a time limit, cut to what is left of the whole check's $BUDGET seconds; a
# step that fails or times out is reported and the next one still runs; a step named in $SKIP
# (or left no time) is reported as skipped. Exit status: the number of failed steps.
# Knobs (scripts/gpu_rehearsal.sh sets them for a CPU): DEVICE, SKIP, PRECISIONS, BATCHES,
# REPS, SERVE_PRECISION, MAX_BATCH, WORKERS, THREADS, CLIENTS, CLIENT_PROCESSES, LOAD_SECONDS;
# BUDGET, and SLOW (every step's limit times SLOW) for a slower machine. A rerun on a machine
# still warm can SKIP the steps that passed (the exports always run: nothing is kept).
set -u
cd "$(dirname "$0")/.."
BEGAN=$SECONDS
BUDGET=${BUDGET:-470}
SLOW=${SLOW:-1}
OUT=${OUT:-out}
PY=${PYTHON:-python3}
BUNDLE=${GPU_BUNDLE:-.gpu-bundle}
DEVICE=${DEVICE:-cuda}
SKIP=" ${SKIP:-} "
PRECISIONS=${PRECISIONS:-fp32,fp16,bf16}
BATCHES=${BATCHES:-1,8,32,64,128}
REPS=${REPS:-20}
SERVE_PRECISION=${SERVE_PRECISION:-fp16}
MAX_BATCH=${MAX_BATCH:-32}
WORKERS=${WORKERS:-6}
THREADS=${THREADS:-2}
CLIENTS=${CLIENTS:-1,32,128}
CLIENT_PROCESSES=${CLIENT_PROCESSES:-4}
LOAD_SECONDS=${LOAD_SECONDS:-8}
WORK=$(mktemp -d /tmp/wanwu-gpu-check.XXXXXX)
SITE=$WORK/site
TS=$WORK/resnet18.pt
PT2=$WORK/resnet18-$DEVICE-fp32.pt2
mkdir -p "$OUT"
export PYTHONPATH="$SITE:$PWD" PYTHONUNBUFFERED=1 TMPDIR=$WORK WANWU_TEST_MODEL=$TS
IMAGES=""
for dir in "$BUNDLE/images" shared/imagenet-samples ../shared/imagenet-samples; do
    [ -d "$dir" ] && IMAGES=$dir && break
done
# The served configuration measured, recommended for 16 cores and one GPU (docs/SCALING.md):
# six workers of two pinned CPUs each decode in parallel and share the GPU, leaving four CPUs
# to the master and the load generator's four processes; one client address may hold every
# connection.
SERVE=(--set "DEVICE=$DEVICE" --set "WORKERS=$WORKERS" --set "THREADS=$THREADS"
    --set "MAX_BATCH=$MAX_BATCH" --set MAX_CONNECTIONS_PER_ADDRESS=0 --concurrency "$CLIENTS"
    --client-processes "$CLIENT_PROCESSES" --seconds "$LOAD_SECONDS" --images "$IMAGES")
failed=0
: >"$OUT/summary.txt"

note() { echo "$*" | tee -a "$OUT/summary.txt"; }

lines() { [ -f "$OUT/$1" ] && wc -l <"$OUT/$1" || echo 0; }

gpu_during() {  # GPU-UTIL-LINE GPU-APPS-LINE: busy % and each process's GPU MiB since then
    [ -f "$OUT/gpu-util.csv" ] || return 0
    tail -n +"$(($1 + 1))" "$OUT/gpu-util.csv" | awk -F', ' '$2 ~ /^[0-9]+ %$/ {
        u = $2 + 0; sum += u; n++; if (u > top) top = u }
        END { if (n) printf "; GPU busy mean %.0f %%, max %d %%", sum / n, top }'
    tail -n +"$(($2 + 1))" "$OUT/gpu-apps.csv" | awk -F', ' '$4 ~ /^[0-9]+ MiB$/ {
        if ($4 + 0 > mib[$2]) mib[$2] = $4 + 0 }
        END { for (pid in mib) printf "%s%d", (k++ ? " " : "; GPU MiB per process: "), mib[pid] }'
}

step() {  # step NAME LOG LIMIT COMMAND...: run with a limit, output appended to $OUT/LOG
    local name=$1 log=$2 limit=$(($3 * SLOW)) left=$((BUDGET - (SECONDS - BEGAN)))
    shift 3
    [ "$limit" -gt "$left" ] && limit=$left
    if [[ $SKIP == *" $name "* ]]; then
        note "$(printf '%-22s skipped (SKIP)' "$name")"
        return 0
    elif [ "$limit" -lt 10 ]; then
        note "$(printf '%-22s skipped (no time left)' "$name")"
        return 0
    fi
    echo "== $name (limit ${limit} s): $*" >>"$OUT/$log"
    local began=$SECONDS status=0 util apps
    util=$(lines gpu-util.csv) apps=$(lines gpu-apps.csv)
    timeout -k 5 "$limit" "$@" >>"$OUT/$log" 2>&1 || status=$?
    if [ "$status" = 0 ]; then
        note "$(printf '%-22s ok in %3d s' "$name" $((SECONDS - began)))$(gpu_during "$util" "$apps")"
    else
        note "$(printf '%-22s FAILED (status %s%s) in %3d s, see %s' "$name" "$status" \
            "$([ "$status" = 124 ] && echo ': time limit')" $((SECONDS - began)) "$log")"
        failed=$((failed + 1))
    fi
    return "$status"
}

# GPU utilisation and memory once a second, and each process's GPU memory, all check long.
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader \
        >>"$OUT/summary.txt" 2>&1
    nvidia-smi --query-gpu=timestamp,utilization.gpu,utilization.memory,memory.used,power.draw \
        --format=csv -l 1 >"$OUT/gpu-util.csv" 2>&1 &
    (while sleep 2; do nvidia-smi --query-compute-apps=timestamp,pid,process_name,used_memory \
        --format=csv,noheader; done) >"$OUT/gpu-apps.csv" 2>&1 &
fi
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$WORK"' EXIT
note "$(date -u +%FT%TZ) $(nproc) CPUs, device $DEVICE, photos ${IMAGES:-none}, $PY"

step install setup.log 60 "$PY" -m pip install -q --no-index --no-deps --no-compile \
    --no-cache-dir --target "$SITE" "$BUNDLE"/wheels/*.whl
step versions summary.txt 60 "$PY" -c "import sys, torch, importlib.metadata as m
print('python', sys.version.split()[0], 'cuda', torch.cuda.is_available(), *(f'{d} {m.version(d)}'
      for d in ('torch', 'torchvision', 'pillow', 'flask', 'gunicorn', 'pillow-heif', 'torchao')))
import app, app.export, benchkit.bench, pillow_heif, torchao.quantization.pt2e"
step export-torchscript setup.log 90 "$PY" -m app.export --weights none --out "$TS"
# The CUDA package compiles on the CPUs while the CUDA tests run (they time nothing).
step export-pt2-cuda setup.log 240 "$PY" -m app.export --weights none --format pt2 \
    --precision fp32 --device cuda --max-batch 128 --out "$PT2" &
compiling=$!
step cuda-tests tests.log 200 "$PY" -m pytest -q -k cuda \
    tests/test_runtime.py tests/test_gunicorn.py tests/test_pt2.py
step decode model.md 60 "$PY" -m scripts.bench_decode --images "$IMAGES"
step model-torchscript model.md 120 "$PY" -m scripts.bench_model --model "$TS" \
    --device "$DEVICE" --threads "$THREADS" --precisions "$PRECISIONS" --batch-sizes "$BATCHES" \
    --reps "$REPS" --images "$IMAGES"
step service-torchscript service.md 150 "$PY" -m scripts.bench_service --model "$TS" \
    --set "PRECISION=$SERVE_PRECISION" "${SERVE[@]}"
wait "$compiling" || failed=$((failed + 1))  # the subshell's count is its own
step model-pt2-cuda model.md 90 "$PY" -m scripts.bench_model --model "$TS" --device cuda \
    --threads "$THREADS" --precisions fp32 --batch-sizes "$BATCHES" --reps "$REPS" --package "$PT2" \
    --images "$IMAGES"
step service-pt2-cuda service.md 150 "$PY" -m scripts.bench_service --model "$PT2" "${SERVE[@]}"

note "$(printf '%-22s %d s in all, %d failed' total $((SECONDS - BEGAN)) "$failed")"
for file in model.md service.md; do
    [ -f "$OUT/$file" ] && grep -E '^(\||- |[a-z].* vs fp32|per-worker)' "$OUT/$file"
done
exit "$failed"
