"""Prometheus metrics, defined once for the process and exposed on /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
IN_FLIGHT = Gauge("clipserve_requests_in_flight", "HTTP requests being served")
ERRORS = Counter("clipserve_errors_total", "Error responses by error code", ["code"])
QUEUE_DEPTH = Gauge("clipserve_queue_depth", "Items waiting per model tower", ["model", "tower"])
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
REJECTED = Counter(
    "clipserve_queue_rejections_total", "Items refused because a queue was full", ["model", "tower"]
)
