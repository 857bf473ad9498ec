# syntax=docker/dockerfile:1
# clipserve images. Targets:
#   cpu  (default): python slim + onnxruntime (CPU)
#   cuda:           CUDA runtime + cuDNN + onnxruntime-gpu (CUDA and TensorRT providers)
# Neither contains build tools or torch: export happens elsewhere (`clipserve[export]`).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service/ service/
RUN pip wheel --no-cache-dir --no-deps -w /wheels .

FROM python:${PYTHON_VERSION}-slim AS cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CLIPSERVE_HOST=0.0.0.0 CLIPSERVE_PORT=8000 \
    CLIPSERVE_MODELS_DIR=/app/models CLIPSERVE_DATA_DIR=/data
COPY --from=build /wheels /wheels
RUN WHEEL="$(ls /wheels/clipserve-*.whl)" \
    && pip install --no-cache-dir "${WHEEL}[cpu]" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /app clipserve \
    && mkdir -p /data && chown clipserve /data
COPY --chown=10001:10001 models/ /app/models/
USER 10001
WORKDIR /app
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('CLIPSERVE_PORT', '8000')}/healthz\", timeout=2)"]
ENTRYPOINT ["clipserve", "serve"]

# TensorRT libraries come from NVIDIA's CUDA apt repository (libnvinfer*), which this base image
# is configured for; the tensorrt-cu13-libs wheel is only a stub that downloads at install time.
FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS cuda
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    CLIPSERVE_HOST=0.0.0.0 CLIPSERVE_PORT=8000 \
    CLIPSERVE_MODELS_DIR=/app/models CLIPSERVE_DATA_DIR=/data \
    CLIPSERVE_PROVIDERS=TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider \
    CLIPSERVE_TRT_CACHE_DIR=/data/trt-cache \
    PATH=/opt/venv/bin:$PATH
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv libnvinfer10 libnvinfer-plugin10 libnvonnxparsers10 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
COPY --from=build /wheels /wheels
RUN WHEEL="$(ls /wheels/clipserve-*.whl)" \
    && pip install --no-cache-dir "${WHEEL}[gpu]" \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /app clipserve \
    && mkdir -p /data && chown clipserve /data
COPY --chown=10001:10001 models/ /app/models/
USER 10001
WORKDIR /app
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('CLIPSERVE_PORT', '8000')}/healthz\", timeout=2)"]
ENTRYPOINT ["clipserve", "serve"]

FROM cpu AS default
