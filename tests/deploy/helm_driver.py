"""Lint, render and schema-check the Helm chart; run by the `.tools/helm` venv, not by pytest.

Helm's own Go library does the work, offline: `helm-python-sdk` (Helm 4's SDK behind a C ABI)
lints with values (`helm lint --strict`) and renders (`helm template`); `helm-sdkpy` (Helm 3's
SDK) lints the chart with its defaults, so both Helm majors accept it. `kubernetes-validate`
then checks every rendered object against the Kubernetes OpenAPI schemas (strict: unknown fields
are errors) for each requested Kubernetes version.

stdin: {"chart", "release", "namespace", "values", "kube_versions", "helm3_lint"}
stdout: {"lint", "lint_helm3", "manifests", "objects", "validation", "render_error"}
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import helm_python
import kubernetes_validate
import yaml


def helm4_lint(chart: str, values: dict[str, Any], namespace: str) -> dict[str, Any]:
    report = helm_python.lint(chart, values, strict=True, namespace=namespace)
    return {
        "version": helm_python.helm_sdk_version(),
        "messages": report.get("messages") or [],
        "errors": report.get("errors") or [],
    }


def helm3_lint(chart: str) -> dict[str, Any]:
    import helm_sdkpy

    config = helm_sdkpy.Configuration(namespace="default")
    report = asyncio.run(helm_sdkpy.Lint(config).run(chart))
    return {"version": helm_sdkpy.get_version(), "report": report}


def validate(objects: list[dict[str, Any]], versions: list[str]) -> list[dict[str, Any]]:
    results = []
    for obj in objects:
        for version in versions:
            entry = {
                "kind": obj.get("kind"),
                "apiVersion": obj.get("apiVersion"),
                "name": (obj.get("metadata") or {}).get("name"),
                "kube_version": version,
                "status": "ok",
                "error": None,
            }
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.SchemaNotFoundError as exc:
                entry["status"], entry["error"] = "no_schema", str(exc)
            except kubernetes_validate.ValidationError as exc:
                path = "/".join(str(p) for p in exc.path)
                entry["status"], entry["error"] = "invalid", f"{path}: {exc.message}"
            results.append(entry)
    return results


def main() -> None:
    req = json.load(sys.stdin)
    chart_path = req["chart"]
    values = req.get("values") or {}
    namespace = req.get("namespace", "default")
    out: dict[str, Any] = {"render_error": None, "manifests": {}, "objects": [], "validation": []}
    out["lint"] = helm4_lint(chart_path, values, namespace)
    if req.get("helm3_lint"):
        out["lint_helm3"] = helm3_lint(chart_path)
    try:
        with helm_python.Chart.load(chart_path) as chart:
            manifests = chart.render(
                values, name=req.get("release", "rel"), namespace=namespace, is_install=True
            )
    except helm_python.HelmError as exc:
        out["render_error"] = str(exc)
        json.dump(out, sys.stdout)
        return
    out["manifests"] = manifests
    for path in sorted(manifests):
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(manifests[path]):
            if doc:
                doc.setdefault("metadata", {}).setdefault("annotations", {})
                out["objects"].append({"template": path, "object": doc})
    out["validation"] = validate([o["object"] for o in out["objects"]], req["kube_versions"])
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
