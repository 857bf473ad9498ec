"""Property-based fuzzing from our own OpenAPI schema (schemathesis, a bounded number of cases):
no 5xx, and every status, content type, header and body conforms to the schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import Server

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    ]
)
# The coverage phase enumerates a schema's alternatives: on Qdrant's recursive `Filter` (the
# body of these operations) it sent 25,000 requests in 15 minutes without finishing. They get
# the examples and fuzzing phases; tests/test_filters*.py cover the filter language itself.
CONFIG = """
[[operations]]
include-path-regex = "/(search|points/delete)$"
phases.coverage.enabled = false
"""


@pytest.mark.slow
def test_api_conforms_and_never_fails(server: Server, tmp_path: Path) -> None:
    st = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is part of the dev extra"
    (tmp_path / "schemathesis.toml").write_text(CONFIG)  # read from the working directory
    result = subprocess.run(
        [
            st,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            CHECKS,
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
