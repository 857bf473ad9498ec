"""A small JSON filter language for payloads, mapped onto Qdrant's filters.

    {"must": [{"key": "digit", "match": 7}, {"key": "size", "range": {"gte": 10}}],
     "must_not": [{"key": "tag", "match": {"any": ["x", "y"]}}]}

Validated by pydantic at the edge, so a bad filter is a 422 that names the problem. Two targets
with the same meaning: `qdrant_client.models.Filter` (server, local mode) and `qdrant_edge.Filter`
(the embedded engine).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, model_validator

# StrictBool first: a JSON `true` must stay a bool, never become the integer 1.
Scalar = Union[StrictBool, StrictInt, str]  # noqa: UP007 (pydantic needs the runtime union here)
PointId = int | str
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
# Qdrant's payload paths: word segments (or "quoted"), dots between, [] or [i] for arrays
_SEGMENT = r'(?:[\w-]+|"[^"]*")(?:\[\d*\])*'
KEY_PATTERN = rf"^{_SEGMENT}(?:\.{_SEGMENT})*$"


class MatchAny(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Scalar] = Field(min_length=1, max_length=1024)


class RangeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gt: FiniteFloat | None = None
    gte: FiniteFloat | None = None
    lt: FiniteFloat | None = None
    lte: FiniteFloat | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> RangeSpec:
        if self.gt is None and self.gte is None and self.lt is None and self.lte is None:
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        return self


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(
        min_length=1,
        max_length=256,
        pattern=KEY_PATTERN,
        description='payload key: dots for nesting, [] for arrays, e.g. "meta.tags[]"',
    )
    match: Scalar | MatchAny | None = None
    range: RangeSpec | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        if (self.match is None) == (self.range is None):
            raise ValueError("a condition needs exactly one of 'match' or 'range'")
        return self


class PayloadFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    must: list[Condition | PayloadFilter] | None = Field(default=None, max_length=64)
    should: list[Condition | PayloadFilter] | None = Field(default=None, max_length=64)
    must_not: list[Condition | PayloadFilter] | None = Field(default=None, max_length=64)


def _by_type(values: Sequence[Scalar]) -> tuple[list[bool], list[int], list[str]]:
    """Qdrant's "match any" takes strings or integers, not a mix and not booleans: split."""
    bools = [v for v in values if isinstance(v, bool)]
    ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    strs = [v for v in values if isinstance(v, str)]
    return bools, ints, strs


# --- qdrant-client ------------------------------------------------------------------------------
def to_qdrant(f: PayloadFilter, exclude: Sequence[PointId] = ()) -> Any:
    """`qdrant_client.models.Filter`; `exclude` drops these point ids (search by example)."""
    from qdrant_client import models

    def match_any(key: str, values: list[Scalar]) -> Any:
        bools, ints, strs = _by_type(values)
        parts: list[Any] = [
            models.FieldCondition(key=key, match=models.MatchValue(value=b)) for b in bools
        ]
        if ints:
            parts.append(models.FieldCondition(key=key, match=models.MatchAny(any=ints)))
        if strs:
            parts.append(models.FieldCondition(key=key, match=models.MatchAny(any=strs)))
        return parts[0] if len(parts) == 1 else models.Filter(should=parts)

    def condition(c: Condition | PayloadFilter) -> Any:
        if isinstance(c, PayloadFilter):
            return to_qdrant(c)
        if c.range is not None:
            r = c.range
            return models.FieldCondition(
                key=c.key, range=models.Range(gt=r.gt, gte=r.gte, lt=r.lt, lte=r.lte)
            )
        if isinstance(c.match, MatchAny):
            return match_any(c.key, c.match.any)
        assert c.match is not None
        return models.FieldCondition(key=c.key, match=models.MatchValue(value=c.match))

    def convert(items: list[Condition | PayloadFilter] | None) -> list[Any] | None:
        return [condition(c) for c in items] if items else None

    must_not = convert(f.must_not) or []
    if exclude:
        must_not.append(models.HasIdCondition(has_id=list(exclude)))
    return models.Filter(must=convert(f.must), should=convert(f.should), must_not=must_not or None)


# --- qdrant-edge --------------------------------------------------------------------------------
def _edge_value(v: Scalar) -> Any:
    # qdrant-edge 0.9 reads a Python bool as the integer 1/0 (so `true` would match `1` and never
    # `true`); a numpy bool reaches its boolean variant.
    return np.bool_(v) if isinstance(v, bool) else v


def to_edge(f: PayloadFilter, exclude: Sequence[PointId] = ()) -> Any:
    """`qdrant_edge.Filter` with the same meaning as `to_qdrant`."""
    import qdrant_edge as qe

    def value(key: str, v: Scalar) -> Any:
        return qe.FieldCondition(key=key, match=qe.MatchValue(value=_edge_value(v)))

    def match_any(key: str, values: list[Scalar]) -> Any:
        bools, ints, strs = _by_type(values)
        parts: list[Any] = [value(key, b) for b in bools]
        if ints:
            parts.append(qe.FieldCondition(key=key, match=qe.MatchAny(any=ints)))
        if strs:
            parts.append(qe.FieldCondition(key=key, match=qe.MatchAny(any=strs)))
        return parts[0] if len(parts) == 1 else qe.Filter(should=parts)

    def condition(c: Condition | PayloadFilter) -> Any:
        if isinstance(c, PayloadFilter):
            return to_edge(c)
        if c.range is not None:
            r = c.range
            return qe.FieldCondition(
                key=c.key, range=qe.RangeFloat(gt=r.gt, gte=r.gte, lt=r.lt, lte=r.lte)
            )
        if isinstance(c.match, MatchAny):
            return match_any(c.key, c.match.any)
        assert c.match is not None
        return value(c.key, c.match)

    def convert(items: list[Condition | PayloadFilter] | None) -> list[Any] | None:
        return [condition(c) for c in items] if items else None

    must_not = convert(f.must_not) or []
    if exclude:
        must_not.append(qe.HasIdCondition(point_ids=set(exclude)))
    return qe.Filter(must=convert(f.must), should=convert(f.should), must_not=must_not or None)
