"""The playground at /ui/: its files over real HTTP, and the page itself in headless Chromium
(Debian's `chromium`, installed by .ci/install-browser.sh, driven by playwright, which never
downloads a browser of its own here) against a live server with API keys, on the default model
and a small collection of real digits. The page must show what the API answers.

Screenshots are written under the test's tmp dir, and into $CLIPSERVE_TEST_ARTIFACTS when set.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.api.routes.playground import TYPES
from tests.conftest import DEFAULT_MODEL, MODELS_DIR
from tests.server import Server, run_server
from training.mnist import write_image_folder

CHROMIUM = os.environ.get("CLIPSERVE_CHROMIUM", "/usr/bin/chromium")
# What works on these machines (no network, root, no GPU): without the background-networking
# flags Chromium keeps trying to reach its vendor's hosts.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
KEY = "playground-test-key"
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def keep(path: Path) -> None:
    folder = os.environ.get("CLIPSERVE_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(folder) / path.name)


# --- the files -----------------------------------------------------------------------------
def test_page_and_its_files_come_from_the_server(server: Server) -> None:
    page = httpx.get(f"{server.url}/ui/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    referenced = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert referenced and all(not re.match(r"^(\w+:)?//", ref) for ref in referenced), (
        referenced
    )  # nothing from another origin: no CDN
    for ref in referenced:
        if ref.startswith("data:"):
            continue
        r = httpx.get(f"{server.url}/ui/{ref}")
        assert r.status_code == 200 and r.headers["content-type"] == TYPES[ref], ref
    redirect = httpx.get(f"{server.url}/ui")
    assert redirect.status_code in (307, 308) and redirect.headers["location"].endswith("/ui/")
    missing = httpx.get(f"{server.url}/ui/../service/config.py")
    assert missing.status_code == 404
    r = httpx.get(f"{server.url}/ui/nothing.js")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert "/ui/" not in httpx.get(f"{server.url}/openapi.json").json()["paths"]


@pytest.mark.slow
def test_the_playground_can_be_switched_off(tmp_path: Path) -> None:
    with run_server(tmp_path, "--models", DEFAULT_MODEL, "--no-ui") as srv:
        r = httpx.get(f"{srv.url}/ui/")
        assert r.status_code == 404
        assert httpx.get(f"{srv.url}/v1/models").status_code == 200


# --- the page in a browser -----------------------------------------------------------------
@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A server with an API key, a collection of 40 digits with thumbnails, a label set."""
    tmp = tmp_path_factory.mktemp("playground")
    folder = tmp / "digits"
    write_image_folder(folder, 40)
    args = ["--models-dir", str(MODELS_DIR), "--models", DEFAULT_MODEL, "--api-keys", KEY]
    with run_server(tmp, *args) as srv:
        api = httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        assert api.put("/v1/collections/digits", json={"thumbnail_size": 64}).status_code == 201
        items = [
            {
                "image": "data:image/png;base64," + base64.b64encode(p.read_bytes()).decode(),
                "payload": {"label": p.parent.name, "file": p.name},
            }
            for p in sorted(folder.rglob("*.png"))
        ]
        assert api.post("/v1/collections/digits/points", json={"items": items}).status_code == 200
        assert api.put("/v1/label-sets/digits", json={"labels": LABELS}).status_code == 200
        # no thumbnails of its own: texts whose payload links a picture
        assert api.put("/v1/collections/linked", json={}).status_code == 201
        linked = [  # ids of their own: the same caption twice would be one point
            {
                "id": k,
                "text": f"a photo of a {it['payload']['label']}.",
                "payload": {"image_url": it["image"]},
            }
            for k, it in enumerate(items[:3])
        ]
        assert api.post("/v1/collections/linked/points", json={"items": linked}).status_code == 200
        yield srv, folder


def _api(srv: Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {KEY}"}
    r = httpx.post(f"{srv.url}{path}", json=body, headers=headers, timeout=60)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _shown_hits(page: Any) -> list[tuple[str, str, str]]:
    """(id, score, payload text) of every result card the page shows."""
    cards = page.locator("#results .hit")
    return [
        (
            cards.nth(i).get_attribute("data-id"),
            cards.nth(i).locator(".score").inner_text(),
            cards.nth(i).locator(".payload").inner_text(),
        )
        for i in range(cards.count())
    ]


def _expected_hits(answer: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(str(h["id"]), f"{h['score']:.4f}", h["payload"]) for h in answer["results"]]


def _same_hits(page: Any, answer: dict[str, Any]) -> None:
    import json

    shown = _shown_hits(page)
    expected = _expected_hits(answer)
    assert [(i, s) for i, s, _ in shown] == [(i, s) for i, s, _ in expected]
    assert [json.loads(p) for _, _, p in shown] == [p for _, _, p in expected]


@pytest.mark.slow
def test_search_and_zero_shot_in_a_browser(keyed: tuple[Server, Path], tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    srv, folder = keyed
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run .ci/install-browser.sh"
    digit = sorted((folder / "seven").glob("*.png"))[0]
    requests: list[str] = []
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("request", lambda r: requests.append(r.url))
            page.on("console", lambda m: m.type == "error" and problems.append(m.text))
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.goto(f"{srv.url}/ui/")

            # without the key the page says what is missing
            expect(page.locator("#status")).to_contain_text("API key")
            assert page.locator("#model option").count() == 0
            problems.clear()  # the browser logs the 401 answers it was expecting
            page.fill("#api-key", KEY)
            page.press("#api-key", "Enter")
            expect(page.locator("#model")).to_have_value(DEFAULT_MODEL)
            expect(page.locator("#collection")).to_have_value("digits")
            expect(page.locator("#collection-info")).to_contain_text("40 points")

            # a typed text: the grid shows the API's answer, with thumbnails
            page.fill("#query-text", "a photo of a seven.")
            page.click("#search-button")
            expect(page.locator("#query-summary")).to_contain_text('for "a photo of a seven."')
            answer = _api(
                srv,
                "/v1/collections/digits/search",
                {"query": {"text": "a photo of a seven."}, "limit": 12},
            )
            expect(page.locator("#results .hit")).to_have_count(12)
            _same_hits(page, answer)
            thumbs = page.locator("#results .hit img")
            expect(thumbs).to_have_count(12)
            for i in range(12):
                assert (thumbs.nth(i).get_attribute("src") or "").startswith("blob:")
                expect(thumbs.nth(i)).to_have_js_property("complete", True)
                assert thumbs.nth(i).evaluate("img => img.naturalWidth") > 0
            page.screenshot(path=tmp_path / "playground-search.png", full_page=True)

            # a payload filter, as Qdrant's filter JSON
            page.fill("#filters .filter-key", "label")
            page.fill("#filters .filter-value", "seven")
            page.click("#search-button")
            expect(page.locator("#query-summary")).to_contain_text('"match":{"value":"seven"}')
            filtered = _api(
                srv,
                "/v1/collections/digits/search",
                {
                    "query": {"text": "a photo of a seven."},
                    "limit": 12,
                    "filter": {"must": [{"key": "label", "match": {"value": "seven"}}]},
                },
            )
            expect(page.locator("#results .hit")).to_have_count(len(filtered["results"]))
            _same_hits(page, filtered)
            assert {h["payload"]["label"] for h in filtered["results"]} == {"seven"}
            page.click("#filters .filter button")  # remove the filter again

            # "more like this": a click on a result searches by its stored id
            first = page.locator("#results .hit").first.get_attribute("data-id")
            page.locator("#results .hit").first.click()
            expect(page.locator("#query-summary")).to_contain_text(f"more like point {first}")
            similar = _api(
                srv, "/v1/collections/digits/search", {"query": {"id": first}, "limit": 12}
            )
            _same_hits(page, similar)
            assert first not in [i for i, _, _ in _shown_hits(page)]

            # an uploaded image
            page.set_input_files("#query-file", str(digit))
            expect(page.locator("#query-summary")).to_contain_text("for the image")
            uri = "data:image/png;base64," + base64.b64encode(digit.read_bytes()).decode()
            by_image = _api(
                srv, "/v1/collections/digits/search", {"query": {"image": uri}, "limit": 12}
            )
            _same_hits(page, by_image)

            # a collection without thumbnails shows the pictures its payloads link
            page.select_option("#collection", "linked")
            page.fill("#query-text", "a photo of a seven.")
            page.click("#search-button")
            expect(page.locator("#results .hit")).to_have_count(3)
            for i in range(3):
                src = page.locator("#results .hit img").nth(i).get_attribute("src") or ""
                assert src.startswith("data:image/png;base64,")
            page.select_option("#collection", "digits")

            # zero-shot: typed labels, then the stored label set; ranked bars as the API ranks
            page.click(".tab[data-panel=zero-shot-panel]")
            page.set_input_files("#zs-file", str(digit))
            page.fill("#zs-labels", "zero, one, seven\neight")
            page.click("#classify-button")
            expected = _api(
                srv,
                "/v1/classify",
                {"images": [uri], "labels": ["zero", "one", "seven", "eight"], "top_k": 4},
            )["results"][0]
            bars = page.locator("#zs-results .bar")
            expect(bars).to_have_count(4)
            shown = [
                (
                    bars.nth(i).locator(".label").inner_text(),
                    bars.nth(i).locator(".value").inner_text(),
                )
                for i in range(4)
            ]
            assert shown == [(r["label"], f"{r['score']:.4f}") for r in expected]
            widths = [
                bars.nth(i).locator(".fill").evaluate("e => e.getBoundingClientRect().width")
                for i in range(4)
            ]
            assert widths == sorted(widths, reverse=True) and widths[0] > 0
            page.screenshot(path=tmp_path / "playground-zero-shot.png", full_page=True)

            page.select_option("#zs-label-set", "digits")
            page.click("#classify-button")
            expected = _api(
                srv, "/v1/classify", {"images": [uri], "label_set": "digits", "top_k": 10}
            )["results"][0]
            expect(bars).to_have_count(10)
            expect(bars.first.locator(".label")).to_have_text(expected[0]["label"])
            expect(bars.nth(9).locator(".label")).to_have_text(expected[9]["label"])
        finally:
            browser.close()

    assert not problems, problems  # no script error, no blocked load
    origins = {re.match(r"^(\w+:(//[^/]+)?)", u).group(1) for u in requests}  # type: ignore[union-attr]
    assert origins <= {srv.url, "blob:", "data:"}, origins
    for name in ("playground-search.png", "playground-zero-shot.png"):
        assert (tmp_path / name).stat().st_size > 20_000
        keep(tmp_path / name)
