"""What a new user gets wrong in the first minutes, answered without silent wrong answers:
an image sent as a plain string, words the model does not know, an empty text, a body without
its JSON content type, something that is not an image. Real server, real `openai` client."""

from __future__ import annotations

import base64
import re

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import DEFAULT_MODEL as MODEL
from tests.images import blocks, data_uri, encode
from tests.server import Server

PNG = encode(blocks(40, 36, seed=7), "PNG")  # small: a text under the test limits


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def embed(server: Server, body: object) -> httpx.Response:
    return httpx.post(f"{server.url}/v1/embeddings", json=body, timeout=30)


def rows(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.array([d["embedding"] for d in response.json()["data"]], dtype=np.float32)


def test_an_image_uri_sent_as_text_is_embedded_as_the_image(
    server: Server, client: openai.OpenAI
) -> None:
    """The openai client without `extra_body={"modality": "image"}` sends a plain string."""
    uri = data_uri(PNG)
    image = rows(embed(server, {"input": [{"image": uri}]}))[0]
    as_string = client.embeddings.create(model=MODEL, input=[uri], encoding_format="float")
    assert float(np.dot(as_string.data[0].embedding, image)) > 0.9999
    assert as_string.usage.prompt_tokens == 0  # no text was tokenized
    mixed = rows(embed(server, {"input": ["seven", uri.replace("data:image", "DATA:IMAGE", 1)]}))
    text = rows(embed(server, {"input": [{"text": "seven"}]}))[0]
    assert float(mixed[0] @ text) > 0.9999 and float(mixed[1] @ image) > 0.9999
    # asked for explicitly, it is text (and base64 without the data: prefix stays text too)
    literal = rows(embed(server, {"input": [uri], "modality": "text"}))[0]
    assert float(literal @ image) < 0.99
    plain = rows(embed(server, {"input": [base64.b64encode(PNG).decode()]}))[0]
    assert float(plain @ image) < 0.99


def _vocabulary(server: Server) -> dict[str, object]:
    card = httpx.get(f"{server.url}/v1/models/{MODEL}").json()
    assert card["templates"], card  # what classify and `clipserve eval` fill labels into
    tokenizer = card["tokenizer"]
    assert tokenizer["vocabulary_size"] > 0 and tokenizer["kind"]
    return dict(tokenizer)


def _unknown_metric(server: Server) -> float:
    text = httpx.get(f"{server.url}/metrics").text
    found = re.search(rf'^clipserve_unknown_tokens_total{{model="{MODEL}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_words_the_model_does_not_know_are_counted(server: Server) -> None:
    """Header, usage field and metric; a word-level vocabulary lists its words, so a client
    can see which of its labels mean nothing to the model."""
    vocabulary = _vocabulary(server)
    known = vocabulary["known_words"]
    if known is None:  # byte-level BPE: every text is representable
        unknown_words, expected = ["zyzzyva", "qwxv"], 0
    else:
        assert isinstance(known, list) and "seven" in known and len(known) < 1000
        unknown_words, expected = [w for w in ("cat", "dog", "zyzzyva") if w not in known], None
        expected = len(unknown_words)
        assert expected > 0
    before = _unknown_metric(server)
    response = embed(server, {"input": [" ".join(unknown_words), "seven"]})
    assert response.status_code == 200
    assert response.headers["x-unknown-tokens"] == str(expected)
    assert response.json()["usage"]["unknown_tokens"] == expected
    assert _unknown_metric(server) - before == expected
    fine = embed(server, {"input": ["seven"]})
    assert fine.headers["x-unknown-tokens"] == "0" and fine.json()["usage"]["unknown_tokens"] == 0
    body = {"images": [data_uri(PNG)], "labels": [*unknown_words, "seven"]}
    classified = httpx.post(f"{server.url}/v1/classify", json=body, timeout=30)
    assert classified.status_code == 200 and classified.headers["x-unknown-tokens"] == str(expected)


@pytest.mark.parametrize("value", ["", "   ", ["seven", ""], ["seven", "\n\t"]])
def test_an_empty_text_is_refused(server: Server, value: object) -> None:
    response = embed(server, {"input": value})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "empty_text" and "empty" in error["message"]
    assert error["items"][0]["index"] == (0 if isinstance(value, str) else 1)


def test_text_errors_name_the_index_in_the_whole_request(server: Server) -> None:
    body = {"input": [{"image": data_uri(PNG)}, {"text": "seven"}, {"text": ""}]}
    assert embed(server, body).json()["error"]["items"][0]["index"] == 2


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/v1/embeddings", b'{"input": "seven"}'),
        ("POST", "/v1/classify", b'{"images": ["x"], "labels": ["seven"]}'),
        ("PUT", "/v1/collections/formless", b'{"distance": "dot"}'),
    ],
)
def test_a_body_without_json_content_type_is_told_so(
    server: Server, method: str, path: str, body: bytes
) -> None:
    """curl's `-d` without `-H 'content-type: application/json'` sends a form type."""
    form = {"content-type": "application/x-www-form-urlencoded"}
    response = httpx.request(method, f"{server.url}{path}", content=body, headers=form)
    assert response.status_code == 415, response.text
    error = response.json()["error"]
    assert error["code"] == "unsupported_media_type"
    assert (
        "must be JSON" in error["message"] and "content-type: application/json" in error["message"]
    )
    assert httpx.get(f"{server.url}/v1/collections/formless").status_code == 404  # nothing made


NOT_IMAGES = {
    "invalid base64": "%%%not-base64%%%",
    "data URI without base64": "data:image/png,abc",
    "a text file": data_uri(b"just some words, not pixels\n" * 4, "text/plain"),
    "truncated png": data_uri(PNG[:60]),
}


def test_whatever_is_not_an_image_is_one_status_and_code(server: Server) -> None:
    body = {"input": list(NOT_IMAGES.values()), "modality": "image"}
    response = embed(server, body)
    assert response.status_code == 422, response.text
    items = response.json()["error"]["items"]
    assert [(i["index"], i["code"]) for i in items] == [(k, "invalid_image") for k in range(4)]
    files = [("files", ("notes.png", b"just some words", "image/png"))]
    upload = httpx.post(f"{server.url}/v1/embed/images", files=files, timeout=30)
    assert upload.status_code == 422 and upload.json()["error"]["code"] == "invalid_image"


def test_label_sets_are_listed(server: Server) -> None:
    for name, labels in (("listed-b", ["one", "two"]), ("listed-a", ["seven"])):
        put = httpx.put(f"{server.url}/v1/label-sets/{name}", json={"labels": labels}, timeout=30)
        assert put.status_code == 200, put.text
        assert put.headers["x-unknown-tokens"] == "0"
    listed = httpx.get(f"{server.url}/v1/label-sets")
    assert listed.status_code == 200, listed.text
    mine = [s for s in listed.json()["label_sets"] if s["name"].startswith("listed-")]
    assert [(s["name"], s["count"], s["model"]) for s in mine] == [
        ("listed-a", 1, MODEL),
        ("listed-b", 2, MODEL),
    ]
    assert all(s["templates"] and s["labels"] is None for s in mine)
