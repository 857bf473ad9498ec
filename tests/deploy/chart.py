"""Render deploy/helm/clipserve with Helm's own Go library (the .tools/helm venv runs
helm_driver.py) and pick objects out of the result; shared by the chart tests and the image
test that runs what the chart renders."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from tests.deploy.tools import CHART, REPO, run, tool

DRIVER = Path(__file__).with_name("helm_driver.py")
RELEASE, NAMESPACE = "emb", "ml"
FULLNAME = f"{RELEASE}-clipserve"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate bundles.
KUBE_VERSIONS = ["1.25.0", "1.37.0"]


@cache
def helm(values_json: str, helm3_lint: bool = False) -> dict[str, Any]:
    """Lint, render and schema-check with these values (JSON, so that results can be cached)."""
    python = tool("helm-python")
    request = {
        "chart": str(CHART),
        "release": RELEASE,
        "namespace": NAMESPACE,
        "values": json.loads(values_json),
        "kube_versions": KUBE_VERSIONS,
        "helm3_lint": helm3_lint,
    }
    result = run([python, DRIVER], input=json.dumps(request), cwd=REPO)
    assert result.returncode == 0, f"helm driver failed:\n{result.stderr}"
    return json.loads(result.stdout)


def render(values: dict[str, Any]) -> dict[str, Any]:
    out = helm(json.dumps(values, sort_keys=True))
    assert out["render_error"] is None, out["render_error"]
    return out


def objects(out: dict[str, Any], kind: str | None = None) -> list[dict[str, Any]]:
    objs = [o["object"] for o in out["objects"]]
    return [o for o in objs if kind is None or o["kind"] == kind]


def one(out: dict[str, Any], kind: str, name: str = FULLNAME) -> dict[str, Any]:
    matches = [o for o in objects(out, kind) if o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, got {len(matches)}"
    return matches[0]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return c


def configmap_env(out: dict[str, Any]) -> dict[str, str]:
    return one(out, "ConfigMap")["data"]
