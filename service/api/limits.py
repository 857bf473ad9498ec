"""The server's request limits, where validation and the OpenAPI schema can see them.

Pydantic validates every item of a list before a route could count them: 300,000 bad items took
25 s and 1.6 GB of error objects on the event loop. So lists are counted before their items are
validated (`Counted`), and validation stops at the first bad item (`fail_fast`). Limits come
from settings, so they live in a context variable that the middleware sets for each request;
the same values go into the OpenAPI schema (generated inside a request too), which then says
what the server enforces. Filter limits travel the same way (a filter is validated with its
request body).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from service.api.errors import ApiError
from service.store.filters import FilterLimits


@dataclass(frozen=True)
class RequestLimits:
    max_items: int = 1024
    max_text_chars: int = 10_000
    max_prompts: int = 100_000
    dimensions: tuple[int, ...] = ()  # of the served models: the only `dimensions` accepted
    max_ids: int = 10_000  # point ids per exists / delete request
    filter: FilterLimits = field(default_factory=FilterLimits)


_DEFAULT = RequestLimits()
_current: ContextVar[RequestLimits | None] = ContextVar("request_limits", default=None)


def current() -> RequestLimits:
    return _current.get() or _DEFAULT


def use(limits: RequestLimits) -> None:
    """Set for the current request (its task's context ends with it)."""
    _current.set(limits)


def check_count(count: int, limit: int, param: str) -> None:
    if count == 0:
        raise ApiError(400, "empty_input", f"{param} is empty", param=param)
    if count > limit:
        raise ApiError(
            413, "too_many_items", f"{param} has {count} items, limit {limit}", param=param
        )


@dataclass(frozen=True)
class Counted:
    """Annotation for a request list: at most `limit` (a RequestLimits field) items, counted
    before any item is validated (413), and `maxItems` in the schema."""

    limit: str
    param: str

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        def check(value: Any) -> Any:
            if isinstance(value, list):
                check_count(len(value), getattr(current(), self.limit), self.param)
            return value

        return core_schema.no_info_before_validator_function(check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out.update(minItems=1, maxItems=getattr(current(), self.limit))
        return out


@dataclass(frozen=True)
class Documented:
    """Annotation that puts a limit the route enforces (a RequestLimits field) into the schema:
    e.g. `maxLength` of a text, checked per item so every long one is named."""

    limit: str
    keyword: str = "maxLength"

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        value = getattr(current(), self.limit)
        if value != ():
            out[self.keyword] = list(value) if isinstance(value, tuple) else value
        return out
