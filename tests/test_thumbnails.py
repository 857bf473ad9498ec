"""Thumbnails of upserted images (the collection option `thumbnail_size`), through real HTTP on
the default model and the embedded store: kept small, served as JPEG, never leaked into the
payloads that search and point reads return, deleted with their point."""

from __future__ import annotations

import io
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from service.thumbnails import MAX_SIDE, THUMBNAIL_KEY
from tests.images import blocks, data_uri, encode, noise, png_bomb
from tests.server import Server

SIDE = 48


def _collection(server: Server, **options: object) -> str:
    name = f"thumbs-{uuid.uuid4().hex[:8]}"
    r = httpx.put(f"{server.url}/v1/collections/{name}", json=options)
    assert r.status_code == 201, r.text
    return name


def _upsert(server: Server, name: str, items: list[dict[str, object]]) -> list[object]:
    r = httpx.post(f"{server.url}/v1/collections/{name}/points", json={"items": items}, timeout=60)
    assert r.status_code == 200, r.text
    return list(r.json()["ids"])


def _thumbnail(server: Server, name: str, point: object) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/collections/{name}/points/{point}/thumbnail")


def _pixels(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    return np.asarray(img.convert("RGB").resize(size, Image.Resampling.BOX), dtype=float)


def test_thumbnails_are_small_jpegs_of_the_image(server: Server) -> None:
    name = _collection(server, thumbnail_size=SIDE)
    assert (
        httpx.get(f"{server.url}/v1/collections/{name}").json()["config"]["thumbnail_size"] == SIDE
    )
    photo = blocks(600, 400, seed=3)  # a large JPEG: shrunk, aspect ratio kept
    transparent = Image.new("RGBA", (20, 30), (255, 0, 0, 0))  # small: never enlarged
    transparent.paste((0, 0, 255, 255), (5, 5, 15, 25))
    items = [
        {"image": data_uri(encode(photo, "JPEG", quality=95), "image/jpeg"), "payload": {"n": 1}},
        {"image": data_uri(encode(transparent, "PNG")), "payload": {"n": 2}},
        {"text": "a photo of a seven.", "payload": {"n": 3}},
    ]
    big, small, text = _upsert(server, name, items)

    r = _thumbnail(server, name, big)
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert len(r.content) < 8_000
    thumb = Image.open(io.BytesIO(r.content))
    assert thumb.format == "JPEG" and thumb.size == (SIDE, round(SIDE * 400 / 600))
    diff = np.abs(_pixels(thumb, (12, 8)) - _pixels(photo, (12, 8))).mean()
    assert diff < 6, diff  # the same picture, not just any JPEG

    thumb = Image.open(io.BytesIO(_thumbnail(server, name, small).content))
    assert thumb.size == (20, 30)
    rgb = np.asarray(thumb.convert("RGB"), dtype=int)
    assert (np.abs(rgb[0, 0] - (255, 255, 255)) < 12).all()  # transparency on white
    assert (np.abs(rgb[15, 10] - (0, 0, 255)) < 40).all()

    r = _thumbnail(server, name, text)
    assert r.status_code == 404 and r.json()["error"]["code"] == "thumbnail_not_found"


def test_thumbnails_stay_out_of_payloads_and_go_with_their_point(server: Server) -> None:
    name = _collection(server, thumbnail_size=SIDE)
    image = data_uri(encode(blocks(64, 64, seed=1), "PNG"))
    (point,) = _upsert(server, name, [{"image": image, "payload": {"kind": "block"}}])
    search = httpx.post(
        f"{server.url}/v1/collections/{name}/search", json={"query": {"image": image}}
    ).json()
    assert [h["payload"] for h in search["results"]] == [{"kind": "block"}]
    got = httpx.get(f"{server.url}/v1/collections/{name}/points/{point}").json()
    assert got["payload"] == {"kind": "block"}

    assert httpx.delete(f"{server.url}/v1/collections/{name}/points/{point}").status_code == 204
    r = _thumbnail(server, name, point)
    assert r.status_code == 404 and r.json()["error"]["code"] == "point_not_found"


def test_no_thumbnails_unless_asked(server: Server) -> None:
    name = _collection(server)
    assert (
        httpx.get(f"{server.url}/v1/collections/{name}").json()["config"]["thumbnail_size"] is None
    )
    (point,) = _upsert(server, name, [{"image": data_uri(encode(blocks(), "PNG"))}])
    r = _thumbnail(server, name, point)
    assert r.status_code == 404 and r.json()["error"]["code"] == "thumbnail_not_found"


@pytest.mark.parametrize("size", [8, 257, 4096, "big"])
def test_thumbnail_size_is_bounded(server: Server, size: object) -> None:
    r = httpx.put(f"{server.url}/v1/collections/bad-thumbs", json={"thumbnail_size": size})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["param"].endswith("thumbnail_size")


def test_the_thumbnail_key_is_reserved(server: Server) -> None:
    name = _collection(server, thumbnail_size=SIDE)
    item = {"text": "seven", "payload": {THUMBNAIL_KEY: "data:image/jpeg;base64,AAAA"}}
    r = httpx.post(f"{server.url}/v1/collections/{name}/points", json={"items": [item]})
    assert r.status_code == 422, r.text
    assert "reserved" in r.text


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def test_bad_images_are_refused_before_any_thumbnail(server: Server) -> None:
    """A bomb among good images: the upsert is refused by item, and nothing is stored."""
    name = _collection(server, thumbnail_size=SIDE)
    items = [
        {"image": data_uri(encode(blocks(), "PNG"))},
        {"image": data_uri(png_bomb())},
    ]
    r = httpx.post(f"{server.url}/v1/collections/{name}/points", json={"items": items}, timeout=60)
    assert r.status_code == 413, r.text
    assert [e["index"] for e in r.json()["error"]["items"]] == [1]
    assert httpx.get(f"{server.url}/v1/collections/{name}").json()["count"] == 0


@pytest.mark.slow
def test_thumbnails_of_large_photos_leave_the_server_responsive(server: Server) -> None:
    """Thumbnails decode each image again, off the event loop: /healthz answers within a second
    meanwhile, and the server's memory stays bounded."""
    name = _collection(server, thumbnail_size=MAX_SIDE)
    photos = [encode(blocks(3000, 2000, seed=s), "JPEG", quality=90) for s in range(6)]
    items = [{"image": data_uri(p, "image/jpeg")} for p in photos]
    pid = server.process.pid
    before = _rss_mb(pid)
    slowest = 0.0
    with ThreadPoolExecutor(1) as pool:
        upsert = pool.submit(
            httpx.post,
            f"{server.url}/v1/collections/{name}/points",
            json={"items": items},
            timeout=120,
        )
        while not upsert.done():
            started = time.perf_counter()
            assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
            slowest = max(slowest, time.perf_counter() - started)
            time.sleep(0.05)
        r = upsert.result()
    assert r.status_code == 200, r.text
    assert slowest < 1.0, slowest
    assert _rss_mb(pid) - before < 400
    for point in r.json()["ids"]:
        thumb = Image.open(io.BytesIO(_thumbnail(server, name, point).content))
        assert thumb.size == (MAX_SIDE, round(MAX_SIDE * 2000 / 3000))


def test_filters_cannot_reach_the_thumbnail_key(server: Server) -> None:
    name = _collection(server, thumbnail_size=SIDE)
    _upsert(server, name, [{"image": data_uri(encode(blocks(), "PNG"))}])
    for condition in (
        {"key": THUMBNAIL_KEY, "match": {"value": "x"}},
        {"is_empty": {"key": THUMBNAIL_KEY}},
    ):
        r = httpx.post(
            f"{server.url}/v1/collections/{name}/search",
            json={"query": {"text": "seven"}, "filter": {"must_not": [condition]}},
        )
        assert r.status_code in (400, 422), r.text


# --- the retrieval routes ------------------------------------------------------------------
def _post(server: Server, name: str, path: str, body: dict[str, object]) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/collections/{name}/{path}", json=body, timeout=60)


def _payloads(answer: object) -> list[object]:
    """Every payload anywhere in an answer (hits, lists of hits, scrolled points)."""
    if isinstance(answer, dict):
        found = [answer["payload"]] if "payload" in answer else []
        return found + [p for value in answer.values() for p in _payloads(value)]
    if isinstance(answer, list):
        return [p for value in answer for p in _payloads(value)]
    return []


def test_retrieval_answers_leave_thumbnails_out(server: Server) -> None:
    """Scroll, batch search, recommend and search answer the user's payloads only,
    however `with_payload` asks for them; the thumbnail key cannot even be asked for."""
    name = _collection(server, thumbnail_size=SIDE)
    images = [data_uri(encode(blocks(64, 64, seed=s), "PNG")) for s in range(3)]
    ids = _upsert(server, name, [{"image": im, "payload": {"n": i}} for i, im in enumerate(images)])
    everything = [{"with_payload": True}, {"with_payload": {"exclude": ["n"]}}]
    answers = []
    for selector in everything:
        answers += [
            _post(server, name, "points/scroll", {"limit": 10, **selector}),
            _post(server, name, "recommend", {"positive": [{"id": ids[0]}], **selector}),
            _post(
                server,
                name,
                "search/batch",
                {
                    "searches": [
                        {"query": {"image": images[1]}, **selector},
                        {"query": {"id": ids[2]}},
                    ]
                },
            ),
            _post(server, name, "search", {"query": {"text": "seven"}, **selector}),
        ]
    for r in answers:
        assert r.status_code == 200, r.text
        payloads = _payloads(r.json())
        assert len(payloads) >= 2, r.text  # each answer has points with payloads to look at
        assert all(THUMBNAIL_KEY not in (p or {}) for p in payloads), r.text[:300]
    scrolled = answers[0].json()["points"]
    assert sorted(p["payload"]["n"] for p in scrolled) == [0, 1, 2]
    assert all(p["payload"] == {} for p in answers[4].json()["points"])
    for selector in ([THUMBNAIL_KEY], {"include": [THUMBNAIL_KEY]}):
        r = _post(server, name, "points/scroll", {"with_payload": selector})
        assert r.status_code == 422, r.text


def test_payload_updates_keep_the_thumbnail(server: Server) -> None:
    """Set, overwrite (by ids and by filter) and delete payload keys: the user's payload
    changes, the thumbnail stays the point's own; no client can write the thumbnail key."""
    name = _collection(server, thumbnail_size=SIDE)
    images = [data_uri(encode(blocks(64, 64, seed=s), "PNG")) for s in range(3)]
    items = [{"image": im, "payload": {"n": i, "kind": "block"}} for i, im in enumerate(images)]
    ids = _upsert(server, name, [*items, {"text": "seven", "payload": {"n": 3}}])
    thumbs = {p: _thumbnail(server, name, p).content for p in ids[:3]}
    url = f"{server.url}/v1/collections/{name}/points/payload"

    assert httpx.post(url, json={"ids": ids[:1], "payload": {"tag": "a"}}).status_code == 204
    r = httpx.put(url, json={"ids": ids[1:2], "payload": {"only": 1}})
    assert r.status_code == 204, r.text
    by_filter = {"filter": {"must": [{"key": "n", "range": {"gte": 2}}]}, "payload": {"only": 2}}
    assert httpx.put(url, json=by_filter).status_code == 204
    gone = {"ids": ids[:1], "keys": ["kind"]}
    assert httpx.post(f"{url}/delete", json=gone).status_code == 204

    got = [httpx.get(f"{server.url}/v1/collections/{name}/points/{p}").json() for p in ids]
    assert [g["payload"] for g in got] == [
        {"n": 0, "tag": "a"},
        {"only": 1},
        {"only": 2},
        {"only": 2},
    ]
    for p, thumb in thumbs.items():
        r = _thumbnail(server, name, p)
        assert r.status_code == 200 and r.content == thumb, p
    assert _thumbnail(server, name, ids[3]).status_code == 404  # a text point has none

    for body in (
        {"ids": ids[:1], "payload": {THUMBNAIL_KEY: "not a jpeg"}},
        {"filter": {"must": [{"key": "n", "match": {"value": 0}}]}, "payload": {THUMBNAIL_KEY: 1}},
    ):
        for method in ("POST", "PUT"):
            r = httpx.request(method, url, json=body)
            assert r.status_code == 422 and "reserved" in r.text, r.text
    assert _thumbnail(server, name, ids[0]).content == thumbs[ids[0]]
    r = httpx.post(f"{url}/delete", json={"ids": ids[:1], "keys": [THUMBNAIL_KEY]})
    assert r.status_code == 422, r.text


def test_a_merge_is_checked_on_the_users_payload_alone(server: Server) -> None:
    """A thumbnail (here 56 KB) does not count towards max_payload_bytes (256 KB): a merge that
    keeps the user's payload within the limit is accepted, as the upsert was."""
    name = _collection(server, thumbnail_size=MAX_SIDE)
    image = data_uri(encode(noise(256, 256, seed=1), "PNG"))
    (point,) = _upsert(server, name, [{"image": image, "payload": {"pad": "p" * 220_000}}])
    r = httpx.post(
        f"{server.url}/v1/collections/{name}/points/payload",
        json={"ids": [point], "payload": {"tag": "x"}},
    )
    assert r.status_code == 204, r.text
    r = httpx.post(
        f"{server.url}/v1/collections/{name}/points/payload",
        json={"ids": [point], "payload": {"more": "m" * 50_000}},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "payload_too_large", r.text
    assert _thumbnail(server, name, point).status_code == 200
