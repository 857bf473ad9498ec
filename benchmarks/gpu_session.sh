#!/usr/bin/env bash
# Run on the GPU machine after the onnxruntime-gpu wheel is assembled (../shared/device):
# export + CUDA parity + tower throughput, the image tower's input paths, then end-to-end HTTP
# on the fp16 model with one process and with several workers.
set -euo pipefail
export PYTHONPATH=/tmp/site:$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 benchmarks/gpu_runner.py --repo /tmp/repo --out "$OUT/gpu_results.json" 2>&1 | grep -v -E "Warning|warn|shards|weights" | tee "$OUT/gpu_runner.log"
CUDA=CUDAExecutionProvider,CPUExecutionProvider
python3 benchmarks/runner_paths.py --model /tmp/repo/vitb32-fp16 --providers $CUDA \
  --batches 1 32 256 512 --out "$OUT/runner_paths.json" 2>&1 | tee "$OUT/runner_paths.txt"
python3 benchmarks/runner_paths.py --model /tmp/repo/vitb32-fp16 --providers $CUDA --cuda-graph \
  --batches 1 32 256 --out "$OUT/runner_paths_graph.json" 2>&1 | tail -20 | tee "$OUT/runner_paths_graph.txt" || true
b() { python3 -m service bench --duration 8 "$@" 2>&1 | tee -a "$OUT/bench.txt"; }
run_http() {  # $1: label, then serve flags
  local label=$1; shift
  python3 -m service serve --models-dir /tmp/repo --models vitb32-fp16 --port 8000 \
    --providers $CUDA --max-batch-size 256 --max-wait-ms 4 --batch-workers 2 \
    --store-engine none --max-queue-items 8192 "$@" > "$OUT/serve-$label.log" 2>&1 &
  local pid=$!
  for _ in $(seq 180); do curl -sf localhost:8000/readyz >/dev/null && break; sleep 1; done
  echo "== $label" | tee -a "$OUT/bench.txt"
  b --modality image --concurrency 1 --image-size 600x400
  b --modality text --concurrency 1
  b --modality image --concurrency 64 --batch 8 --image-size 600x400
  b --modality image --concurrency 32 --batch 16 --image-size 600x400 --transport multipart
  b --modality text --concurrency 64 --batch 32
  kill $pid || true; wait $pid || true
}
run_http one-process --decode-processes 14
run_http four-workers --workers 4 --decode-processes 3
