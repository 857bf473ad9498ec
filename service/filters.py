"""A small JSON filter language for payloads, mapped onto Qdrant's `Filter`.

    {"must": [{"key": "digit", "match": 7}, {"key": "size", "range": {"gte": 10}}],
     "must_not": [{"key": "tag", "match": {"any": ["x", "y"]}}]}

Validated by pydantic at the edge, so a bad filter is a 422 that names the problem.
"""

from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict, Field, model_validator
from qdrant_client import models

Scalar = Union[str, int, bool]  # noqa: UP007 (pydantic needs the runtime union here)


class MatchAny(BaseModel):
    model_config = ConfigDict(extra="forbid")
    any: list[Scalar] = Field(min_length=1)


class RangeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @model_validator(mode="after")
    def _some_bound(self) -> RangeSpec:
        if self.gt is None and self.gte is None and self.lt is None and self.lte is None:
            raise ValueError("a range needs at least one of gt, gte, lt, lte")
        return self


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")
    key: str = Field(min_length=1, max_length=256, description="payload key, dots for nesting")
    match: Scalar | MatchAny | None = None
    range: RangeSpec | None = None

    @model_validator(mode="after")
    def _one_test(self) -> Condition:
        if (self.match is None) == (self.range is None):
            raise ValueError("a condition needs exactly one of 'match' or 'range'")
        return self


class PayloadFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    must: list[Condition | PayloadFilter] | None = Field(None, max_length=64)
    should: list[Condition | PayloadFilter] | None = Field(None, max_length=64)
    must_not: list[Condition | PayloadFilter] | None = Field(None, max_length=64)


def _condition(c: Condition | PayloadFilter) -> models.Condition:
    if isinstance(c, PayloadFilter):
        return to_qdrant(c)
    if c.range is not None:
        r = c.range
        return models.FieldCondition(
            key=c.key, range=models.Range(gt=r.gt, gte=r.gte, lt=r.lt, lte=r.lte)
        )
    if isinstance(c.match, MatchAny):
        return models.FieldCondition(key=c.key, match=models.MatchAny(any=c.match.any))  # type: ignore[arg-type]
    return models.FieldCondition(key=c.key, match=models.MatchValue(value=c.match))  # type: ignore[arg-type]


def to_qdrant(f: PayloadFilter) -> models.Filter:
    def convert(items: list[Condition | PayloadFilter] | None) -> list[models.Condition] | None:
        return [_condition(c) for c in items] if items else None

    return models.Filter(
        must=convert(f.must), should=convert(f.should), must_not=convert(f.must_not)
    )
