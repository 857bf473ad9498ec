"""Qdrant's retrieval calls on every engine a server runs (Qdrant Edge and qdrant-client's local
mode, in this process and through the store process): batch search, recommend with each
strategy, search params and payload selectors, scroll pages and order_by, exact and approximate
counts, payload updates. Each engine must answer what local mode (Qdrant's own Python code)
answers, and the answers must be right on their own terms."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
from qdrant_client import models

from service.store.facade import Store
from service.store.factory import open_store
from service.store.filters import parse_filter
from service.store.limits import PayloadLimits
from service.store.types import (
    CollectionOptions,
    Recommend,
    ScrollQuery,
    SearchQuery,
    StoreError,
)
from tests.test_store import process_store

T = TypeVar("T")
DIM = 8
N = 30
ENGINES = ["local", "edge", "process", "process-local"]  # local first: the reference


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def vec(i: int) -> np.ndarray:
    v = np.random.default_rng(i).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def payload(i: int) -> dict[str, Any]:
    return {"n": i, "rank": (i * 7) % N, "tag": "abc"[i % 3], "meta": {"k": i % 4}}


def make(engine: str, root: Path) -> Store:
    if engine.startswith("process"):
        return process_store(root, "local" if engine.endswith("local") else "edge")
    return open_store(engine, root, None, None)  # type: ignore[arg-type]


async def filled(engine: str, root: Path) -> Store:
    store = make(engine, root)
    await store.open()
    opts = CollectionOptions(payload_indexes={"n": "integer", "rank": "integer"})
    await store.create_collection("c", "m", DIM, opts)
    vectors = np.stack([vec(i) for i in range(N)])
    await store.upsert("c", list(range(N)), vectors, [payload(i) for i in range(N)])
    return store


def ids(hits: list[Any]) -> list[Any]:
    return [h.id for h in hits]


async def pages(store: Store, q: ScrollQuery) -> list[tuple[list[Any], Any]]:
    """Every page of a scroll, following the cursor."""
    out = []
    while True:
        page = await store.scroll("c", q)
        out.append(([p.id for p in page.points], page.next_offset))
        if page.next_offset is None:
            return out
        q = ScrollQuery(q.filter, q.limit, page.next_offset, q.order_by, q.with_payload)


async def answers(store: Store) -> dict[str, Any]:
    """The same calls on one store; what each engine answers must be equal."""
    pos, neg = [vec(0).tolist(), vec(1).tolist()], [vec(2).tolist()]
    out: dict[str, Any] = {}
    for strategy in ("average_vector", "best_score", "sum_scores"):
        q = SearchQuery(vector=Recommend(pos, neg, strategy), exclude=[0, 1, 2], limit=8)
        hits = await store.search("c", q)
        out[strategy] = [(h.id, round(h.score, 4)) for h in hits]
    alone = SearchQuery(vector=Recommend([], neg, "best_score"), limit=5)
    out["negative alone"] = ids(await store.search("c", alone))
    batch = [
        SearchQuery(vector=vec(i).tolist(), limit=4, offset=i % 2, exclude=[i]) for i in range(5)
    ]
    out["batch"] = [ids(hits) for hits in await store.search_batch("c", batch)]
    exact = models.SearchParams(
        hnsw_ef=16, exact=True, quantization=models.QuantizationSearchParams(rescore=True)
    )
    selectors: list[Any] = [
        ["tag"],
        models.PayloadSelectorInclude(include=["meta"]),
        models.PayloadSelectorExclude(exclude=["n", "rank"]),
        False,
    ]
    for i, selector in enumerate(selectors):
        q = SearchQuery(vector=vec(3).tolist(), limit=2, params=exact, with_payload=selector)
        out[f"payload {i}"] = [(h.id, h.payload) for h in await store.search("c", q)]
    out["scroll"] = await pages(store, ScrollQuery(limit=7))
    order = models.OrderBy(key="rank", direction=models.Direction.DESC, start_from=20)
    ordered = await store.scroll("c", ScrollQuery(limit=6, order_by=order))
    out["order_by"] = ([p.id for p in ordered.points], [p.order_value for p in ordered.points])
    out["count"] = [await store.count("c", None, exact) for exact in (True, False)]
    return out


def test_every_engine_answers_as_local_mode(tmp_path: Path) -> None:
    async def go() -> dict[str, dict[str, Any]]:
        found = {}
        for engine in ENGINES:
            store = await filled(engine, tmp_path / engine)
            found[engine] = await answers(store)
            await store.close()
        return found

    found = run(go())
    reference = found["local"]
    for engine in ENGINES[1:]:
        for call, answer in reference.items():
            assert found[engine][call] == answer, (engine, call)

    # and right on their own terms
    vectors = np.stack([vec(i) for i in range(N)])
    average = 2 * (vec(0) + vec(1)) / 2 - vec(2)
    scores = vectors @ (average / np.linalg.norm(average))
    scores[[0, 1, 2]] = -np.inf
    assert [i for i, _ in reference["average_vector"]] == list(np.argsort(-scores)[:8])
    for strategy in ("average_vector", "best_score", "sum_scores"):
        assert not {0, 1, 2} & {i for i, _ in reference[strategy]}
    for i, hits in enumerate(reference["batch"]):
        nearest = [j for j in np.argsort(-(vectors @ vec(i))) if j != i]
        assert hits == nearest[i % 2 : i % 2 + 4]
    assert reference["payload 0"][0][1] == {"tag": "abc"[3 % 3]}
    assert reference["payload 1"][0][1] == {"meta": {"k": 3}}
    assert reference["payload 2"][0][1] == {"tag": "a", "meta": {"k": 3}}
    assert reference["payload 3"][0][1] is None
    assert reference["scroll"] == [
        (list(range(s, min(N, s + 7))), s + 7 if s + 7 < N else None) for s in range(0, N, 7)
    ]
    ranks = sorted(((i * 7) % N, i) for i in range(N) if (i * 7) % N <= 20)[::-1][:6]
    assert reference["order_by"] == ([i for _, i in ranks], [r for r, _ in ranks])
    assert reference["count"] == [N, N]


@pytest.mark.parametrize("engine", ENGINES)
def test_payload_updates_keep_vectors_and_limits(tmp_path: Path, engine: str) -> None:
    async def go() -> None:
        store = await filled(engine, tmp_path)
        limits = PayloadLimits(max_keys=8)
        await store.set_payload("c", [1, 2], None, {"tag": "z", "new": True}, False, limits)
        await store.set_payload("c", [3], None, {"only": 1}, True, limits)
        await store.delete_payload("c", [4], None, ["tag", "meta"])
        flt = parse_filter({"must": [{"key": "n", "range": {"gte": 27}}]})
        await store.set_payload("c", None, flt, {"late": 1}, False, limits)
        await store.delete_payload("c", None, flt, ["rank"])
        got = {p.id: p for p in await store.backend.retrieve("c", list(range(N)), True, True)}
        assert got[1].payload == {**payload(1), "tag": "z", "new": True}
        assert got[3].payload == {"only": 1}
        assert got[4].payload == {"n": 4, "rank": 28}
        for i in (27, 28, 29):
            expected = {**payload(i), "late": 1}
            del expected["rank"]
            assert got[i].payload == expected
        for i in range(N):  # nothing was embedded again
            np.testing.assert_allclose(got[i].vector or [], vec(i), atol=1e-6)
        before = got[5].payload
        for bad in (
            lambda: store.set_payload("c", [5, 77], None, {"x": 1}, False, limits),
            lambda: store.delete_payload("c", [77], None, ["n"]),
            lambda: store.set_payload(
                "c", [5], None, {f"k{j}": j for j in range(5)}, False, limits
            ),
            lambda: store.set_payload(
                "c", None, flt, {f"k{j}": j for j in range(5)}, False, limits
            ),
        ):
            with pytest.raises(StoreError) as err:
                await bad()
            assert err.value.status in (404, 413), err.value
        after = await store.backend.retrieve("c", [5, 27], True, False)
        assert after[0].payload == before and "k0" not in (after[1].payload or {})
        await store.close()

    run(go())


@pytest.mark.parametrize("engine", ENGINES)
def test_kept_keys_survive_overwrites_and_stay_out_of_merge_checks(
    tmp_path: Path, engine: str
) -> None:
    """`keep`: keys the service writes itself (thumbnails). An overwrite by ids or by filter
    replaces the rest of each payload and keeps them; a merge's limits leave them out."""

    async def go() -> None:
        store = await filled(engine, tmp_path)
        own = {i: {"svc:k": f"kept-{i}"} for i in (1, 2, 3, 28)}
        for i, kept in own.items():
            await store.set_payload("c", [i], None, kept, False, PayloadLimits())
        keep = ("svc:k",)
        limits = PayloadLimits(max_keys=6)  # a payload holds 5 keys (4 + "meta.k"), + 1 kept
        await store.set_payload("c", [1, 4], None, {"only": 1}, True, limits, keep)
        flt = parse_filter({"must": [{"key": "n", "range": {"gte": 27}}]})
        await store.set_payload("c", None, flt, {"only": 2}, True, limits, keep)
        await store.set_payload("c", [2], None, {"x": 1}, False, limits, keep)
        with pytest.raises(StoreError):  # without keep, the kept key counts
            await store.set_payload("c", [3], None, {"x": 1}, False, limits)
        got = {
            p.id: p.payload for p in await store.backend.retrieve("c", list(range(N)), True, False)
        }
        assert got[1] == {"only": 1, **own[1]} and got[4] == {"only": 1}
        assert got[28] == {"only": 2, **own[28]}
        assert got[27] == got[29] == {"only": 2}
        assert got[2] == {**payload(2), **own[2], "x": 1}
        assert got[3] == {**payload(3), **own[3]}
        await store.close()

    run(go())


def test_order_by_needs_a_range_index_and_no_cursor(tmp_path: Path) -> None:
    """Qdrant (server and Edge) orders only by a key with a range index and pages with
    `start_from`; local mode would order anything, so the store refuses alike everywhere."""

    async def go() -> None:
        for engine in ("edge", "local"):
            store = await filled(engine, tmp_path / engine)
            for q, code in (
                (ScrollQuery(order_by=models.OrderBy(key="tag")), "order_by_not_indexed"),
                (ScrollQuery(order_by=models.OrderBy(key="meta.k")), "order_by_not_indexed"),
                (ScrollQuery(offset=3, order_by=models.OrderBy(key="n")), "order_by_with_offset"),
            ):
                with pytest.raises(StoreError) as err:
                    await store.scroll("c", q)
                assert (err.value.status, err.value.code) == (400, code)
            await store.close()

    run(go())
