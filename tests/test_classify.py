"""`POST /v1/classify` and `/v1/label-sets` through real HTTP on the shipped default model:
scores by the family's rule, prompt ensembles, top-k, the text-embedding cache, label sets."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

import httpx
import numpy as np

from tests.mnist import held_out
from tests.server import Server
from training.mnist import NAMES


def classify(server: Server, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = httpx.post(f"{server.url}/v1/classify", json=body, timeout=60)
    assert r.status_code == status, r.text
    return dict(r.json())


def text_items(server: Server) -> float:
    """Texts the text tower has embedded so far (Prometheus counter)."""
    metrics = httpx.get(f"{server.url}/metrics").text
    found = re.findall(r'clipserve_items_total\{[^}]*tower="text"[^}]*\} (\S+)', metrics)
    return sum(float(v) for v in found)


def top1(results: list[list[dict[str, Any]]], labels: np.ndarray) -> float:
    return float(np.mean([r[0]["label"] == NAMES[y] for r, y in zip(results, labels, strict=True)]))


def test_clip_scores_are_a_softmax_ranked_best_first(server: Server) -> None:
    uris, labels = held_out(40)
    out = classify(server, {"images": uris, "labels": NAMES, "top_k": 10})
    assert out["model"] and len(out["results"]) == 40
    for ranked in out["results"]:
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-4
        assert sorted(r["label"] for r in ranked) == sorted(NAMES)
    assert top1(out["results"], labels) > 0.6  # chance: 0.1
    few = classify(server, {"images": uris[:2], "labels": ["one", "seven"], "top_k": 5})
    assert [len(r) for r in few["results"]] == [2, 2]  # top_k is capped by the label count
    k3 = classify(server, {"images": uris[:2], "labels": NAMES, "top_k": 3})["results"]
    assert [[x["label"] for x in r] for r in k3] == [
        [x["label"] for x in r[:3]] for r in out["results"][:2]
    ]


def test_templates_are_an_ensemble(server: Server) -> None:
    uris, labels = held_out(40)
    one = classify(server, {"images": uris, "labels": NAMES, "templates": ["{}"], "top_k": 1})
    two = classify(
        server,
        {"images": uris, "labels": NAMES, "templates": ["{}", "the digit {}"], "top_k": 1},
    )
    assert top1(one["results"], labels) > 0.5 and top1(two["results"], labels) > 0.5
    assert [r[0]["score"] for r in one["results"]] != [r[0]["score"] for r in two["results"]]


def test_repeated_labels_are_not_encoded_again(server: Server) -> None:
    uris, _ = held_out(4)
    body = {"images": uris, "labels": ["zero", "one"], "templates": ["a {} here", "{} again"]}
    classify(server, body)
    before = text_items(server)
    classify(server, body)
    assert text_items(server) == before  # every prompt came from the cache
    classify(server, {**body, "labels": ["zero", "one", "two"]})
    assert text_items(server) == before + 2  # only the new label's two prompts


def test_label_set_lifecycle(server: Server) -> None:
    uris, labels = held_out(40)
    url = f"{server.url}/v1/label-sets/lifecycle"
    put = httpx.put(url, json={"labels": NAMES, "templates": ["{}", "the digit {}"]}, timeout=30)
    assert put.status_code == 200, put.text
    assert put.json()["count"] == 10 and put.json()["templates"] == ["{}", "the digit {}"]
    assert httpx.get(url, params={"with_labels": True}).json()["labels"] == NAMES
    stored = classify(server, {"images": uris, "label_set": "lifecycle", "top_k": 10})
    direct = classify(
        server,
        {"images": uris, "labels": NAMES, "templates": ["{}", "the digit {}"], "top_k": 10},
    )
    for a, b in zip(stored["results"], direct["results"], strict=True):
        assert [x["label"] for x in a] == [x["label"] for x in b]
        np.testing.assert_allclose([x["score"] for x in a], [x["score"] for x in b], atol=1e-5)
    assert top1(stored["results"], labels) > 0.6
    # replacing a label set swaps it whole
    assert httpx.put(url, json={"labels": ["one", "seven"]}, timeout=30).status_code == 200
    again = classify(server, {"images": uris[:3], "label_set": "lifecycle"})["results"]
    assert all({x["label"] for x in r} == {"one", "seven"} for r in again)
    assert httpx.delete(url).status_code == 204
    assert httpx.get(url).status_code == 404
    assert httpx.delete(url).status_code == 404
    classify(server, {"images": uris[:1], "label_set": "lifecycle"}, status=404)


def test_classify_errors_are_clear(server: Server) -> None:
    uris, _ = held_out(2)
    broken = "data:image/png;base64,AAAA"
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"images": uris, "labels": NAMES, "label_set": "x"}, 422, "invalid_request"),
        ({"images": uris, "label_set": "x", "templates": ["{}"]}, 422, "invalid_request"),
        ({"images": [], "labels": NAMES}, 400, "empty_input"),
        ({"images": uris, "labels": []}, 400, "empty_input"),
        ({"images": uris, "labels": NAMES, "top_k": 0}, 422, "invalid_request"),
        ({"images": uris, "labels": NAMES, "model": "nope"}, 404, "model_not_found"),
        ({"images": [uris[0], broken], "labels": NAMES}, 422, "invalid_image"),
    ]
    for body, status, code in cases:
        error = classify(server, body, status=status)["error"]
        assert error["code"] == code, (body, error)
        assert error["message"]
    bad_image = classify(server, cases[-1][0], status=422)["error"]
    assert [item["index"] for item in bad_image["items"]] == [1]


def test_blank_labels_and_templates_are_prompts_still(server: Server) -> None:
    """Only whole texts must say something: a blank template is the label alone, a blank label
    the template alone (both served before the limits on labels and templates came)."""
    uris, _ = held_out(1)
    body = {"images": uris, "labels": ["one", ""], "templates": ["", "a photo of {}"]}
    assert {r["label"] for r in classify(server, body)["results"][0]} == {"one", ""}
    url = f"{server.url}/v1/label-sets/blank-label"
    assert httpx.put(url, json={"labels": [""], "templates": [" "]}).status_code == 200
    assert httpx.delete(url).status_code == 204


def test_templates_with_other_fields_are_refused(server: Server) -> None:
    uris, _ = held_out(1)
    for template in ("{} {}", "{}{x}", "{0}", "{:>99999999}", "{", "a }"):
        body = {"images": uris, "labels": ["one"], "templates": [template]}
        error = classify(server, body, status=422)["error"]
        assert error["code"] == "invalid_request" and error["param"] == "templates[0]", error
    literal = {"images": uris, "labels": ["one"], "templates": ["{{braces}} and {}"]}
    assert classify(server, literal)["results"][0][0]["label"] == "one"
    label_set = httpx.put(
        f"{server.url}/v1/label-sets/bad-template",
        json={"labels": ["one"], "templates": ["{} {}"]},
    )
    assert label_set.status_code == 422, label_set.text


def test_labels_are_texts_and_prompts_are_bounded(server: Server) -> None:
    """A 3 MB label is refused by its length, named by index and never echoed back; labels x
    templates beyond the prompt limit are refused before any is embedded."""
    uris, _ = held_out(1)
    started = time.monotonic()
    r = httpx.post(
        f"{server.url}/v1/classify",
        json={"images": uris, "labels": ["one", "x" * 3_000_000]},
        timeout=30,
    )
    assert r.status_code == 413, r.text[:500]
    assert len(r.content) < 2000 and time.monotonic() - started < 10
    error = r.json()["error"]
    assert error["code"] == "text_too_long" and error["param"] == "labels"
    assert [i["index"] for i in error["items"]] == [1]
    many = {"labels": [f"label {i}" for i in range(2000)], "templates": ["{}"] * 100}
    r = httpx.post(f"{server.url}/v1/classify", json={"images": uris, **many}, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_prompts", r.text
    r = httpx.put(f"{server.url}/v1/label-sets/too-many", json=many, timeout=30)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_prompts", r.text


def test_more_prompts_than_the_queue_holds_go_through_in_chunks(server: Server) -> None:
    """700 new labels x 3 templates = 2,100 prompts, more than the 2,048-item queue: embedded
    chunk by chunk instead of refused with 429 every time."""
    uris, _ = held_out(2)
    labels = [f"digit {i} {uuid.uuid4().hex}" for i in range(700)]
    out = classify(server, {"images": uris, "labels": labels, "top_k": 3})
    assert [len(r) for r in out["results"]] == [3, 3]
    put = httpx.put(
        f"{server.url}/v1/label-sets/chunked",
        json={"labels": [f"{label} again" for label in labels]},
        timeout=60,
    )
    assert put.status_code == 200 and put.json()["count"] == 700, put.text
