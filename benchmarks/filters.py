"""What reading a filter costs on the event loop: parse (bounds, qdrant-client's models, Qdrant's
extra rules) and the translation for Qdrant Edge, for ordinary filters; and how fast hostile
documents are refused (before anything recursive touches them).

    python benchmarks/filters.py
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

from service.store.filters import FilterError, parse_filter, to_edge

ORDINARY: dict[str, dict[str, Any]] = {
    "one match": {"must": [{"key": "kind", "match": {"value": "photo"}}]},
    "three conditions": {
        "must": [
            {"key": "kind", "match": {"any": ["photo", "scan"]}},
            {"key": "taken", "range": {"gte": "2024-01-01T00:00:00Z"}},
        ],
        "must_not": [{"has_id": [1, 2, 3]}],
    },
    "nested + geo + min_should": {
        "must": [
            {"nested": {"key": "items", "filter": {"must": [{"key": "qty", "range": {"gt": 2}}]}}},
            {
                "key": "loc",
                "geo_radius": {"center": {"lat": 52.5, "lon": 13.4}, "radius": 5000},
            },
        ],
        "min_should": {
            "conditions": [{"key": f"t{i}", "match": {"value": i}} for i in range(5)],
            "min_count": 2,
        },
    },
}


def deep(depth: int) -> dict[str, Any]:
    flt: dict[str, Any] = {"key": "a", "match": {"value": 1}}
    for _ in range(depth):
        flt = {"must": [flt]}
    return flt


HOSTILE: dict[str, Callable[[], Any]] = {
    "250 levels deep": lambda: deep(250),
    "100,000 levels deep": lambda: deep(100_000),
    "1,000,000 conditions": lambda: {
        "should": [{"key": "n", "match": {"value": i}} for i in range(1_000_000)]
    },
    "2,000,000 has_id ids": lambda: {"must": [{"has_id": list(range(2_000_000))}]},
    "malformed (old dialect)": lambda: {"must": [{"key": "digit", "match": 7}]},
    "256 malformed conditions": lambda: {"must": [{"key": "digit", "match": 7}] * 256},
}


def per_call_us(fn: Callable[[], Any], repeat: int) -> float:
    start = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - start) / repeat * 1e6


def main() -> None:
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} CPUs; CPU time of this one thread (steady on a busy host)")
    for name, raw in ORDINARY.items():
        flt = parse_filter(raw)
        parse = per_call_us(lambda raw=raw: parse_filter(raw), 2000)
        edge = per_call_us(lambda flt=flt: to_edge(flt), 2000)
        print(f"{name:<28} parse {parse:7.1f} us   to_edge {edge:6.1f} us")
    for name, build in HOSTILE.items():
        raw = build()
        times, outcome = [], "accepted"
        for _ in range(5):
            start = time.process_time()
            try:
                parse_filter(raw)
            except FilterError as exc:
                outcome = f"{exc.status} {exc.code}"
            times.append((time.process_time() - start) * 1000)
        print(
            f"{name:<28} refused in {statistics.median(times):8.2f} ms   ({outcome}, median of 5)"
        )


if __name__ == "__main__":
    main()
