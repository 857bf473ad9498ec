"""The store on both embedded engines (Qdrant Edge, qdrant-client local mode: the server's code
path), and on Qdrant Edge through the store process (what a server runs), must mean the same
thing: ids, payloads, filters, search options, label sets, restarts."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from service.store.facade import Store
from service.store.factory import open_store
from service.store.filters import Filter, parse_filter
from service.store.owner import StoreProcess
from service.store.remote import RemoteBackend
from service.store.types import (
    CollectionOptions,
    LabelSet,
    SearchQuery,
    StoreError,
    StoreUnavailable,
)

T = TypeVar("T")
DIM = 8
U = str(uuid.UUID(int=7))


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def process_store(data_dir: Path, engine: str = "edge", timeout_s: float = 30) -> Store:
    """A store whose engine runs in a store process this test owns, as a server's does."""
    owner = StoreProcess(engine, data_dir, timeout_s)
    mode = "embedded" if engine == "edge" else "local"
    return Store(RemoteBackend(mode, timeout_s, owner=owner))


@pytest.fixture(params=["edge", "local", "process", "process-local"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], Store]]:
    """A factory of stores on one data directory (call it again to 'restart')."""

    def factory() -> Store:
        if request.param.startswith("process"):
            return process_store(tmp_path, "local" if request.param.endswith("local") else "edge")
        return open_store(request.param, tmp_path, None, None)

    yield factory


def vec(i: int) -> np.ndarray:
    v = np.random.default_rng(i).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


PAYLOADS: list[dict[str, Any]] = [
    {"n": i, "half": i / 2, "even": i % 2 == 0, "tag": "ab"[i % 2], "meta": {"k": i % 3}}
    for i in range(20)
]


async def filled(store: Store) -> Store:
    await store.open()
    indexes: dict[str, Any] = {"n": "integer", "tag": "keyword", "even": "bool"}  # half: none
    await store.create_collection("c", "m", DIM, CollectionOptions(payload_indexes=indexes))
    ids: list[int | str] = [*range(19), U]
    await store.upsert("c", ids, np.stack([vec(i) for i in range(20)]), PAYLOADS)
    return store


def flt(**kwargs: Any) -> Filter:
    return parse_filter(kwargs)


async def ids_for(store: Store, f: Filter, **kwargs: Any) -> list[int | str]:
    q = SearchQuery(vector=vec(0).tolist(), filter=f, limit=100, **kwargs)
    return sorted((h.id for h in await store.search("c", q)), key=str)


def test_points_and_search(make: Callable[[], Store]) -> None:
    async def go() -> None:
        store = await filled(make())
        info = await store.collection("c")
        assert (info.model, info.dimension, info.count) == ("m", DIM, 20)
        assert await store.list_collections() == ["c"]
        hits = await store.search("c", SearchQuery(vector=vec(5).tolist(), limit=3))
        assert hits[0].id == 5 and abs(hits[0].score - 1) < 1e-5
        assert hits[0].payload == PAYLOADS[5] and hits[0].vector is None
        assert hits[0].score >= hits[1].score >= hits[2].score
        q = SearchQuery(vector=vec(5).tolist(), limit=2, exclude=[5], with_payload=False)
        assert 5 not in [h.id for h in await store.search("c", q)]
        page = SearchQuery(vector=vec(5).tolist(), limit=2, offset=1, with_vectors=True)
        second = await store.search("c", page)
        assert [h.id for h in second] == [h.id for h in hits[1:3]]
        assert second[0].vector is not None and len(second[0].vector) == DIM
        high = SearchQuery(vector=vec(5).tolist(), limit=20, score_threshold=0.99)
        assert [h.id for h in await store.search("c", high)] == [5]
        uuid_point = await store.get_point("c", U, with_vector=True)
        assert uuid_point.id == U and uuid_point.payload == PAYLOADS[19]
        np.testing.assert_allclose(uuid_point.vector or [], vec(19), atol=1e-5)
        assert await store.existing_ids("c", [1, 999, U]) in ([1, U], [U, 1])
        with pytest.raises(StoreError) as err:
            await store.get_point("c", 999, with_vector=False)
        assert err.value.status == 404
        await store.close()

    run(go())


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"must": [{"key": "n", "match": {"value": 3}}]}, [3]),
        (
            {"must": [{"key": "tag", "match": {"value": "a"}}, {"key": "n", "range": {"lt": 6}}]},
            [0, 2, 4],
        ),
        (
            {"must": [{"key": "even", "match": {"value": True}}, {"key": "n", "range": {"lt": 5}}]},
            [0, 2, 4],
        ),
        (
            {
                "must": [
                    {"key": "even", "match": {"value": False}},
                    {"key": "n", "range": {"lt": 5}},
                ]
            },
            [1, 3],
        ),
        ({"must": [{"key": "half", "range": {"gt": 1, "lte": 2.5}}]}, [3, 4, 5]),
        (
            {"must": [{"key": "meta.k", "match": {"value": 2}}, {"key": "n", "range": {"lt": 9}}]},
            [2, 5, 8],
        ),
        ({"must": [{"key": "n", "match": {"any": [1, 2, 30]}}]}, [1, 2]),
        ({"must": [{"key": "n", "match": {"value": True}}]}, []),  # true is not 1
        (
            {
                "should": [
                    {"key": "n", "match": {"value": 1}},
                    {"must": [{"key": "n", "match": {"value": 7}}]},
                ]
            },
            [1, 7],
        ),
        ({"must_not": [{"key": "n", "range": {"gte": 2}}]}, [0, 1]),
    ],
)
def test_filters_mean_the_same_on_both_engines(
    make: Callable[[], Store], spec: dict[str, Any], expected: list[int]
) -> None:
    async def go() -> None:
        store = await filled(make())
        assert await ids_for(store, flt(**spec)) == expected
        await store.close()

    run(go())


def test_delete_by_ids_and_filter(make: Callable[[], Store]) -> None:
    async def go() -> None:
        store = await filled(make())
        await store.delete_points("c", [0, U], None)
        await store.delete_points("c", None, flt(must=[{"key": "n", "range": {"gte": 10}}]))
        assert sorted(await store.existing_ids("c", list(range(20)))) == list(range(1, 10))
        await store.delete_collection("c")
        with pytest.raises(StoreError) as err:
            await store.collection("c")
        assert err.value.code == "collection_not_found"
        assert await store.list_collections() == []
        await store.close()

    run(go())


def test_create_is_idempotent_and_checks_the_model(make: Callable[[], Store]) -> None:
    async def go() -> None:
        store = await filled(make())
        _, created = await store.create_collection("c", "m", DIM, CollectionOptions(), set())
        assert not created  # nothing asked for: the existing collection is confirmed
        with pytest.raises(StoreError) as err:
            await store.create_collection("c", "other", 4, CollectionOptions())
        assert err.value.status == 409
        other = CollectionOptions(distance="dot", payload_indexes={"n": "integer"})
        with pytest.raises(StoreError) as err:
            await store.create_collection("c", "m", DIM, other, {"distance", "payload_indexes"})
        assert err.value.status == 409 and "distance is 'cosine', not 'dot'" in str(err.value)
        assert "payload_indexes" in str(err.value)
        with pytest.raises(StoreError) as err:
            await store.create_collection("e", "m", DIM, CollectionOptions(shard_number=2))
        assert err.value.status == 400 and err.value.code == "server_only_option"
        opts = CollectionOptions(distance="dot", on_disk=True, hnsw_m=8, quantization="scalar")
        info, created = await store.create_collection("d", "m", DIM, opts)
        assert created and info.options == opts and info.count == 0
        await store.close()

    run(go())


def test_restart_keeps_collections_points_and_label_sets(make: Callable[[], Store]) -> None:
    protos = np.stack([vec(100 + i) for i in range(3)])

    async def write() -> None:
        store = await filled(make())
        await store.put_label_set(LabelSet("ls", "m", ["a", "b", "c"], ["{}"], protos))
        await store.put_label_set(LabelSet("ls", "m", ["x", "y", "z"], ["a {}"], protos[::-1]))
        await store.close()

    async def read() -> None:
        store = make()
        await store.open()
        assert (await store.collection("c")).count == 20
        hits = await store.search("c", SearchQuery(vector=vec(3).tolist(), limit=1))
        assert hits[0].id == 3 and hits[0].payload == PAYLOADS[3]
        ls = await store.label_set("ls")
        assert ls.labels == ["x", "y", "z"] and ls.templates == ["a {}"]
        np.testing.assert_allclose(ls.prototypes, protos[::-1], atol=1e-6)
        await store.delete_label_set("ls")
        with pytest.raises(StoreError):
            await store.label_set("ls")
        await store.close()

    run(write())
    run(read())


def test_orphaned_label_set_collections_are_dropped_on_open(tmp_path: Path) -> None:
    """A label-set replacement interrupted by a crash leaves a collection nothing points to; the
    store process drops it when it starts."""

    def make() -> Store:
        return process_store(tmp_path)

    async def go() -> None:
        store = make()
        await store.open()
        protos = np.stack([vec(i) for i in range(2)])
        await store.put_label_set(LabelSet("ls", "m", ["a", "b"], ["{}"], protos))
        await store.backend.create("_labels_ls_deadbeef", DIM, CollectionOptions())
        await store.close()
        store = make()
        await store.open()
        names = await store.backend.names()
        assert "_labels_ls_deadbeef" not in names
        assert sum(n.startswith("_labels_ls_") for n in names) == 1
        assert (await store.label_set("ls")).labels == ["a", "b"]
        await store.close()

    run(go())


def test_unusable_stores_fail_at_open_with_one_clear_line(tmp_path: Path) -> None:
    async def go() -> None:
        first = open_store("edge", tmp_path, None, None)
        await first.open()
        with pytest.raises(StoreUnavailable, match="in use by another process"):
            await open_store("edge", tmp_path, None, None).open()
        await first.close()
        with pytest.raises(StoreUnavailable, match="cannot open the server store"):
            await open_store("edge", tmp_path, "http://127.0.0.1:9", None).open()

    run(go())


def test_store_optimize_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    async def write() -> Store:
        store = await filled(open_store("edge", tmp_path, None, None))
        await store.close()
        return store

    run(write())
    cmd = [sys.executable, "-m", "service", "store-optimize", "--data-dir", str(tmp_path)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "c: " in out.stdout, out.stdout + out.stderr

    async def held() -> None:
        store = open_store("edge", tmp_path, None, None)
        await store.open()
        try:
            busy = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            assert busy.returncode == 2 and "in use by another process" in busy.stderr
        finally:
            await store.close()

    run(held())
