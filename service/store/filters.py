"""A small JSON filter language for payloads, mapped onto Qdrant's filters.

    {"must": [{"key": "digit", "match": 7}, {"key": "size", "range": {"gte": 10}}],
     "must_not": [{"key": "tag", "match": {"any": ["x", "y"]}}]}

Validated by pydantic at the edge, so a bad filter is a 422 that names the problem. Two targets
with the same meaning: `qdrant_client.models.Filter` (server, local mode) and `qdrant_edge.Filter`
(the embedded engine).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Dialect:
    """The few constructors that differ between qdrant-client and qdrant-edge."""

    field: Callable[..., Any]
    match_value: Callable[..., Any]
    match_any: Callable[..., Any]
    range: Callable[..., Any]
    filter: Callable[..., Any]
    has_ids: Callable[[Sequence[PointId]], Any]
    value: Callable[[Scalar], Any] = lambda v: v


def _convert(f: PayloadFilter, d: _Dialect, exclude: Sequence[PointId] = ()) -> Any:
    def match_any(key: str, values: list[Scalar]) -> Any:
        bools, ints, strs = _by_type(values)
        parts = [d.field(key=key, match=d.match_value(value=d.value(b))) for b in bools]
        parts += [d.field(key=key, match=d.match_any(any=group)) for group in (ints, strs) if group]
        return parts[0] if len(parts) == 1 else d.filter(should=parts)

    def condition(c: Condition | PayloadFilter) -> Any:
        if isinstance(c, PayloadFilter):
            return _convert(c, d)
        if c.range is not None:
            r = c.range
            return d.field(key=c.key, range=d.range(gt=r.gt, gte=r.gte, lt=r.lt, lte=r.lte))
        if isinstance(c.match, MatchAny):
            return match_any(c.key, c.match.any)
        assert c.match is not None
        return d.field(key=c.key, match=d.match_value(value=d.value(c.match)))

    def convert(items: list[Condition | PayloadFilter] | None) -> list[Any] | None:
        return [condition(c) for c in items] if items else None

    must_not = convert(f.must_not) or []
    if exclude:
        must_not.append(d.has_ids(exclude))
    return d.filter(must=convert(f.must), should=convert(f.should), must_not=must_not or None)


def to_qdrant(f: PayloadFilter, exclude: Sequence[PointId] = ()) -> Any:
    """`qdrant_client.models.Filter`; `exclude` drops these point ids (search by example)."""
    from qdrant_client import models

    dialect = _Dialect(
        field=models.FieldCondition,
        match_value=models.MatchValue,
        match_any=models.MatchAny,
        range=models.Range,
        filter=models.Filter,
        has_ids=lambda ids: models.HasIdCondition(has_id=list(ids)),
    )
    return _convert(f, dialect, exclude)


def _edge_value(v: Scalar) -> Any:
    # qdrant-edge 0.9 reads a Python bool as the integer 1/0 (so `true` would match `1` and never
    # `true`); a numpy bool reaches its boolean variant.
    return np.bool_(v) if isinstance(v, bool) else v


def to_edge(f: PayloadFilter, exclude: Sequence[PointId] = ()) -> Any:
    """`qdrant_edge.Filter` with the same meaning as `to_qdrant`."""
    import qdrant_edge as qe

    dialect = _Dialect(
        field=qe.FieldCondition,
        match_value=qe.MatchValue,
        match_any=qe.MatchAny,
        range=qe.RangeFloat,
        filter=qe.Filter,
        has_ids=lambda ids: qe.HasIdCondition(point_ids=set(ids)),
        value=_edge_value,
    )
    return _convert(f, dialect, exclude)
