# syntax=docker/dockerfile:1
#
# clipserve images. Build targets:
#
#   cpu   (the default, last stage): python:3.11-slim + onnxruntime (CPU)
#           docker build -t clipserve:cpu .
#   cuda: NVIDIA CUDA 13 runtime + cuDNN 9 + TensorRT 10 libraries + onnxruntime-gpu
#         (TensorrtExecutionProvider, CUDAExecutionProvider, CPUExecutionProvider)
#           docker build --target cuda -t clipserve:cuda .
#
# Neither runtime image holds build tools, pip caches or torch: exporting checkpoints needs the
# `export` extra and happens outside the serving image (`clipserve export`, then mount or bake
# the resulting model folder).
#
# Both images: non-root user 10001, the default model baked in at /app/models (mount a model
# repository over it, or point CLIPSERVE_MODELS_DIR elsewhere, to serve other models), writable
# state (embedded Qdrant store, TensorRT engine cache) in the /data volume, port 8000, and a
# HEALTHCHECK on /healthz. Docker's health check only says "alive"; orchestrators should gate
# traffic on /readyz (models warmed up, store reachable), as deploy/helm and deploy/ do.

ARG PYTHON_VERSION=3.11
# onnxruntime-gpu wheels on PyPI (1.31) link CUDA 13 (libcublas.so.13, libcudart.so.13),
# cuDNN 9 (libcudnn.so.9) and TensorRT 10 (libnvinfer.so.10, libnvonnxparser.so.10).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------------------------------------
# builder: the clipserve wheel, and a complete CPU virtual environment in /opt/venv.
FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
# Dependency versions are the ranges in pyproject.toml; pass a pip constraints file through the
# PIP_CONSTRAINT build argument for fully pinned, reproducible images.
ARG PIP_CONSTRAINT=
# Extras: `cpu` = onnxruntime; `triton` = tritonclient, for CLIPSERVE_RUNTIME=triton.
ARG CPU_EXTRAS=cpu,triton
# hadolint ignore=DL3013
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv /opt/venv \
    && /opt/venv/bin/pip install "$(ls /wheels/clipserve-*.whl)[${CPU_EXTRAS}]" \
    && /opt/venv/bin/pip uninstall --yes pip \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# ---------------------------------------------------------------------------------------------
# cuda-venv: the GPU virtual environment, built on the CUDA base so that its Python (Ubuntu
# 24.04's 3.12) is the one the runtime stage has.
FROM ${CUDA_IMAGE} AS cuda-venv
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    DEBIAN_FRONTEND=noninteractive
# Ubuntu's python3 follows the base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/*
COPY --from=builder /wheels /wheels
ARG PIP_CONSTRAINT=
# `gpu` = onnxruntime-gpu (never together with the CPU onnxruntime's `cpu`); `triton` as above.
ARG GPU_EXTRAS=gpu,triton
# hadolint ignore=DL3013
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install "$(ls /wheels/clipserve-*.whl)[${GPU_EXTRAS}]" \
    && /opt/venv/bin/pip uninstall --yes pip \
    && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

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
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin clipserve \
    && mkdir -p /data /app \
    && chown 10001:10001 /data
COPY --from=cuda-venv /opt/venv /opt/venv
# The default model, read-only for the service user (root-owned, world-readable).
COPY models/ /app/models/
ENV PATH=/opt/venv/bin:$PATH \
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
# cpu: the slim CPU runtime image (the default target, so it stays the last stage).
FROM python:${PYTHON_VERSION}-slim AS cpu
RUN groupadd --system --gid 10001 clipserve \
    && useradd --system --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin clipserve \
    && mkdir -p /data /app \
    && chown 10001:10001 /data
COPY --from=builder /opt/venv /opt/venv
COPY models/ /app/models/
ENV PATH=/opt/venv/bin:$PATH \
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
