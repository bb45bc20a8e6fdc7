#!/usr/bin/env bash
# The build steps of the Docker image, kept in one script so a test can run them natively.
#   container_setup.sh install   install the project and its runtime dependencies
#   container_setup.sh export    export the TorchScript model (needs network for real weights)
set -euo pipefail
step=${1:?usage: container_setup.sh install|export}
case "$step" in
  install)
    # TORCH_INDEX: the CPU wheel index by default; a CUDA build passes another one.
    if [[ -n "${TORCH_INDEX:-}" ]]; then
      python -m pip install --no-cache-dir --index-url "$TORCH_INDEX" \
        "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
    fi
    python -m pip install --no-cache-dir .
    ;;
  export)
    # Refuse to bake random weights into an image unless the builder asked for it.
    flag=--require-trained
    [[ "${ALLOW_UNTRAINED:-0}" == 1 ]] && flag=
    python -m app.export --out "${WANWU_MODEL:-models/resnet18.pt}" $flag
    ;;
  *) echo "unknown step: $step" >&2; exit 2 ;;
esac
