"""Payloads and Qdrant filter documents shared by the filter tests: every kind of condition
the REST `Filter` has, over payloads of every JSON type (keywords, integers, floats, bools,
arrays, nested objects, datetimes in several forms, geo points, nulls, empty arrays, text)."""

from __future__ import annotations

import uuid
from typing import Any

N = 40
U1, U2 = str(uuid.UUID(int=101)), str(uuid.UUID(int=202))
IDS: list[int | str] = [*range(1, N - 1), U1, U2]  # 38 integer ids, 2 UUIDs
KINDS = ["note", "photo", "Note", "video"]
TEXTS = [
    "a red fox jumps over the lazy dog",
    "The quick brown fox",
    "lazy afternoon, red wine",
    "dog days of summer",
    "",
]
# payload datetimes in the forms Qdrant reads: RFC 3339 (Z, offset, fraction), no zone, a date
STAMPS = [
    "2024-01-{d:02d}T10:00:00Z",
    "2024-01-{d:02d}T10:00:00+02:00",
    "2024-01-{d:02d}T10:00:00.250Z",
    "2024-01-{d:02d}T10:00:00",
    "2024-01-{d:02d}",
]
MAYBE: list[Any] = [None, "absent", [], [None], 1, [1, None], {}, "x"]


def payload(i: int) -> dict[str, Any]:
    p: dict[str, Any] = {
        "kind": KINDS[i % 4],
        "n": i,
        "x": i / 4,
        "neg": -i,
        "flag": i % 3 == 0,
        "tags": [["red", "blue"], ["blue"], [], ["green", "red", "blue"]][i % 4],
        "nums": [[1, 2], [3], [], [2, 5, 8]][i % 4],
        "meta": {"k": i % 5, "owner": {"name": ["ann", "bob", "cy"][i % 3]}},
        "items": (
            [{"name": "a", "qty": i % 4}, {"name": "b", "qty": (i + 1) % 4}]
            if i % 2
            else [{"name": "c", "qty": i % 3}]
        ),
        "ts": STAMPS[i % len(STAMPS)].format(d=1 + i % 28),
        "loc": {"lat": -40 + 2 * i, "lon": -20 + 1.5 * i},
        "text": TEXTS[i % len(TEXTS)],
        "mixed": [i, str(i), i % 2 == 0, i + 0.5][i % 4],
    }
    maybe = MAYBE[i % len(MAYBE)]
    if maybe != "absent":
        p["maybe"] = maybe
    if i % 6 == 0:
        p["places"] = [{"lat": 10, "lon": 10}, {"lat": -10, "lon": 100}]
    return p


PAYLOADS = [payload(i) for i in range(N)]
BOX = {"top_left": {"lat": 0, "lon": -20}, "bottom_right": {"lat": -30, "lon": 0}}
SQUARE = [
    {"lat": -30, "lon": -15},
    {"lat": 0, "lon": -15},
    {"lat": 0, "lon": 15},
    {"lat": -30, "lon": 15},
    {"lat": -30, "lon": -15},
]
HOLE = [
    {"lat": -20, "lon": -5},
    {"lat": -10, "lon": -5},
    {"lat": -10, "lon": 5},
    {"lat": -20, "lon": 5},
    {"lat": -20, "lon": -5},
]


def key(k: str, **test: Any) -> dict[str, Any]:
    return {"key": k, **test}


def match(k: str, **m: Any) -> dict[str, Any]:
    return {"key": k, "match": m}


# name -> filter document; every kind the issue lists, several payload types each
FILTERS: dict[str, dict[str, Any]] = {
    # match value: keyword (case-sensitive), integer, bool, on arrays, nested keys, mixed types
    "match_keyword": {"must": [match("kind", value="note")]},
    "match_keyword_case": {"must": [match("kind", value="Note")]},
    "match_int": {"must": [match("n", value=7)]},
    "match_int_not_float": {"must": [match("x", value=2)]},  # 2.0 is a float: never matched
    "match_true": {"must": [match("flag", value=True)]},
    "match_false": {"must": [match("flag", value=False)]},
    "match_bool_not_int": {"must": [match("mixed", value=True)]},
    "match_int_not_bool": {"must": [match("mixed", value=1)]},  # mixed is true at i = 2, 6, ...
    "match_int_mixed": {"must": [match("mixed", value=4)]},
    "match_str_not_int": {"must": [match("mixed", value="5")]},
    "match_array_element": {"must": [match("tags", value="green")]},
    "match_int_array": {"must": [match("nums", value=2)]},
    "match_nested_key": {"must": [match("meta.owner.name", value="bob")]},
    "match_array_path": {"must": [match("items[].name", value="b")]},
    "match_array_index": {"must": [match("items[0].name", value="c")]},
    "match_missing_key": {"must": [match("nope", value="x")]},
    # match any / except
    "any_keywords": {"must": [match("kind", any=["note", "video"])]},
    "any_ints": {"must": [match("n", any=[1, 2, 3, 30, 99])]},
    "any_on_array": {"must": [match("tags", any=["green", "nothing"])]},
    "any_empty": {"must": [match("kind", any=[])]},
    "except_keywords": {"must": [match("kind", **{"except": ["note", "photo"]})]},
    "except_ints": {"must": [match("meta.k", **{"except": [0, 1, 2]})]},
    "except_on_array": {"must": [match("tags", **{"except": ["blue"]})]},
    "except_on_null": {"must": [match("maybe", **{"except": [2]})]},
    # full text (no text index: whole words, lower case, order-free) and its relatives
    "text_word": {"must": [match("text", text="fox")]},
    "text_two_words": {"must": [match("text", text="red lazy")]},
    "text_case": {"must": [match("text", text="QUICK")]},
    "text_any": {"must": [match("text", text_any="wine summer")]},
    "phrase": {"must": [match("text", phrase="lazy dog")]},
    "prefix": {"must": [match("kind", prefix="no")]},
    "substring": {"must": [match("text", substring="ox")]},
    # range: integers, floats, negatives, mixed-type keys, arrays, datetimes
    "range_int": {"must": [key("n", range={"gte": 10, "lt": 20})]},
    "range_float": {"must": [key("x", range={"gt": 2.25, "lte": 5})]},
    "range_negative": {"must": [key("neg", range={"gte": -5})]},
    "range_mixed": {"must": [key("mixed", range={"lt": 12})]},  # bools and strings excluded
    "range_array": {"must": [key("nums", range={"gte": 5})]},
    "range_open": {"must": [key("n", range={})]},
    "range_datetime": {"must": [key("ts", range={"gte": "2024-01-10T00:00:00Z"})]},
    "range_datetime_offset": {
        "must": [key("ts", range={"gt": "2024-01-05T09:00:00+01:00", "lt": "2024-01-15"})]
    },
    "range_datetime_naive": {"must": [key("ts", range={"lte": "2024-01-08T10:00:00"})]},
    "range_date": {"must": [key("ts", range={"gte": "2024-01-20"})]},
    # values_count
    "values_count_gte2": {"must": [key("tags", values_count={"gte": 2})]},
    "values_count_lt1": {"must": [key("tags", values_count={"lt": 1})]},
    "values_count_scalar": {"must": [key("kind", values_count={"gt": 0, "lte": 1})]},
    "values_count_nested": {"must": [key("items", values_count={"gte": 2})]},
    # geo
    "geo_box": {"must": [key("loc", geo_bounding_box=BOX)]},
    "geo_radius": {
        "must": [key("loc", geo_radius={"center": {"lat": -20, "lon": 0}, "radius": 1.5e6})]
    },
    "geo_polygon": {"must": [key("loc", geo_polygon={"exterior": {"points": SQUARE}})]},
    "geo_polygon_hole": {
        "must": [
            key(
                "loc",
                geo_polygon={"exterior": {"points": SQUARE}, "interiors": [{"points": HOLE}]},
            )
        ]
    },
    "geo_array": {
        "must": [key("places", geo_radius={"center": {"lat": 10, "lon": 10}, "radius": 1000})]
    },
    # empty / null, as conditions and as field-condition flags
    "is_empty": {"must": [{"is_empty": {"key": "maybe"}}]},
    "is_empty_tags": {"must": [{"is_empty": {"key": "tags"}}]},
    "is_null": {"must": [{"is_null": {"key": "maybe"}}]},
    "not_is_null": {"must_not": [{"is_null": {"key": "maybe"}}]},
    "field_is_empty_true": {"must": [key("maybe", is_empty=True)]},
    "field_is_empty_false": {"must": [key("maybe", is_empty=False)]},
    "field_is_null_true": {"must": [key("maybe", is_null=True)]},
    "field_is_null_false": {"must": [key("maybe", is_null=False)]},
    # ids
    "has_id": {"must": [{"has_id": [1, 5, 9, U1, 1000]}]},
    "not_has_id": {"must_not": [{"has_id": [2, 3, U2]}]},
    "has_id_uuid_upper": {"must": [{"has_id": [U1.upper()]}]},
    # nested: conditions on the same element of an array of objects
    "nested": {
        "must": [
            {
                "nested": {
                    "key": "items",
                    "filter": {"must": [match("name", value="a"), key("qty", range={"gte": 2})]},
                }
            }
        ]
    },
    "nested_brackets": {
        "must": [{"nested": {"key": "items[]", "filter": {"must": [match("name", value="c")]}}}]
    },
    "nested_must_not": {
        "must_not": [
            {"nested": {"key": "items", "filter": {"must": [key("qty", range={"lt": 1})]}}}
        ]
    },
    # boolean structure
    "should": {"should": [match("n", value=1), match("kind", value="video")]},
    "should_single_object": {"should": match("n", value=3)},
    "must_and_should": {
        "must": [key("n", range={"lt": 20})],
        "should": [match("flag", value=True), match("tags", value="green")],
    },
    "must_not": {"must_not": [match("kind", value="note"), key("n", range={"gt": 30})]},
    "empty_should": {"should": [], "must": [key("n", range={"lt": 5})]},
    "min_should": {
        "min_should": {
            "conditions": [
                match("flag", value=True),
                match("tags", value="red"),
                key("n", range={"lt": 15}),
            ],
            "min_count": 2,
        }
    },
    "filter_in_filter": {
        "should": [
            {"must": [match("kind", value="photo"), key("n", range={"gt": 20})]},
            {"must_not": [key("n", range={"gt": 2})]},
        ]
    },
    "deep": {"must": [{"must": [{"must": [{"should": [match("meta.k", value=4)]}]}]}]},
    "empty_filter": {},
    "slice": {"must": [{"slice": {"total": 3, "index": 1}}]},
    "has_vector": {"must": [{"has_vector": ""}]},
}


# filters whose point is that they select nothing, or everything (true is not 1, 2.0 is not 2, ...)
ALL_OR_NOTHING = {
    "match_int_not_float",
    "match_int_not_bool",
    "match_missing_key",
    "any_empty",
    "range_open",
    "values_count_scalar",
    "empty_filter",
    "has_vector",
}


# kind -> (filter, payload of a point it keeps, payload of a point it must exclude): the pair
# differs only in what the condition is about
EXCLUSIONS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = {
    "match value: keyword, case-sensitive": (
        {"must": [match("k", value="note")]},
        {"k": "note"},
        {"k": "Note"},
    ),
    "match value: true is not 1": ({"must": [match("v", value=True)]}, {"v": True}, {"v": 1}),
    "match value: 1 is not true": ({"must": [match("v", value=1)]}, {"v": 1}, {"v": True}),
    "match value: in an array": ({"must": [match("v", value=2)]}, {"v": [1, 2]}, {"v": [1, 3]}),
    "match any": ({"must": [match("v", any=["a", "b"])]}, {"v": "b"}, {"v": "c"}),
    "match except": ({"must": [match("v", **{"except": ["a"]})]}, {"v": "b"}, {"v": "a"}),
    "match except: null is no value": (
        {"must": [match("v", **{"except": ["a"]})]},
        {"v": "b"},
        {"v": None},
    ),
    "match text: whole words": ({"must": [match("t", text="fox")]}, {"t": "A fox"}, {"t": "foxes"}),
    "match text_any": ({"must": [match("t", text_any="cat fox")]}, {"t": "a fox"}, {"t": "a dog"}),
    "match phrase: in order": (
        {"must": [match("t", phrase="lazy dog")]},
        {"t": "the lazy dog"},
        {"t": "the dog is lazy"},
    ),
    "match prefix": ({"must": [match("k", prefix="no")]}, {"k": "note"}, {"k": "a note"}),
    "match substring": ({"must": [match("k", substring="ot")]}, {"k": "note"}, {"k": "nope"}),
    "range: bounds": ({"must": [key("n", range={"gte": 10, "lt": 20})]}, {"n": 10}, {"n": 20}),
    "range: a bool is no number": ({"must": [key("n", range={"lt": 5})]}, {"n": 0}, {"n": False}),
    "range: datetime, zones compared": (
        {"must": [key("ts", range={"gte": "2024-01-10T00:00:00Z"})]},
        {"ts": "2024-01-10T00:00:00Z"},
        {"ts": "2024-01-10T00:59:59+01:00"},
    ),
    "values_count": ({"must": [key("v", values_count={"gte": 2})]}, {"v": [1, 2]}, {"v": [1]}),
    "geo_bounding_box": (
        {"must": [key("p", geo_bounding_box=BOX)]},
        {"p": {"lat": -10, "lon": -10}},
        {"p": {"lat": -10, "lon": 10}},
    ),
    "geo_radius": (
        {"must": [key("p", geo_radius={"center": {"lat": 0, "lon": 0}, "radius": 200_000})]},
        {"p": {"lat": 1, "lon": 1}},
        {"p": {"lat": 2, "lon": 2}},
    ),
    "geo_polygon: not in its hole": (
        {
            "must": [
                key(
                    "p",
                    geo_polygon={"exterior": {"points": SQUARE}, "interiors": [{"points": HOLE}]},
                )
            ]
        },
        {"p": {"lat": -25, "lon": 0}},
        {"p": {"lat": -15, "lon": 0}},
    ),
    "is_empty": ({"must": [{"is_empty": {"key": "v"}}]}, {"v": []}, {"v": [0]}),
    "is_null: a missing key is not null": (
        {"must": [{"is_null": {"key": "v"}}]},
        {"v": None},
        {"w": None},
    ),
    "has_id": ({"must": [{"has_id": [1]}]}, {}, {}),
    "nested: one element meets every condition": (
        {
            "must": [
                {
                    "nested": {
                        "key": "items",
                        "filter": {
                            "must": [match("name", value="a"), key("qty", range={"gte": 2})]
                        },
                    }
                }
            ]
        },
        {"items": [{"name": "a", "qty": 2}]},
        {"items": [{"name": "a", "qty": 1}, {"name": "b", "qty": 2}]},
    ),
    "must_not": ({"must_not": [match("k", value="x")]}, {"k": "y"}, {"k": "x"}),
    "should": (
        {"should": [match("k", value="x"), match("k", value="y")]},
        {"k": "y"},
        {"k": "z"},
    ),
    "min_should": (
        {
            "min_should": {
                "conditions": [match("a", value=1), match("b", value=1), match("c", value=1)],
                "min_count": 2,
            }
        },
        {"a": 1, "b": 0, "c": 1},
        {"a": 1, "b": 0, "c": 0},
    ),
    "filter in a filter": (
        {"must_not": [{"must": [match("a", value=1), match("b", value=1)]}]},
        {"a": 1, "b": 0},
        {"a": 1, "b": 1},
    ),
}
