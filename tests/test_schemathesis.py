"""Property-based fuzzing from our own OpenAPI schema (schemathesis, a bounded number of cases):
no 5xx, every status, content type, header and body conforms to the schema, and the schema is
as strict as the server (schema-valid requests are accepted, except where validity depends on
content no schema can state: whether a string is a decodable image)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import Server

CONFIG = """
# 413 is how this server refuses too many items, too long texts and too large bodies
[checks.negative_data_rejection]
expected-statuses = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428",
                     "429", "5xx"]

# images as strings: no schema can say "decodes as an image" (422 invalid_image)
[[operations]]
include-path-regex = "^/v1/(embeddings|embed/images|classify)$"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409",
                                                     "422", "429", "5xx"]

# collections, points and search: tightened with the store's own work
[[operations]]
include-path-regex = "^/v1/collections"
checks.positive_data_acceptance.enabled = false

# The coverage phase enumerates a schema's alternatives: on Qdrant's recursive `Filter` (the
# body of these operations) it sent 25,000 requests in 15 minutes without finishing. They get
# the examples and fuzzing phases; tests/test_filters*.py cover the filter language itself.
[[operations]]
include-path-regex = "/(search(/batch)?|recommend|points/(delete|scroll|count|payload(/delete)?))$"
phases.coverage.enabled = false
"""


@pytest.mark.slow
def test_api_conforms_and_never_fails(server: Server, tmp_path: Path) -> None:
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is part of the dev extra"
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    result = subprocess.run(
        [
            st,
            "--config-file",
            str(config),
            "run",
            f"{server.url}/openapi.json",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout


def test_schema_states_the_servers_limits(server: Server) -> None:
    """The limits in the schema are this server's settings (the session server: 64 items,
    2,000 characters), counted before the items are validated."""
    schemas: dict[str, Any] = httpx.get(f"{server.url}/openapi.json").json()["components"][
        "schemas"
    ]
    embeddings = schemas["EmbeddingsRequest"]["properties"]
    (listed,) = [s for s in embeddings["input"]["anyOf"] if s.get("type") == "array"]
    assert (listed["minItems"], listed["maxItems"]) == (1, 64)
    assert schemas["TextItem"]["properties"]["text"]["maxLength"] == 2000
    dims = [s for s in embeddings["dimensions"]["anyOf"] if s.get("type") == "integer"]
    assert dims[0]["enum"] == [64]
    classify = schemas["ClassifyRequest"]
    assert classify["properties"]["images"]["maxItems"] == 64
    (labels,) = [s for s in classify["properties"]["labels"]["anyOf"] if s.get("type") == "array"]
    assert labels["maxItems"] == 100_000 and labels["items"]["maxLength"] == 2000
    (templates,) = [
        s for s in classify["properties"]["templates"]["anyOf"] if s.get("type") == "array"
    ]
    assert templates["items"]["pattern"] and templates["items"]["maxLength"] == 2000
    assert {tuple(branch["required"]) for branch in classify["oneOf"]} == {
        ("labels",),
        ("label_set",),
    }
    label_set = schemas["LabelSetCreate"]["properties"]["labels"]
    assert label_set["maxItems"] == 100_000 and label_set["items"]["maxLength"] == 2000
