"""Payloads the store tests share."""

from __future__ import annotations

from typing import Any


def nested(depth: int) -> dict[str, Any]:
    """A payload `depth` objects deep: the shape that once poisoned a collection."""
    payload: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        payload = {"a": payload}
    return payload
