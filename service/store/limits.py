"""What a point's payload may hold: only what the engine stores and reads back as sent.

Qdrant Edge acknowledges a payload nested 128 levels deep and then cannot read it back
(`recursion limit exceeded`): the collection's searches fail and, after a crash, its WAL no
longer replays. Integers beyond 64 bits become floats. So payloads are refused before anything
is written: nesting, size and key count under limits (settings), integers within int64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from service.store.filters import INT64_MAX, INT64_MIN
from service.store.types import StoreError


@dataclass(frozen=True)
class PayloadLimits:
    max_bytes: int = 256 * 1024
    max_depth: int = 32
    max_keys: int = 4096


def _walk(payload: dict[str, Any], limits: PayloadLimits) -> StoreError | None:
    """Depth, key count and integer range, without recursion (a payload may be deeper than
    Python's own limit) and stopping at the first problem."""
    stack: list[tuple[Any, int]] = [(payload, 1)]
    keys = 0
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limits.max_depth:
                return StoreError(
                    422,
                    "payload_too_deep",
                    f"payload nests objects and arrays more than {limits.max_depth} levels deep "
                    "(max_payload_depth)",
                )
            if isinstance(value, dict):
                keys += len(value)
                if keys > limits.max_keys:
                    return StoreError(
                        413,
                        "payload_too_many_keys",
                        f"payload has more than {limits.max_keys} keys (max_payload_keys)",
                    )
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(value, int) and not INT64_MIN <= value <= INT64_MAX:  # bools are in
            return StoreError(
                422,
                "payload_integer_out_of_range",
                f"payload integer {value} is outside the 64-bit range Qdrant stores "
                "(-2^63 .. 2^63-1); send it as a string",
            )
    return None


def payload_problem(payload: dict[str, Any], limits: PayloadLimits) -> StoreError | None:
    """None if the payload can be stored, else the error naming the limit it breaks."""
    try:
        size = len(orjson.dumps(payload))
    except orjson.JSONEncodeError as exc:  # nested past orjson's limit, or a huge integer
        return _walk(payload, limits) or StoreError(422, "invalid_payload", f"payload: {exc}")
    if size > limits.max_bytes:
        return StoreError(
            413,
            "payload_too_large",
            f"payload is {size} bytes as JSON, over the {limits.max_bytes} limit "
            "(max_payload_bytes)",
        )
    return _walk(payload, limits)


def has_ambiguous_number(payload: dict[str, Any]) -> bool:
    """A float of magnitude 2^63 or more: the fast JSON parser turns integer literals beyond 64
    bits into such floats, so only the exact parse can tell a float from a huge integer."""
    stack: list[Any] = [payload]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
        elif isinstance(value, float) and abs(value) >= 2.0**63:
            return True
    return False
