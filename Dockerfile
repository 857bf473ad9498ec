# clipserve images. Always name the target:
#
#   cpu:  Python 3.11 (python:3.11-slim) + onnxruntime (CPU)
#           docker build --target cpu -t clipserve:cpu .
#   cuda: NVIDIA CUDA 13 runtime + cuDNN 9 + TensorRT 10 libraries + onnxruntime-gpu
#         (TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider)
#           docker build --target cuda -t clipserve:cuda .
#
# The CPU stages come first, so that a builder which builds every stage up to the target (the
# legacy Docker builder) never pulls the CUDA base for `--target cpu`; the last stage repeats
# `cpu`, so a plain `docker build .` (BuildKit) gives the CPU image too.
#
# Neither runtime image holds build tools, pip or torch: exporting checkpoints needs the `export`
# extra and happens outside the serving image (`clipserve export`, then mount or bake the
# resulting model folder).
#
# Both images: non-root user 10001 with HOME=/tmp (the only writable path besides /data under a
# read-only root filesystem), the default model baked in at /app/models (mount a model repository
# over it, or point CLIPSERVE_MODELS_DIR elsewhere, to serve other models), writable state
# (embedded Qdrant store, TensorRT engine and CUDA caches) in the /data volume, port 8000, and a
# HEALTHCHECK on /healthz. The OCI image format has no health check: Podman and Buildah drop it
# unless they build with `--format docker` (Docker always keeps it). It only says "alive";
# orchestrators should gate traffic on /readyz (models warmed up, store reachable), as
# deploy/helm and deploy/ do.
#
# Base images are fully qualified (docker.io/...): Podman, Buildah and CRI-O refuse short names
# by default. BASE_IMAGE replaces the Python base (any Debian-like image with python3 and its
# venv module, e.g. a mirror, or the one tests/image makes from Debian packages).

ARG PYTHON_VERSION=3.11
ARG BASE_IMAGE=docker.io/library/python:${PYTHON_VERSION}-slim
# onnxruntime-gpu 1.31.1 (pinned by ONNXRUNTIME_GPU_VERSION below) links CUDA 13 (libcublas.so.13,
# libcudart.so.13), cuDNN 9 (libcudnn.so.9) and TensorRT 10 (libnvinfer.so.10,
# libnvonnxparser.so.10): the three pins of the CUDA target move together.
ARG CUDA_IMAGE=docker.io/nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
# builder: the clipserve wheel, and a complete CPU virtual environment in /opt/venv.
FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
COPY deploy/constraints/ deploy/constraints/
# Dependency versions are the ranges in pyproject.toml; for fully pinned, reproducible images
# pass a pip constraints file from deploy/constraints/ (the only part of deploy/ sent to the
# build), e.g. --build-arg PIP_CONSTRAINT=deploy/constraints/cpu.txt. pip reads it from the
# environment, relative to /src.
ARG PIP_CONSTRAINT=
# Extras: `cpu` = onnxruntime; `triton` = tritonclient, for CLIPSERVE_RUNTIME=triton.
ARG CPU_EXTRAS=cpu,triton
# The venv keeps its bytecode: under a read-only root filesystem Python could not cache it and
# would compile every module again at each start.
# hadolint ignore=DL3013
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
    && /opt/venv/bin/pip install "$(ls /wheels/clipserve-*.whl)[${CPU_EXTRAS}]" \
    && /opt/venv/bin/pip uninstall --yes pip

# ---------------------------------------------------------------------------------------------
# cpu: the slim CPU runtime image.
FROM ${BASE_IMAGE} AS cpu
RUN groupadd --system --gid 10001 clipserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin clipserve \
    && mkdir -p /data /app \
    && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
COPY models/ /app/models/
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CLIPSERVE_HOST=0.0.0.0 CLIPSERVE_PORT=8000 \
    CLIPSERVE_MODELS_DIR=/app/models CLIPSERVE_DATA_DIR=/data
LABEL org.opencontainers.image.title="clipserve" \
      org.opencontainers.image.description="CLIP-family embedding service: onnxruntime (CPU)" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CLIPSERVE_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["clipserve"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------
# cuda-venv: the GPU virtual environment, built on the CUDA base so that its Python (Ubuntu
# 24.04's 3.12) is the one the runtime stage has.
FROM ${CUDA_IMAGE} AS cuda-venv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 DEBIAN_FRONTEND=noninteractive
# Ubuntu's python3 follows the base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY --from=builder /wheels /wheels
COPY deploy/constraints/ deploy/constraints/
ARG PIP_CONSTRAINT=
# `gpu` = onnxruntime-gpu (never together with the CPU onnxruntime's `cpu`); `triton` as above.
ARG GPU_EXTRAS=gpu,triton
# The onnxruntime-gpu build for CUDA_IMAGE's CUDA and cuDNN and TENSORRT_VERSION's TensorRT.
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
# hadolint ignore=DL3013
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install "$(ls /wheels/clipserve-*.whl)[${GPU_EXTRAS}]" \
        "onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}" \
    && /opt/venv/bin/pip uninstall --yes pip

# ---------------------------------------------------------------------------------------------
# cuda: the GPU runtime image.
FROM ${CUDA_IMAGE} AS cuda
# TensorRT libraries for onnxruntime's TensorRT execution provider come from NVIDIA's TensorRT
# apt packages in the CUDA repository that the nvidia/cuda base image is already configured for
# (libnvinfer10, libnvinfer-plugin10, libnvonnxparsers10). The `tensorrt-cu13-libs` wheel is not
# an option: it is a stub that downloads the libraries from NVIDIA's own index at install time.
# Keep TENSORRT_VERSION a 10.x build for the base image's CUDA major (`+cuda13.x`): the
# onnxruntime-gpu wheel links libnvinfer.so.10.
ARG TENSORRT_VERSION=10.14.1.48-1+cuda13.0
ENV DEBIAN_FRONTEND=noninteractive
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 \
        "libnvinfer10=${TENSORRT_VERSION}" \
        "libnvinfer-plugin10=${TENSORRT_VERSION}" \
        "libnvonnxparsers10=${TENSORRT_VERSION}" \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 clipserve \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp \
        --shell /usr/sbin/nologin clipserve \
    && mkdir -p /data /app \
    && chown 10001:10001 /data
COPY --from=cuda-venv /opt/venv /opt/venv
# The default model, read-only for the service user (root-owned, world-readable).
COPY models/ /app/models/
# HOME and CUDA's JIT cache on writable paths: /app is root-owned and the root filesystem may be
# read-only.
ENV PATH=/opt/venv/bin:$PATH HOME=/tmp CUDA_CACHE_PATH=/data/cuda-cache \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CLIPSERVE_HOST=0.0.0.0 CLIPSERVE_PORT=8000 \
    CLIPSERVE_MODELS_DIR=/app/models CLIPSERVE_DATA_DIR=/data \
    CLIPSERVE_PROVIDERS=TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider \
    CLIPSERVE_TRT_CACHE_DIR=/data/trt-cache
LABEL org.opencontainers.image.title="clipserve (CUDA)" \
      org.opencontainers.image.description="CLIP-family embedding service: onnxruntime-gpu with CUDA and TensorRT" \
      org.opencontainers.image.licenses="Apache-2.0"
WORKDIR /app
USER 10001:10001
VOLUME ["/data"]
EXPOSE 8000
# TensorRT builds its engines at start-up (cached in /data/trt-cache): allow a long start period.
HEALTHCHECK --interval=15s --timeout=3s --start-period=300s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CLIPSERVE_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["clipserve"]
CMD ["serve"]

# ---------------------------------------------------------------------------------------------
# The default target (no --target): the CPU image.
FROM cpu AS default
