# syntax=docker/dockerfile:1
# wanwu: CPU image by default. For CUDA (the CUDA wheels carry their own CUDA libraries; the
# host needs the NVIDIA driver and container toolkit):
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t wanwu:cuda .
# Offline builders may pass --build-arg ALLOW_UNTRAINED=1 (the image then says it is untrained).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG ALLOW_UNTRAINED=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY app ./app
COPY deploy/container_setup.sh ./deploy/
# hadolint ignore=DL3059
RUN TORCH_INDEX=${TORCH_INDEX} deploy/container_setup.sh install
# Weights are downloaded (hash-checked) and exported now: the container needs no network.
# hadolint ignore=DL3059
RUN ALLOW_UNTRAINED=${ALLOW_UNTRAINED} WANWU_MODEL=/src/models/resnet18.pt \
    deploy/container_setup.sh export

FROM ${PYTHON_IMAGE}
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 \
    WANWU_BIND=0.0.0.0:8000 WANWU_GRPC_BIND=0.0.0.0:8001 \
    WANWU_MODEL=/srv/wanwu/models/resnet18.pt \
    PROMETHEUS_MULTIPROC_DIR=/tmp/wanwu-metrics
RUN useradd --system --uid 10001 --home-dir /srv/wanwu wanwu
WORKDIR /srv/wanwu
# The venv holds the installed app package (code, templates, static files, labels).
COPY --from=build /opt/venv /opt/venv
COPY --from=build --chown=wanwu:wanwu /src/models ./models
COPY --chown=wanwu:wanwu gunicorn.conf.py ./
USER 10001
# 8000: HTTP (/predict, TorchServe, OIP v2); 8001: OIP v2 over gRPC, as Triton and KServe use it.
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ['WANWU_BIND'].rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
# gunicorn.conf.py empties PROMETHEUS_MULTIPROC_DIR at start; mount a tmpfs there if you like.
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
