"""The embeddings API through real uvicorn on a real port, with the official `openai` client."""

from __future__ import annotations

import base64
import re
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import openai
import pytest

from tests.conftest import DEFAULT_MODEL as MODEL
from tests.images import data_uri, encode, noise
from tests.server import Server

TEXTS = ["a photo of the number seven", "the digit 3", "zero", "a handwritten nine"]


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def dim(server: Server) -> int:
    models = httpx.get(f"{server.url}/v1/models").json()
    return int(models["data"][0]["dimension"])


def images(n: int) -> list[bytes]:
    return [encode(noise(48 + 7 * i, 40 + 5 * i, seed=i), "PNG") for i in range(n)]


def vectors(response: object) -> np.ndarray:
    """Rows of a response; explicit base64 comes back undecoded (little-endian float32)."""
    rows = []
    for d in response.data:  # type: ignore[attr-defined]
        emb = d.embedding
        if isinstance(emb, str):
            emb = np.frombuffer(base64.b64decode(emb), dtype="<f4")
        rows.append(emb)
    return np.array(rows, dtype=np.float32)


def test_health_ready_and_models(server: Server) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{server.url}/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    models = httpx.get(f"{server.url}/v1/models").json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert card["object"] == "model" and card["dimension"] > 0
    assert set(card["modalities"]) == {"image", "text"}


def test_openai_client_text_embeddings(client: openai.OpenAI, dim: int) -> None:
    for fmt in ("float", "base64"):
        out = vectors(client.embeddings.create(model=MODEL, input=TEXTS, encoding_format=fmt))  # type: ignore[arg-type]
        assert out.shape == (len(TEXTS), dim)
        np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    default_fmt = client.embeddings.create(model=MODEL, input=TEXTS)  # client sends base64
    np.testing.assert_allclose(vectors(default_fmt), out, atol=1e-6)
    assert default_fmt.usage.prompt_tokens > len(TEXTS)


def test_identical_inputs_give_identical_embeddings(client: openai.OpenAI) -> None:
    out = vectors(client.embeddings.create(model=MODEL, input=["seven", "one", "seven"]))
    assert np.array_equal(out[0], out[2]) and not np.allclose(out[0], out[1])
    again = vectors(client.embeddings.create(model=MODEL, input="seven"))
    np.testing.assert_allclose(again[0], out[0], atol=1e-6)


def test_openai_client_image_embeddings(client: openai.OpenAI, dim: int) -> None:
    blobs = images(3)
    uris = [data_uri(b) for b in blobs]
    plain = [base64.b64encode(b).decode() for b in blobs]
    a = vectors(client.embeddings.create(model=MODEL, input=uris, extra_body={"modality": "image"}))
    b = vectors(
        client.embeddings.create(model=MODEL, input=plain, extra_body={"modality": "image"})
    )
    assert a.shape == (3, dim)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a[0], a[1])


def test_typed_items_mix_texts_and_images(server: Server) -> None:
    blob = images(1)[0]
    mixed = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"input": [{"text": "seven"}, {"image": data_uri(blob)}, {"text": "one"}]},
    ).json()
    texts = httpx.post(f"{server.url}/v1/embeddings", json={"input": ["seven", "one"]}).json()
    imgs = httpx.post(
        f"{server.url}/v1/embeddings", json={"input": [data_uri(blob)], "modality": "image"}
    ).json()
    got = [d["embedding"] for d in mixed["data"]]
    assert [d["index"] for d in mixed["data"]] == [0, 1, 2]
    np.testing.assert_allclose(got[0], texts["data"][0]["embedding"], atol=1e-6)
    np.testing.assert_allclose(got[2], texts["data"][1]["embedding"], atol=1e-6)
    np.testing.assert_allclose(got[1], imgs["data"][0]["embedding"], atol=1e-6)


def test_multipart_upload_of_many_files(server: Server) -> None:
    blobs = images(4)
    files = [("files", (f"img{i}.png", b, "image/png")) for i, b in enumerate(blobs)]
    out = httpx.post(f"{server.url}/v1/embed/images", files=files).json()
    assert [d["filename"] for d in out["data"]] == [f"img{i}.png" for i in range(4)]
    ref = httpx.post(
        f"{server.url}/v1/embeddings",
        json={"input": [data_uri(b) for b in blobs], "modality": "image"},
    ).json()
    np.testing.assert_allclose(
        [d["embedding"] for d in out["data"]], [d["embedding"] for d in ref["data"]], atol=1e-6
    )


def _batches(server: Server, tower: str) -> tuple[float, float]:
    """(number of batches, number of batches of size 1) so far for a tower."""
    text = httpx.get(f"{server.url}/metrics").text
    labels = rf'model="[^"]+",tower="{tower}"'
    count = float(re.search(rf"clipserve_batch_size_count{{{labels}}} (\S+)", text).group(1))  # type: ignore[union-attr]
    ones = re.search(rf'clipserve_batch_size_bucket{{le="1.0",{labels}}} (\S+)', text)
    return count, float(ones.group(1)) if ones else 0.0


@pytest.mark.parametrize("modality", ["text", "image"])
def test_concurrent_requests_are_batched_and_match_unbatched(server: Server, modality: str) -> None:
    if modality == "text":
        inputs = [f"a photo of the number {i}" for i in range(24)]
    else:
        inputs = [data_uri(b) for b in images(24)]
    body = {"modality": modality, "encoding_format": "float"}
    alone = [
        httpx.post(f"{server.url}/v1/embeddings", json={**body, "input": [x]}).json()
        for x in inputs
    ]
    before = _batches(server, modality)
    with ThreadPoolExecutor(24) as pool:
        together = list(
            pool.map(
                lambda x: httpx.post(
                    f"{server.url}/v1/embeddings", json={**body, "input": [x]}, timeout=30
                ).json(),
                inputs,
            )
        )
    after = _batches(server, modality)
    batches, singles = after[0] - before[0], after[1] - before[1]
    assert batches < len(inputs) and batches - singles > 0  # some batches held more than one
    for a, t in zip(alone, together, strict=True):
        np.testing.assert_allclose(t["data"][0]["embedding"], a["data"][0]["embedding"], atol=1e-5)


def test_metrics_exposes_the_essentials(server: Server) -> None:
    body = {"input": [data_uri(images(1)[0])], "modality": "image"}
    assert httpx.post(f"{server.url}/v1/embeddings", json=body).status_code == 200
    text = httpx.get(f"{server.url}/metrics").text
    for name in (
        "clipserve_requests_total",
        "clipserve_request_duration_seconds_bucket",
        "clipserve_queue_depth",
        "clipserve_batch_size_bucket",
        "clipserve_inference_seconds_bucket",
        "clipserve_image_decode_seconds_bucket",
        "clipserve_errors_total",
    ):
        assert name in text, name
    decoded = re.search(r"^clipserve_image_decode_seconds_count (\S+)$", text, re.M)
    assert decoded and float(decoded.group(1)) > 0  # images were decoded and timed


def test_openai_client_sees_our_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        client.embeddings.create(model="no-such-model", input="x")
    assert "no-such-model" in str(err.value)
    with pytest.raises(openai.BadRequestError):
        client.embeddings.create(model=MODEL, input=[])
