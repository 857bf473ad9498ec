"""Prometheus metrics, defined once for the process and exposed on /metrics.

With several worker processes (`PROMETHEUS_MULTIPROC_DIR` set by the supervisor), each worker
writes its values to that folder and any worker's /metrics answers for all of them.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

REQUESTS = Counter(
    "clipserve_requests_total", "HTTP requests by route and status", ["route", "method", "status"]
)
REQUEST_LATENCY = Histogram(
    "clipserve_request_duration_seconds",
    "HTTP request latency by route",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    "clipserve_requests_in_flight", "HTTP requests being served", multiprocess_mode="livesum"
)
ERRORS = Counter("clipserve_errors_total", "Error responses by error code", ["code"])
QUEUE_DEPTH = Gauge(
    "clipserve_queue_depth",
    "Items waiting per model tower",
    ["model", "tower"],
    multiprocess_mode="livesum",
)
BATCH_SIZE = Histogram(
    "clipserve_batch_size", "Items per inference batch", ["model", "tower"], buckets=_BATCH_BUCKETS
)
INFERENCE_SECONDS = Histogram(
    "clipserve_inference_seconds",
    "Time per inference batch",
    ["model", "tower"],
    buckets=_LATENCY_BUCKETS,
)
DECODE_SECONDS = Histogram(
    "clipserve_image_decode_seconds",
    "Time to decode and preprocess one image",
    buckets=_LATENCY_BUCKETS,
)
ITEMS = Counter("clipserve_items_total", "Embedded items by model and tower", ["model", "tower"])
UNKNOWN_TOKENS = Counter(
    "clipserve_unknown_tokens_total",
    "Text tokens the model's vocabulary does not know (such texts embed alike; see "
    "GET /v1/models/{id} for the vocabulary)",
    ["model"],
)
REJECTED = Counter(
    "clipserve_queue_rejections_total", "Items refused because a queue was full", ["model", "tower"]
)


def exposition() -> bytes:
    """This process's metrics, or every worker's when they share a multiprocess folder."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return generate_latest()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def worker_exited(pid: int) -> None:
    """Drop a finished worker's live gauges (its counters and histograms keep counting)."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(pid)
