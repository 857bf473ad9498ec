"""Payload filters in Qdrant's own language: the JSON of its REST `Filter`, nothing of our own.

    {"must": [{"key": "kind", "match": {"value": "photo"}},
              {"key": "taken", "range": {"gte": "2024-01-01T00:00:00Z"}}],
     "must_not": [{"has_id": [42]}]}

`parse_filter` reads a request's filter in three steps:
1. bound the work on the raw JSON, before anything recurses into it (pydantic, the translation
   and the engines all do): nesting depth, number of conditions, values inside them;
2. validate with qdrant-client's own `models.Filter` (one grammar, Qdrant's), turning pydantic's
   union-by-union report into one sentence: the JSON path, what was there, the expected shape;
3. the few rules a Qdrant server enforces that the client's models do not (one test per field
   condition, JSON-path keys, id formats, geo ranges, integer widths), so that neither engine
   sees a filter the other would read differently.
The parsed `models.Filter` goes to qdrant-client as is (`to_qdrant`) and is translated
condition by condition for the embedded engine (`to_edge`); `filter_json` is the JSON that
carries it to another process and parses back to an equal filter.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import types
import typing
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Union

import numpy as np
import orjson
from pydantic import BaseModel, ValidationError
from qdrant_client import models

PointId = int | str
Filter = models.Filter
Path = tuple[str | int, ...]

# Qdrant's payload paths: word segments (or "quoted"), dots between, [] or [i] for arrays
_SEGMENT = r'(?:[\w-]+|"[^"]*")(?:\[\d*\])*'
KEY_PATTERN = rf"^{_SEGMENT}(?:\.{_SEGMENT})*$"
_KEY = re.compile(KEY_PATTERN)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_CLAUSES = ("must", "should", "must_not")
_FIELD_TESTS = (
    "match",
    "range",
    "geo_bounding_box",
    "geo_radius",
    "geo_polygon",
    "values_count",
    "is_empty",
    "is_null",
)
# Qdrant's integers: payload values are signed 64-bit, point ids and counts unsigned
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
UINT64_MAX = 2**64 - 1


@dataclass(frozen=True)
class FilterLimits:
    """Work one filter may ask of the engine (settings `max_filter_*`)."""

    max_depth: int = 16
    max_conditions: int = 256
    max_values: int = 16_384


class FilterError(Exception):
    """A filter the service refuses: where (JSON path inside the filter), why, with what status."""

    CODES = frozenset(
        {"invalid_filter", "filter_too_deep", "filter_too_large", "unsupported_filter"}
    )

    def __init__(
        self, path: Path, message: str, status: int = 422, code: str = "invalid_filter"
    ) -> None:
        super().__init__(message)
        self.path, self.message, self.status, self.code = path, message, status, code

    def __str__(self) -> str:
        return f"{json_path(('filter', *self.path))}: {self.message}"


def json_path(parts: Sequence[str | int]) -> str:
    """`("filter", "must", 0, "match")` -> `filter.must[0].match`."""
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


# --- 1. bounds, on the raw JSON ---------------------------------------------------------------
def check_bounds(raw: Any, limits: FilterLimits) -> None:
    """Depth, conditions and values of a filter document, counted with a loop (never recursion)
    and stopped at the first limit passed, so a 10,000-deep or million-condition document costs
    as much as a legal one. Counts what pydantic would walk into, whatever the shape: a clause
    (`must` / `should` / `must_not`, a list or one condition), `min_should.conditions`, a
    condition that is itself a filter and `nested.filter` (one level deeper each)."""
    conditions = values = 0
    stack: list[tuple[Any, int]] = [(raw, 1)]  # (a filter-like object, its depth)
    while stack:
        node, depth = stack.pop()
        if not isinstance(node, dict):
            continue
        min_should = node.get("min_should")
        found = [node.get(clause) for clause in _CLAUSES]
        found.append(min_should.get("conditions") if isinstance(min_should, dict) else None)
        lists = [x if isinstance(x, list) else [x] for x in found if x is not None]
        if not lists:
            continue
        if depth > limits.max_depth:
            raise FilterError(
                (),
                f"nested deeper than {limits.max_depth} levels (the limit, max_filter_depth)",
                code="filter_too_deep",
            )
        conditions += sum(len(x) for x in lists)
        if conditions > limits.max_conditions:
            raise FilterError(
                (),
                f"more than {limits.max_conditions} conditions (the limit, max_filter_conditions)",
                status=413,
                code="filter_too_large",
            )
        for condition in (c for x in lists for c in x):
            values += _leaf_values(condition, limits.max_values - values)
            stack.append((condition, depth + 1))
            nested = condition.get("nested") if isinstance(condition, dict) else None
            if isinstance(nested, dict):
                stack.append((nested.get("filter"), depth + 1))
        if values > limits.max_values:
            raise FilterError(
                (),
                f"more than {limits.max_values} values in its conditions "
                "(the limit, max_filter_values)",
                status=413,
                code="filter_too_large",
            )


def _leaf_values(condition: Any, budget: int) -> int:
    """Members and elements inside one condition, outside its sub-filters (counted up to just
    past `budget`)."""
    if not isinstance(condition, dict):
        return 0
    count = len(condition)
    stack: list[Any] = []
    for key, value in condition.items():
        if key == "nested" and isinstance(value, dict):
            count += len(value)  # its "filter" is walked as a filter
        elif key not in _CLAUSES and key != "min_should" and isinstance(value, dict | list):
            stack.append(value)
    while stack and count <= budget:
        node = stack.pop()
        members = list(node.values()) if isinstance(node, dict) else node
        count += len(members)
        if count <= budget:
            stack += [m for m in members if isinstance(m, dict | list)]
    return count


# --- 2. validation by qdrant-client's models, explained in one sentence -----------------------
@functools.cache
def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a type: unions flattened, None and Annotated metadata dropped."""
    if typing.get_origin(annotation) is Annotated:
        return _members(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return tuple(m for arg in typing.get_args(annotation) for m in _members(arg))
    return () if annotation is type(None) else (annotation,)


@functools.cache
def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


@functools.cache
def _fields(model: type[BaseModel]) -> dict[str, Any]:
    """JSON name -> annotation."""
    return {f.alias or name: f.annotation for name, f in model.model_fields.items()}


_SCALARS = {
    str: "string",
    int: "integer",
    bool: "boolean",
    float: "number",
    dt.datetime: "RFC 3339 datetime",
    dt.date: "date",
    uuid.UUID: "UUID",
}


def _shape(annotation: Any, top: bool = True) -> str:
    """A type in JSON terms: `{"value": boolean | integer | string}`, `[string, …]`."""
    parts: list[str] = []
    for member in _members(annotation):
        if typing.get_origin(member) in (list, Sequence):
            text = f"[{_shape(typing.get_args(member)[0], top=False)}, …]"
        elif _is_model(member) and top:
            fields = [
                f'"{name}": {_shape(ann, top=False)}' if f.is_required() else f'"{name}"?'
                for (name, ann), f in zip(
                    _fields(member).items(), member.model_fields.values(), strict=True
                )
            ]
            text = "{" + ", ".join(fields) + "}"
        elif _is_model(member):
            text = member.__name__
        else:
            text = _SCALARS.get(member, getattr(member, "__name__", str(member)))
        if text not in parts:
            parts.append(text)
    return " | ".join(parts)


@functools.cache
def _plain_union(annotation: Any) -> bool:
    """Alternatives of plain values only (`[string, …] | [integer, …]`): one expected shape."""
    members = _members(annotation)
    return len(members) > 1 and not any(_is_model(m) for m in members)


@dataclass
class _Trace:
    """Where one pydantic error sits: its JSON path, the union branches taken on the way."""

    path: Path
    branches: list[tuple[Path, type[BaseModel]]]
    model: type[BaseModel]  # the object the last step looked into
    annotation: Any  # of the value at `path`


def _trace(loc: Sequence[str | int]) -> _Trace:
    """Follow an error's `loc` through the models; branch tags ("FieldCondition", "list[...]")
    say which alternative of a union pydantic was trying. A union of plain values
    (`[string, …] | [integer, …]`) is one expected shape: the path stops there."""
    annotation: Any = models.Filter
    model: type[BaseModel] = models.Filter
    path: list[str | int] = []
    branches: list[tuple[Path, type[BaseModel]]] = []
    current: Any = models.Filter  # the annotation narrowed to the branch pydantic tried
    for part in loc:
        members = _members(current)
        if _plain_union(current):
            break
        if len(members) == 1:
            current = members[0]
        if _is_model(current):
            model = current
        if isinstance(part, int):
            elements = [typing.get_args(m)[0] for m in members if typing.get_origin(m) is list]
            path.append(part)
            annotation = current = Union[tuple(elements)] if elements else Any  # noqa: UP007
        elif _is_model(current) and part in _fields(current):
            path.append(part)
            annotation = current = _fields(current)[part]
        else:  # a union branch pydantic tried: "FieldCondition", "list[...]", "int", ...
            for member in members:
                if _is_model(member) and member.__name__ == part:
                    branches.append((tuple(path), member))
                    current = member
                elif typing.get_origin(member) is list and part.startswith("list["):
                    current = member
    return _Trace(tuple(path), branches, model, annotation)


def _at(raw: Any, path: Path) -> Any:
    for part in path:
        if isinstance(part, int):
            raw = raw[part] if isinstance(raw, list) and part < len(raw) else None
        else:
            raw = raw.get(part) if isinstance(raw, dict) else None
    return raw


def _intended(raw: Any, candidates: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """Which union branches an object meant: those whose fields cover most of its keys."""
    if not isinstance(raw, dict):
        return candidates

    def fit(model: type[BaseModel]) -> tuple[int, int]:
        keys, known = set(raw), set(_fields(model))
        return len(keys & known), -len(keys - known)

    best = max(fit(m) for m in candidates)
    return {m for m in candidates if fit(m) == best}


def _brief(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "…"


def _explain(exc: ValidationError, raw: Any) -> FilterError:
    """Pydantic reports every union branch that failed; keep the branches the document meant
    (by its keys), then the deepest problem, and say it in one sentence."""
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    traces = [_trace(e["loc"]) for e in errors]
    seen: dict[Path, dict[type[BaseModel], None]] = {}  # in the union's order
    for trace in traces:
        for prefix, model in trace.branches:
            seen.setdefault(prefix, {})[model] = None
    meant = {prefix: _intended(_at(raw, prefix), set(found)) for prefix, found in seen.items()}
    kept = [
        (e, t)
        for e, t in zip(errors, traces, strict=True)
        if all(model in meant[prefix] for prefix, model in t.branches)
    ] or list(zip(errors, traces, strict=True))
    error, trace = max(kept, key=lambda pair: len(pair[1].path))
    for prefix, _ in trace.branches:  # an object no alternative knows a single key of
        here = _at(raw, prefix)
        if isinstance(here, dict) and not any(set(here) & set(_fields(m)) for m in seen[prefix]):
            shape = " | ".join(_shape(m) for m in seen[prefix])
            return FilterError(prefix, f"got {_brief(here)}, expected {shape}")
    if error["type"] == "extra_forbidden":
        return FilterError(
            trace.path,
            f'unknown field "{error["loc"][-1]}", expected {_shape(trace.model)}',
        )
    if error["type"] == "missing":
        return FilterError(trace.path, f"missing, expected {_shape(trace.annotation)}")
    # several branches may fail at the same place (`range`: a number or a datetime)
    alternatives = tuple(t.annotation for _, t in kept if t.path == trace.path)
    expected = _shape(Union[alternatives])  # noqa: UP007
    return FilterError(trace.path, f"got {_brief(_at(raw, trace.path))}, expected {expected}")


def _valid(doc: Any) -> bool:
    try:
        models.Filter.model_validate_json(orjson.dumps(doc), strict=True)
    except ValidationError:
        return False
    return True


def _alone(raw: dict[str, Any]) -> Iterator[tuple[Path, Any, dict[str, Any]]]:
    """Each condition of a filter, with a filter holding just that condition at its place."""
    for clause in _CLAUSES:
        items = raw.get(clause)
        if isinstance(items, list):
            for i, item in enumerate(items):  # {} (an empty filter) keeps the index
                yield (clause, i), item, {clause: [{}] * i + [item]}
        elif items is not None:
            yield (clause,), items, {clause: items}
    min_should = raw.get("min_should")
    if isinstance(min_should, dict) and isinstance(min_should.get("conditions"), list):
        for i, item in enumerate(min_should["conditions"]):
            conditions = [{}] * i + [item]
            yield ("min_should", "conditions", i), item, {"min_should": {"conditions": conditions}}


def _smallest_failure(raw: Any, prefix: Path = ()) -> tuple[Path, Any] | None:
    """The first condition that fails on its own (inside a sub-filter, the first of its own), as
    a filter holding only it, and where that filter sits; None if `raw` is a valid filter.
    Pydantic reports every union branch of every bad condition: 256 bad conditions make
    thousands of errors to sort, one makes a few dozen."""
    if not isinstance(raw, dict):
        return prefix, raw
    for where, item, alone in _alone(raw):
        inner: Any = None
        if isinstance(item, dict) and any(k in item for k in (*_CLAUSES, "min_should")):
            inner, at = item, where
        elif isinstance(item, dict) and isinstance(item.get("nested"), dict):
            inner, at = item["nested"].get("filter"), (*where, "nested", "filter")
        if isinstance(inner, dict) and (found := _smallest_failure(inner, (*prefix, *at))):
            return found
        if not _valid({"must": [item]}):
            return prefix, alone
    return None if _valid(raw) else (prefix, raw)


def _refusal(raw: Any) -> FilterError:
    """Why a filter fails validation, in one sentence about its first bad condition."""
    prefix, piece = _smallest_failure(raw) or ((), raw)
    try:
        models.Filter.model_validate_json(orjson.dumps(piece), strict=True)
    except ValidationError as exc:
        err = _explain(exc, piece)
        return FilterError((*prefix, *err.path), err.message)
    raise AssertionError(f"a failing piece of a filter passes: {piece!r}")


# --- 3. what a Qdrant server checks beyond the client's models --------------------------------
def _conditions(flt: models.Filter, path: Path) -> Iterator[tuple[Any, Path]]:
    for clause in _CLAUSES:
        items = getattr(flt, clause)
        if isinstance(items, list):
            yield from ((c, (*path, clause, i)) for i, c in enumerate(items))
        elif items is not None:
            yield items, (*path, clause)
    if flt.min_should is not None:
        conditions = flt.min_should.conditions
        yield from ((c, (*path, "min_should", "conditions", i)) for i, c in enumerate(conditions))


def is_payload_key(key: str) -> bool:
    """A payload path the engines accept ("a", "a.b", "a[].b"), at most 256 characters."""
    return len(key) <= 256 and _KEY.match(key) is not None


def _check_key(key: str, path: Path) -> None:
    if not is_payload_key(key):
        raise FilterError(
            path, f'got {_brief(key)}, expected a payload key such as "a", "a.b", "a[].b"'
        )


def _check_point(p: models.GeoPoint, path: Path) -> None:
    if not (-90 <= p.lat <= 90 and -180 <= p.lon <= 180):
        got = _brief(p.model_dump())
        raise FilterError(path, f"got {got}, expected lat in [-90, 90] and lon in [-180, 180]")


def _check_ring(ring: models.GeoLineString, path: Path) -> None:
    for i, p in enumerate(ring.points):
        _check_point(p, (*path, "points", i))
    if len(ring.points) < 4 or ring.points[0] != ring.points[-1]:
        raise FilterError(
            (*path, "points"), "a polygon ring needs at least 4 points, the last equal to the first"
        )


def _check_ints(values: Any, path: Path, low: int, high: int) -> None:
    for value in values if isinstance(values, list) else [values]:
        if isinstance(value, int) and not isinstance(value, bool) and not low <= value <= high:
            raise FilterError(path, f"got {value}, expected an integer in [{low}, {high}]")


def _check_field(c: models.FieldCondition, path: Path, raw: Any) -> None:
    _check_key(c.key, (*path, "key"))
    given = [name for name in _FIELD_TESTS if getattr(c, name) is not None]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        raise FilterError(
            path, f"a field condition takes exactly one of {', '.join(_FIELD_TESTS)} (got {found})"
        )
    m = c.match
    if isinstance(m, models.MatchValue):
        _check_ints(m.value, (*path, "match", "value"), INT64_MIN, INT64_MAX)
    elif isinstance(m, models.MatchAny):
        _check_ints(m.any, (*path, "match", "any"), INT64_MIN, INT64_MAX)
    elif isinstance(m, models.MatchExcept):
        _check_ints(m.except_, (*path, "match", "except"), INT64_MIN, INT64_MAX)
    if isinstance(c.range, models.DatetimeRange):
        for bound in ("lt", "gt", "lte", "gte"):  # pydantic also reads "5" as a Unix time
            written = _at(raw, (*path, "range", bound))
            if written is not None and not _DATE.match(str(written)):
                raise FilterError(
                    (*path, "range", bound),
                    f"got {_brief(written)}, expected number | RFC 3339 datetime | date",
                )
    if c.values_count is not None:
        vc = c.values_count
        _check_ints([vc.lt, vc.gt, vc.lte, vc.gte], (*path, "values_count"), 0, UINT64_MAX)
    if c.geo_bounding_box is not None:
        _check_point(c.geo_bounding_box.top_left, (*path, "geo_bounding_box", "top_left"))
        _check_point(c.geo_bounding_box.bottom_right, (*path, "geo_bounding_box", "bottom_right"))
    if c.geo_radius is not None:
        _check_point(c.geo_radius.center, (*path, "geo_radius", "center"))
        if c.geo_radius.radius < 0:
            raise FilterError((*path, "geo_radius", "radius"), "expected a radius >= 0 (meters)")
    if c.geo_polygon is not None:
        _check_ring(c.geo_polygon.exterior, (*path, "geo_polygon", "exterior"))
        for i, ring in enumerate(c.geo_polygon.interiors or []):
            _check_ring(ring, (*path, "geo_polygon", "interiors", i))


def _check_id(pid: Any, path: Path) -> None:
    if isinstance(pid, int) and 0 <= pid <= UINT64_MAX:
        return
    try:
        uuid.UUID(str(pid))
    except ValueError:
        raise FilterError(
            path, f"got {_brief(pid)}, expected an unsigned integer or a UUID"
        ) from None


def check_rules(flt: models.Filter, raw: Any, path: Path = ()) -> None:
    """Qdrant server's own rules that `models.Filter` leaves out (depth is already bounded);
    `raw` is the JSON `flt` was parsed from."""
    if flt.min_should is not None and flt.min_should.min_count < 1:
        raise FilterError((*path, "min_should", "min_count"), "expected an integer >= 1")
    for c, where in _conditions(flt, path):
        if isinstance(c, models.Filter):
            check_rules(c, raw, where)
        elif isinstance(c, models.FieldCondition):
            _check_field(c, where, raw)
        elif isinstance(c, models.IsEmptyCondition):
            _check_key(c.is_empty.key, (*where, "is_empty", "key"))
        elif isinstance(c, models.IsNullCondition):
            _check_key(c.is_null.key, (*where, "is_null", "key"))
        elif isinstance(c, models.HasIdCondition):
            for i, pid in enumerate(c.has_id):
                _check_id(pid, (*where, "has_id", i))
        elif isinstance(c, models.NestedCondition):
            _check_key(c.nested.key, (*where, "nested", "key"))
            check_rules(c.nested.filter, raw, (*where, "nested", "filter"))
        elif isinstance(c, models.SliceCondition):
            s = c.slice
            if not 0 <= s.index < s.total:
                raise FilterError((*where, "slice"), "expected total >= 1 and 0 <= index < total")


def parse_filter(raw: Any, limits: FilterLimits | None = None) -> models.Filter:
    """A request's filter JSON, bounded and validated (raises `FilterError`)."""
    if isinstance(raw, models.Filter):
        raw = filter_json(raw)
    check_bounds(raw, limits or FilterLimits())
    try:
        text = orjson.dumps(raw)
    except orjson.JSONEncodeError as exc:  # from Python callers only: HTTP bodies are JSON
        raise FilterError((), f"not JSON: {exc}") from None
    try:
        # strict, from JSON: a bound is a number or an RFC 3339 string, never a Unix time given
        # as an integer; `true` is not 1; as a Qdrant server reads it
        flt = models.Filter.model_validate_json(text, strict=True)
    except ValidationError:
        raise _refusal(raw) from None
    check_rules(flt, raw)
    return flt


def filter_json(flt: models.Filter) -> dict[str, Any]:
    """The JSON of a parsed filter (Qdrant's, `except` spelled so), for another process."""
    return flt.model_dump(mode="json", exclude_none=True, by_alias=True)


# --- translations ------------------------------------------------------------------------------
def _with_exclusion(flt: models.Filter | None, exclude: Sequence[PointId]) -> models.Filter | None:
    if not exclude:
        return flt
    return models.Filter(
        must=[flt] if flt is not None else None,
        must_not=[models.HasIdCondition(has_id=list(exclude))],
    )


def to_qdrant(flt: models.Filter | None, exclude: Sequence[PointId] = ()) -> models.Filter | None:
    """For qdrant-client (server, local mode): the parsed filter itself; `exclude` drops these
    point ids (search by example leaves the example out)."""
    return _with_exclusion(flt, exclude)


def to_edge(flt: models.Filter | None, exclude: Sequence[PointId] = ()) -> Any:
    """The same filter as Qdrant Edge objects (`qdrant_edge.Filter`), or None."""
    full = _with_exclusion(flt, exclude)
    return None if full is None else _edge_filter(full)


def _edge_filter(f: models.Filter) -> Any:
    import qdrant_edge as qe

    def clause(items: Any) -> list[Any] | None:
        if items is None:
            return None
        return [_edge_condition(c) for c in (items if isinstance(items, list) else [items])]

    min_should = None
    if f.min_should is not None:
        conditions = [_edge_condition(c) for c in f.min_should.conditions]
        min_should = qe.MinShould(conditions=conditions, min_count=f.min_should.min_count)
    return qe.Filter(
        must=clause(f.must),
        should=clause(f.should),
        must_not=clause(f.must_not),
        min_should=min_should,
    )


def _edge_condition(c: Any) -> Any:
    import qdrant_edge as qe

    if isinstance(c, models.Filter):
        return _edge_filter(c)
    if isinstance(c, models.FieldCondition):
        return _edge_field(c)
    if isinstance(c, models.IsEmptyCondition):
        return qe.IsEmptyCondition(key=c.is_empty.key)
    if isinstance(c, models.IsNullCondition):
        return qe.IsNullCondition(key=c.is_null.key)
    if isinstance(c, models.HasIdCondition):
        return qe.HasIdCondition(point_ids={i if isinstance(i, int) else str(i) for i in c.has_id})
    if isinstance(c, models.HasVectorCondition):
        return qe.HasVectorCondition(vector=c.has_vector)
    if isinstance(c, models.NestedCondition):
        return qe.NestedCondition(key=c.nested.key, filter=_edge_filter(c.nested.filter))
    if isinstance(c, models.SliceCondition):
        # in the engine, missing from its type stubs
        return qe.SliceCondition(total=c.slice.total, index=c.slice.index)  # type: ignore[attr-defined]
    name = type(c).__name__
    raise FilterError((), f"the embedded engine has no {name}", 400, "unsupported_filter")


def _edge_value(v: Any) -> Any:
    # qdrant-edge reads a Python bool as the integer 1/0 (so `true` would match `1` and never
    # `true`); a numpy bool reaches its boolean variant.
    return np.bool_(v) if isinstance(v, bool) else v


def _rfc3339(t: dt.datetime | dt.date | None) -> str | None:
    """Qdrant reads a datetime without a zone as UTC, and a date as its midnight (UTC)."""
    if t is None:
        return None
    if not isinstance(t, dt.datetime):
        t = dt.datetime.combine(t, dt.time())
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.timezone.utc)
    return t.isoformat()


def _edge_field(c: models.FieldCondition) -> Any:
    import qdrant_edge as qe

    def point(p: models.GeoPoint) -> Any:
        return qe.GeoPoint(lon=p.lon, lat=p.lat)

    m, r = c.match, c.range
    kwargs: dict[str, Any] = {}
    if isinstance(m, models.MatchValue):
        kwargs["match"] = qe.MatchValue(_edge_value(m.value))
    elif isinstance(m, models.MatchAny):
        kwargs["match"] = qe.MatchAny(any=m.any)
    elif isinstance(m, models.MatchExcept):
        kwargs["match"] = qe.MatchExcept(m.except_)  # its keyword is `except`
    elif isinstance(m, models.MatchText):
        kwargs["match"] = qe.MatchText(text=m.text)
    elif isinstance(m, models.MatchTextAny):
        kwargs["match"] = qe.MatchTextAny(text_any=m.text_any)
    elif isinstance(m, models.MatchPhrase):
        kwargs["match"] = qe.MatchPhrase(phrase=m.phrase)
    elif isinstance(m, models.MatchPrefix):
        kwargs["match"] = qe.MatchPrefix(prefix=m.prefix)
    elif isinstance(m, models.MatchSubstring):
        kwargs["match"] = qe.MatchSubstring(substring=m.substring)
    if isinstance(r, models.Range):
        kwargs["range"] = qe.RangeFloat(gte=r.gte, gt=r.gt, lte=r.lte, lt=r.lt)
    elif isinstance(r, models.DatetimeRange):
        kwargs["range"] = qe.RangeDateTime(
            gte=_rfc3339(r.gte), gt=_rfc3339(r.gt), lte=_rfc3339(r.lte), lt=_rfc3339(r.lt)
        )
    if c.values_count is not None:
        vc = c.values_count
        kwargs["values_count"] = qe.ValuesCount(lt=vc.lt, gt=vc.gt, lte=vc.lte, gte=vc.gte)
    if c.geo_bounding_box is not None:
        box = c.geo_bounding_box
        kwargs["geo_bounding_box"] = qe.GeoBoundingBox(point(box.top_left), point(box.bottom_right))
    if c.geo_radius is not None:
        kwargs["geo_radius"] = qe.GeoRadius(point(c.geo_radius.center), c.geo_radius.radius)
    if c.geo_polygon is not None:
        poly = c.geo_polygon
        kwargs["geo_polygon"] = qe.GeoPolygon(
            exterior=[point(p) for p in poly.exterior.points],
            interiors=[[point(p) for p in ring.points] for ring in poly.interiors or []] or None,
        )
    if c.is_empty is not None:
        kwargs["is_empty"] = c.is_empty
    if c.is_null is not None:
        kwargs["is_null"] = c.is_null
    return qe.FieldCondition(key=c.key, **kwargs)
