#!/usr/bin/env bash
# Run on the GPU machine after the onnxruntime-gpu wheel is assembled (../shared/device):
# export + CUDA parity + tower throughput, then end-to-end HTTP on the fp16 model.
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 benchmarks/gpu_runner.py --repo /tmp/repo --out "$OUT/gpu_results.json" 2>&1 | grep -v -E "Warning|warn|shards|weights" | tee "$OUT/gpu_runner.log"
python3 -m service serve --models-dir /tmp/repo --models vitb32-fp16 --port 8000 \
  --providers CUDAExecutionProvider,CPUExecutionProvider --max-batch-size 256 --max-wait-ms 4 \
  --batch-workers 2 --decode-threads 16 --data-dir /tmp/data --max-queue-items 8192 > "$OUT/serve.log" 2>&1 &
for _ in $(seq 120); do curl -sf localhost:8000/readyz >/dev/null && break; sleep 1; done
b() { python3 -m service bench --duration 8 "$@" 2>&1 | tee -a "$OUT/bench.txt"; }
b --modality image --concurrency 1 --image-size 600x400
b --modality text --concurrency 1
b --modality image --concurrency 64 --batch 8 --image-size 600x400
b --modality image --concurrency 32 --batch 16 --image-size 600x400 --transport multipart
b --modality text --concurrency 64 --batch 32
kill %1 || true
