#!/usr/bin/env bash
# Rehearse scripts/gpu_check.sh on this machine's CPU, with a Python and a torch that are not
# the project's venv, as on the lent GPU machine: a fresh venv ($VENV) of this machine's
# python3 holding only torch (2.14.1 and torchvision 0.29.1, from this machine's disk: no
# torchvision on it pairs with the CPU build of 2.13) and what the GPU machine's image gives
# the check (benchkit.bundle names them), the bundle made for this Python, the CUDA steps
# skipped by name, the loads cut to seconds. It proves the plumbing: the carried wheels install and
# import, the exports run on that torch, Gunicorn starts, each benchmark path answers.
#
#   scripts/gpu_rehearsal.sh            # IMAGES=DIR when ../shared/imagenet-samples is absent
set -eu
cd "$(dirname "$0")/.."
VENV=${VENV:-/tmp/gpu-rehearsal}
HOST=.venv/bin/python  # the project's venv only prepares: it lists and downloads
version=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
image=$($HOST -c 'from benchkit import bundle
print(*sorted({bundle.distribution(n) for n in bundle.third_party_imports()}
              - {"torch", "torchvision", *bundle.BUNDLE}))')
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q torch==2.14.1 torchvision==0.29.1 $image
$HOST -m scripts.gpu_bundle --python "$version" --out "$VENV/bundle" ${IMAGES:+--images "$IMAGES"}
# A shared two-core machine runs the steps several times slower than the GPU machine's 16 cores.
PYTHON=$VENV/bin/python GPU_BUNDLE=$VENV/bundle DEVICE=cpu SLOW=${SLOW:-4} BUDGET=1800 \
    SKIP="export-pt2-cuda cuda-tests model-pt2-cuda service-pt2-cuda" \
    PRECISIONS=fp32 BATCHES=1,8 REPS=3 SERVE_PRECISION=fp32 MAX_BATCH=4 WORKERS=1 THREADS=1 \
    CLIENTS=1,4 CLIENT_PROCESSES=2 LOAD_SECONDS=2 OUT=${OUT:-out/rehearsal} scripts/gpu_check.sh
