"""Collections, search and zero-shot classification through real HTTP, on the shipped default
model and the embedded Qdrant store; data survives a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.manifest import load_manifest
from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.mnist import held_out
from tests.server import Server, run_server
from training.mnist import NAMES

N = 200


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store")


@pytest.fixture(scope="module")
def srv(data_dir: Path) -> Iterator[Server]:
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL, "--data-dir", str(data_dir)]
    with run_server(data_dir, *args) as server:
        yield server


@pytest.fixture(scope="module")
def card(model_dir: Path) -> dict[str, Any]:
    return load_manifest(model_dir).card


@pytest.fixture(scope="module")
def digits(srv: Server) -> tuple[list[str], np.ndarray]:
    """Index N held-out digits (odd positions are kept back as queries) with payloads."""
    uris, labels = held_out(N)
    assert httpx.put(f"{srv.url}/v1/collections/digits").status_code == 201
    for start in range(0, N, 50):
        items = [
            {
                "image": uris[i],
                "payload": {"digit": int(labels[i]), "i": i, "name": NAMES[labels[i]]},
            }
            for i in range(start, min(N, start + 50))
            if i % 2 == 0
        ]
        r = httpx.post(f"{srv.url}/v1/collections/digits/points", json={"items": items}, timeout=60)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "acknowledged" and len(r.json()["ids"]) == len(items)
    return uris, labels


def search(srv: Server, body: dict[str, Any], collection: str = "digits") -> list[dict[str, Any]]:
    r = httpx.post(f"{srv.url}/v1/collections/{collection}/search", json=body, timeout=30)
    assert r.status_code == 200, r.text
    return list(r.json()["results"])


def test_collection_info(srv: Server, digits: object) -> None:
    info = httpx.get(f"{srv.url}/v1/collections/digits").json()
    assert info["count"] == N // 2 and info["model"] == DEFAULT_MODEL
    assert info["dimension"] == load_manifest(MODELS_DIR / DEFAULT_MODEL).embedding_dim
    assert "digits" in httpx.get(f"{srv.url}/v1/collections").json()["collections"]


def test_search_by_class_name_text(srv: Server, digits: object, card: dict[str, Any]) -> None:
    precision = []
    for c, name in enumerate(NAMES):
        hits = search(srv, {"query": {"text": f"a photo of a {name}."}, "limit": 5})
        precision.append(np.mean([h["payload"]["digit"] == c for h in hits]))
    measured = card["text_to_image"]["precision_at_5"]
    assert np.mean(precision) >= max(0.3, measured - 0.2), (np.mean(precision), measured)


def test_search_by_example_image(srv: Server, digits: tuple[list[str], np.ndarray]) -> None:
    uris, labels = digits
    queries = [i for i in range(1, 60, 2)]  # held back: not in the collection
    precision = []
    for i in queries:
        hits = search(srv, {"query": {"image": uris[i]}, "limit": 5})
        precision.append(np.mean([h["payload"]["digit"] == labels[i] for h in hits]))
    assert np.mean(precision) > 0.35  # chance: 0.1


def test_search_by_stored_id_excludes_itself(srv: Server, digits: object) -> None:
    first = search(srv, {"query": {"text": "seven"}, "limit": 1})[0]
    hits = search(srv, {"query": {"id": first["id"]}, "limit": 5})
    assert len(hits) == 5 and first["id"] not in [h["id"] for h in hits]


def test_filters_narrow_results(srv: Server, digits: object) -> None:
    q = {"text": "a photo of a three."}
    sevens = search(
        srv,
        {"query": q, "limit": 50, "filter": {"must": [{"key": "digit", "match": {"value": 7}}]}},
    )
    assert sevens and all(h["payload"]["digit"] == 7 for h in sevens)
    some = search(
        srv,
        {
            "query": q,
            "limit": 100,
            "filter": {"must": [{"key": "i", "range": {"gte": 10, "lt": 40}}]},
        },
    )
    assert sorted(h["payload"]["i"] for h in some) == list(range(10, 40, 2))
    not_low = search(
        srv,
        {
            "query": q,
            "limit": 100,
            "filter": {"must_not": [{"key": "name", "match": {"any": ["zero", "one", "two"]}}]},
        },
    )
    assert not_low and all(h["payload"]["digit"] > 2 for h in not_low)
    page1 = search(srv, {"query": q, "limit": 3})
    page2 = search(srv, {"query": q, "limit": 3, "offset": 3})
    assert not {h["id"] for h in page1} & {h["id"] for h in page2}
    high = search(srv, {"query": q, "limit": 100, "score_threshold": 0.5})
    assert all(h["score"] >= 0.5 for h in high)
    vec = search(srv, {"query": q, "limit": 1, "with_vectors": True, "with_payload": False})[0]
    assert vec["payload"] is None and len(vec["vector"]) > 0


def test_classify_reproduces_the_measured_zero_shot_accuracy(
    srv: Server, card: dict[str, Any], model_dir: Path
) -> None:
    uris, labels = held_out(N)
    put = httpx.put(f"{srv.url}/v1/label-sets/digits", json={"labels": NAMES}, timeout=30)
    assert put.status_code == 200 and put.json()["count"] == 10
    assert put.json()["templates"] == load_manifest(model_dir).templates
    body = {"images": uris, "label_set": "digits", "top_k": 3}
    out = httpx.post(f"{srv.url}/v1/classify", json=body, timeout=60).json()["results"]
    top1 = np.mean([r[0]["label"] == NAMES[y] for r, y in zip(out, labels, strict=True)])
    assert abs(top1 - card["zero_shot"]["top1"]) < 0.06, (top1, card["zero_shot"]["top1"])
    assert all(len(r) == 3 and r[0]["score"] >= r[1]["score"] >= r[2]["score"] for r in out)
    # the same through ad-hoc labels: identical scores
    direct = httpx.post(
        f"{srv.url}/v1/classify", json={"images": uris[:5], "labels": NAMES, "top_k": 10}
    ).json()["results"]
    assert all(abs(sum(x["score"] for x in r) - 1) < 1e-4 for r in direct)
    assert [r[0]["label"] for r in direct] == [r[0]["label"] for r in out[:5]]


def test_collection_options_pass_through(srv: Server) -> None:
    url = f"{srv.url}/v1/collections/tuned"
    options = {
        "distance": "dot",
        "on_disk": True,
        "hnsw_m": 8,
        "hnsw_ef_construct": 64,
        "quantization": "scalar",
        "payload_indexes": {"n": "integer", "tag": "keyword"},
    }
    created = httpx.put(url, json=options)
    assert created.status_code == 201, created.text
    config = httpx.get(url).json()["config"]
    assert {k: config[k] for k in options} == options
    items = [
        {"id": i, "text": NAMES[i], "payload": {"n": i, "tag": "ab"[i % 2]}} for i in range(10)
    ]
    assert httpx.post(f"{url}/points", json={"items": items}).status_code == 200
    flt = {"must": [{"key": "tag", "match": {"value": "a"}}, {"key": "n", "range": {"gt": 3}}]}
    hits = search(srv, {"query": {"text": "four"}, "filter": flt, "limit": 10}, "tuned")
    assert sorted(h["id"] for h in hits) == [4, 6, 8]
    assert httpx.put(url, json=options).status_code == 200  # idempotent
    assert httpx.delete(url).status_code == 204


def test_points_get_and_delete(srv: Server, digits: tuple[list[str], np.ndarray]) -> None:
    url = f"{srv.url}/v1/collections/scratch"
    assert httpx.put(url).status_code == 201
    items = [{"id": i, "text": NAMES[i], "payload": {"n": i}} for i in range(10)]
    assert httpx.post(f"{url}/points", json={"items": items}).json()["ids"] == list(range(10))
    again = httpx.post(f"{url}/points", json={"items": [{"text": "seven"}, {"text": "seven"}]})
    ids = again.json()["ids"]
    assert ids[0] == ids[1]  # content ids: the same text is the same point
    uri = digits[0][0]
    images = [{"image": uri}, {"image": uri.partition(",")[2]}]  # data: URI, bare base64
    image_ids = httpx.post(f"{url}/points", json={"items": images}).json()["ids"]
    assert image_ids[0] == image_ids[1]
    assert httpx.delete(f"{url}/points/{image_ids[0]}").status_code == 204
    assert httpx.get(f"{url}").json()["count"] == 11
    point = httpx.get(f"{url}/points/3", params={"with_vector": True}).json()
    assert point["payload"] == {"n": 3} and len(point["vector"]) > 0
    assert httpx.delete(f"{url}/points/3").status_code == 204
    assert httpx.get(f"{url}/points/3").status_code == 404
    gone = httpx.post(
        f"{url}/points/delete", json={"filter": {"must": [{"key": "n", "range": {"gte": 5}}]}}
    )
    assert gone.status_code == 204
    assert httpx.get(f"{url}").json()["count"] == 11 - 1 - 5
    assert httpx.post(f"{url}/points/delete", json={"ids": [0, 1]}).status_code == 204
    assert httpx.get(f"{url}").json()["count"] == 3
    assert httpx.delete(url).status_code == 204
    assert httpx.get(url).status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        (
            "post",
            "/v1/collections/nope/search",
            {"query": {"text": "x"}},
            404,
            "collection_not_found",
        ),
        (
            "post",
            "/v1/collections/nope/points",
            {"items": [{"text": "x"}]},
            404,
            "collection_not_found",
        ),
        ("get", "/v1/collections/nope", None, 404, "collection_not_found"),
        ("put", "/v1/collections/bad%20name", None, 422, "invalid_request"),
        ("put", "/v1/collections/x1", {"model": "nope"}, 404, "model_not_found"),
        ("put", "/v1/collections/x1", {"quantization": "pq"}, 422, "invalid_request"),
        ("put", "/v1/collections/x1", {"payload_indexes": {"g": "geo"}}, 422, "invalid_request"),
        ("put", "/v1/collections/x1", {"payload_indexes": {"a b": "bool"}}, 422, "invalid_request"),
        (
            "post",
            "/v1/collections/digits/search",
            {"query": {"text": "x"}, "filter": {"must": [{"key": "a..b", "match": {"value": 1}}]}},
            422,
            "invalid_filter",
        ),
        (
            "post",
            "/v1/collections/digits/search",
            {"query": {"text": "x"}, "filter": {"must": [{"key": "a", "match": {"value": 1.5}}]}},
            422,
            "invalid_filter",
        ),
        (
            "post",
            "/v1/collections/digits/search",
            {"query": {"vector": [1.0, 2.0]}},
            400,
            "dimension_mismatch",
        ),
        (
            "post",
            "/v1/collections/digits/search",
            {"query": {"text": "x", "image": "y"}},
            422,
            "invalid_request",
        ),
        (
            "post",
            "/v1/collections/digits/search",
            {"query": {"text": "x"}, "filter": {"must": [{"key": "a"}]}},
            422,
            "invalid_filter",
        ),
        (
            "post",
            "/v1/collections/digits/search",
            {"query": {"text": "x"}, "filter": {"must": [{"key": "a", "match": 1}]}},
            422,
            "invalid_filter",
        ),
        (
            "post",
            "/v1/collections/digits/search",
            {"query": {"text": "x"}, "filter": {"oops": []}},
            422,
            "invalid_filter",
        ),
        (
            "post",
            "/v1/collections/digits/search",
            {"query": {"id": "not-an-id"}},
            400,
            "invalid_id",
        ),
        (
            "post",
            "/v1/collections/digits/points",
            {"items": [{"vector": [0.1, 0.2]}]},
            400,
            "dimension_mismatch",
        ),
        ("post", "/v1/collections/digits/points", {"items": []}, 400, "empty_input"),
        (
            "post",
            "/v1/collections/digits/points",
            {"items": [{"text": "a", "image": "b"}]},
            422,
            "invalid_request",
        ),
        (
            "post",
            "/v1/collections/digits/points",
            {"items": [{"image": "%%"}]},
            422,
            "invalid_image",
        ),
        (
            "post",
            "/v1/classify",
            {"images": ["x"], "label_set": "nope"},
            404,
            "label_set_not_found",
        ),
        ("post", "/v1/classify", {"images": ["x"]}, 422, "invalid_request"),
        ("get", "/v1/label-sets/nope", None, 404, "label_set_not_found"),
    ],
)
def test_clear_client_errors(
    srv: Server, digits: object, method: str, path: str, body: object, status: int, code: str
) -> None:
    r = httpx.request(method.upper(), f"{srv.url}{path}", json=body)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


def test_bad_item_writes_nothing(srv: Server, digits: tuple[list[str], np.ndarray]) -> None:
    before = httpx.get(f"{srv.url}/v1/collections/digits").json()["count"]
    items = [{"image": digits[0][1]}, {"image": "data:image/png;base64,AAAA"}]
    r = httpx.post(f"{srv.url}/v1/collections/digits/points", json={"items": items})
    assert r.status_code == 422 and r.json()["error"]["items"][0]["index"] == 1
    assert httpx.get(f"{srv.url}/v1/collections/digits").json()["count"] == before


def test_restart_keeps_collections_points_and_label_sets(
    srv: Server, data_dir: Path, digits: object
) -> None:
    before = search(srv, {"query": {"text": "four"}, "limit": 5})
    srv.process.terminate()
    srv.process.wait(timeout=30)
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL, "--data-dir", str(data_dir)]
    with run_server(data_dir, *args) as again:
        assert httpx.get(f"{again.url}/v1/collections/digits").json()["count"] == N // 2
        after = search(again, {"query": {"text": "four"}, "limit": 5})
        assert [h["id"] for h in after] == [h["id"] for h in before]
        assert [h["payload"] for h in after] == [h["payload"] for h in before]
        np.testing.assert_allclose(
            [h["score"] for h in after], [h["score"] for h in before], atol=1e-5
        )
        label_set = httpx.get(f"{again.url}/v1/label-sets/digits", params={"with_labels": True})
        assert label_set.json()["labels"] == NAMES
        out = httpx.post(
            f"{again.url}/v1/classify", json={"images": held_out(N)[0][:3], "label_set": "digits"}
        )
        assert out.status_code == 200


def test_acknowledged_writes_survive_a_crash(tmp_path: Path) -> None:
    """kill -9 right after the answers: the write-ahead log brings everything back."""
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL, "--data-dir", str(tmp_path)]
    with run_server(tmp_path, *args) as first:
        url = f"{first.url}/v1/collections/crash"
        assert httpx.put(url).status_code == 201
        items = [{"id": i, "text": NAMES[i], "payload": {"n": i}} for i in range(10)]
        assert httpx.post(f"{url}/points", json={"items": items}).status_code == 200
        assert httpx.post(f"{url}/points/delete", json={"ids": [0, 1]}).status_code == 204
        put = httpx.put(f"{first.url}/v1/label-sets/crash", json={"labels": ["one", "two"]})
        assert put.status_code == 200
        first.process.kill()
        first.process.wait(timeout=10)
    with run_server(tmp_path, *args) as second:
        url = f"{second.url}/v1/collections/crash"
        assert httpx.get(url).json()["count"] == 8
        assert httpx.get(f"{url}/points/5").json()["payload"] == {"n": 5}
        assert httpx.get(f"{url}/points/0").status_code == 404
        label_set = httpx.get(f"{second.url}/v1/label-sets/crash", params={"with_labels": True})
        assert label_set.json()["labels"] == ["one", "two"]
