"""Qdrant's filter JSON means the same on the embedded engine (Qdrant Edge, through our
translation) and on qdrant-client's local mode (the server's code path, the parsed model as is):
every kind of condition over payloads of every JSON type, the same ids in the same order.
Plus, per kind, a point that must be excluded is excluded, and a filter survives a trip
through JSON (how it reaches the embedded store's own process)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import orjson
import pytest

from service.store.facade import Store
from service.store.factory import open_store
from service.store.filters import filter_json, parse_filter
from service.store.types import CollectionOptions, SearchQuery
from tests.filter_corpus import ALL_OR_NOTHING, EXCLUSIONS, FILTERS, IDS, PAYLOADS, N

T = TypeVar("T")
DIM = 8


def run(loop: asyncio.AbstractEventLoop, coro: Awaitable[T]) -> T:
    return loop.run_until_complete(coro)


def vec(i: int) -> np.ndarray:
    v = np.random.default_rng(i).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


QUERY = vec(12345).tolist()


# Edge answers from payload indexes where a key has one, so it runs with and without. Not on
# "mixed": an index of one type holds only values of that type, so Qdrant (server or Edge) then
# misses the others, which local mode (no indexes) finds: docs/traps.md.
INDEXES: dict[str, Any] = {
    "kind": "keyword",
    "tags": "keyword",
    "n": "integer",
    "nums": "integer",
    "x": "float",
    "flag": "bool",
    "meta.k": "integer",
}
ENGINES = [("edge", "edge", {}), ("edge_indexed", "edge", INDEXES), ("local", "local", {})]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, dict[str, Store]]]:
    """Both engines, filled with the same points (module-wide: one fill for every filter)."""
    loop = asyncio.new_event_loop()
    root = tmp_path_factory.mktemp("conformance")
    built: dict[str, Store] = {}
    for name, engine, indexes in ENGINES:
        store = open_store(engine, Path(root) / name, None, None)  # type: ignore[arg-type]
        run(loop, store.open())
        opts = CollectionOptions(payload_indexes=indexes)
        run(loop, store.create_collection("c", "m", DIM, opts))
        vectors = np.stack([vec(i) for i in range(N)])
        run(loop, store.upsert("c", IDS, vectors, PAYLOADS))
        built[name] = store
    yield loop, built
    for store in built.values():
        run(loop, store.close())
    loop.close()


def search_ids(loop: Any, store: Store, flt: Any, **kwargs: Any) -> list[int | str]:
    q = SearchQuery(vector=QUERY, filter=flt, limit=N, **kwargs)
    return [h.id for h in run(loop, store.search("c", q))]


@pytest.mark.parametrize("name", list(FILTERS))
def test_same_ids_in_same_order_on_both_engines(stores: Any, name: str) -> None:
    loop, built = stores
    flt = parse_filter(FILTERS[name])
    edge = search_ids(loop, built["edge"], flt)
    local = search_ids(loop, built["local"], flt)
    assert edge == local, name
    assert search_ids(loop, built["edge_indexed"], flt) == local, name
    # and after a trip through JSON, as it travels to the store's own process
    again = parse_filter(orjson.loads(orjson.dumps(filter_json(flt))))
    assert again == flt
    assert search_ids(loop, built["edge"], again) == edge


def test_the_corpus_tells_filters_apart(stores: Any) -> None:
    """Agreement on filters that match nothing or everything proves little: every other filter
    here must keep some points and drop others."""
    loop, built = stores
    sizes = {n: len(search_ids(loop, built["local"], parse_filter(f))) for n, f in FILTERS.items()}
    assert {n for n, size in sizes.items() if size in (0, N)} == ALL_OR_NOTHING, sizes


@pytest.mark.parametrize("engine", ["edge", "local"])
@pytest.mark.parametrize("kind", list(EXCLUSIONS))
def test_each_kind_excludes_what_it_must(stores: Any, engine: str, kind: str) -> None:
    """Point 1 is kept and point 2 excluded, by search; delete by the same filter removes
    exactly point 1."""
    loop, built = stores
    store: Store = built[engine]
    doc, kept, excluded = EXCLUSIONS[kind]
    flt = parse_filter(doc)
    name = "x" + uuid.uuid4().hex[:12]
    run(loop, store.create_collection(name, "m", DIM, CollectionOptions()))
    run(loop, store.upsert(name, [1, 2], np.stack([vec(1), vec(2)]), [kept, excluded]))
    hits = run(loop, store.search(name, SearchQuery(vector=QUERY, filter=flt, limit=10)))
    assert [h.id for h in hits] == [1]
    run(loop, store.delete_points(name, None, flt))
    assert run(loop, store.existing_ids(name, [1, 2])) == [2]
    run(loop, store.delete_collection(name))
