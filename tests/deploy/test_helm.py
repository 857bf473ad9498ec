"""deploy/helm/clipserve: lint and render with Helm's own Go library under several value sets,
validate every rendered object against the Kubernetes schemas, and check what matters: probes,
GPU requests, the API-key Secret, non-root pods, the store and Triton wiring.

The Helm and Kubernetes tooling lives in .tools/helm (see tests/deploy/helm_driver.py).
"""

from __future__ import annotations

import base64
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.tools import CHART, REPO, run, tool

pytestmark = pytest.mark.deploy

DRIVER = Path(__file__).with_name("helm_driver.py")
RELEASE, NAMESPACE = "emb", "ml"
FULLNAME = f"{RELEASE}-clipserve"
# The chart's kubeVersion floor and the newest schemas kubernetes-validate bundles.
KUBE_VERSIONS = ["1.25.0", "1.37.0"]
# Custom resources: no schema in kubernetes-validate; their shape is asserted below instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

EXTERNAL_QDRANT = {
    "mode": "external",
    "external": {"url": "http://qdrant.qdrant.svc:6333", "apiKey": "qdrant-secret"},
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "cpu-default": {},
    "gpu": {
        "gpu": {"enabled": True},
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "external-qdrant": {
        "qdrant": EXTERNAL_QDRANT,
        "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 8},
        "podDisruptionBudget": {"enabled": True, "minAvailable": 1, "maxUnavailable": ""},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "apiKeys": {"enabled": True, "keys": ["key-one", "key-two"]},
        "affinity": {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 100,
                        "podAffinityTerm": {
                            "topologyKey": "kubernetes.io/hostname",
                            "labelSelector": {
                                "matchLabels": {"app.kubernetes.io/name": "clipserve"}
                            },
                        },
                    }
                ]
            }
        },
    },
    "triton": {
        "triton": {"enabled": True},
        "replicaCount": 2,
        "qdrant": {"mode": "external", "external": {"url": "http://qdrant:6333"}},
        "apiKeys": {"enabled": True, "existingSecret": "team-keys", "existingSecretKey": "keys"},
    },
    "models-pvc": {
        "models": {"source": "pvc", "pvc": {"existingClaim": "model-repo", "subPath": "repo"}},
        "triton": {"enabled": True, "gpu": {"enabled": False}},
        "qdrant": {"mode": "external", "external": {"url": "https://qdrant.example.test"}},
    },
    "models-init": {
        "models": {
            "source": "init",
            "names": ["mnist-clip"],
            "default": "mnist-clip",
            "init": {"image": "registry.local/clip-models:2026.11"},
        },
        "config": {"MAX_BATCH_SIZE": 128, "LOG_FORMAT": "text"},
    },
}


@cache
def helm(values_json: str, helm3_lint: bool = False) -> dict[str, Any]:
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


def rendered(name: str) -> dict[str, Any]:
    out = helm(json.dumps(VALUE_SETS[name], sort_keys=True))
    assert out["render_error"] is None, f"{name}: {out['render_error']}"
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


def pod_specs(out: dict[str, Any]) -> list[dict[str, Any]]:
    specs = [d["spec"]["template"]["spec"] for d in objects(out, "Deployment")]
    specs += [p["spec"] for p in objects(out, "Pod")]
    return specs


def gpu_limits(c: dict[str, Any]) -> dict[str, Any]:
    limits = (c.get("resources") or {}).get("limits") or {}
    requests = (c.get("resources") or {}).get("requests") or {}
    return {k: v for k, v in {**requests, **limits}.items() if "gpu" in k}


# --- lint, render, schemas ----------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lints_clean_with_helm4(name: str) -> None:
    lint = helm(json.dumps(VALUE_SETS[name], sort_keys=True))["lint"]
    assert lint["version"].startswith("v4.")
    assert not lint["errors"], lint["errors"]
    # --strict: warnings count as failures; only infos (e.g. "icon is recommended") may remain.
    worse = [m for m in lint["messages"] if m["severity"] >= 2]
    assert not worse, worse


def test_lints_clean_with_helm3() -> None:
    report = helm(json.dumps({}), helm3_lint=True)["lint_helm3"]["report"]
    assert report["TotalChartsLinted"] == 1
    assert not report.get("Errors"), report
    assert all(m["Severity"] < 2 for m in report.get("Messages") or []), report


@pytest.mark.parametrize("name", VALUE_SETS)
def test_renders_objects_valid_for_kubernetes(name: str) -> None:
    out = rendered(name)
    assert objects(out), "nothing rendered"
    problems = [v for v in out["validation"] if v["status"] == "invalid"]
    assert not problems, json.dumps(problems, indent=1)
    unchecked = {
        (v["apiVersion"], v["kind"]) for v in out["validation"] if v["status"] == "no_schema"
    }
    assert unchecked <= CRD_KINDS, unchecked
    # Every object once per Kubernetes version.
    assert len(out["validation"]) == len(objects(out)) * len(KUBE_VERSIONS)


def test_validator_is_live() -> None:
    """The schema check really checks: a bad value type fails the values schema, a bad object
    fails the Kubernetes schema."""
    out = helm(json.dumps({"replicaCount": "two"}))
    assert out["render_error"] and "replicaCount" in out["render_error"]
    out = helm(json.dumps({"extraEnv": [{"name": "X", "valeu": "typo"}]}))
    assert out["render_error"] is None
    bad = [v for v in out["validation"] if v["status"] == "invalid"]
    assert bad and all(v["kind"] == "Deployment" for v in bad)


@pytest.mark.parametrize(
    "values",
    [
        {"nosuchkey": 1},
        {"qdrant": {"mode": "cluster"}},
        {"models": {"source": "s3"}},
        {"gpu": {"enabled": "yes"}},
        {"triton": {"protocol": "tcp"}},
    ],
)
def test_values_schema_rejects(values: dict[str, Any]) -> None:
    out = helm(json.dumps(values, sort_keys=True))
    assert out["render_error"] and "schema" in out["render_error"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"replicaCount": 2}, "replicaCount must be 1"),
        ({"autoscaling": {"enabled": True}}, "autoscaling needs qdrant.mode=external"),
        ({"qdrant": {"mode": "external"}}, "needs qdrant.external.url"),
        ({"apiKeys": {"enabled": True}}, "needs apiKeys.keys or apiKeys.existingSecret"),
        ({"models": {"source": "pvc"}}, "needs models.pvc.existingClaim"),
    ],
)
def test_impossible_combinations_fail(values: dict[str, Any], message: str) -> None:
    out = helm(json.dumps(values, sort_keys=True))
    assert out["render_error"] and message in out["render_error"]


# --- probes, port, security ---------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_probes_hit_readyz_and_healthz_on_the_serving_port(name: str) -> None:
    out = rendered(name)
    c = container(one(out, "Deployment"), "clipserve")
    env = configmap_env(out)
    (port,) = [p for p in c["ports"] if p["name"] == "http"]
    assert str(port["containerPort"]) == env["CLIPSERVE_PORT"] == "8000"
    assert env["CLIPSERVE_HOST"] == "0.0.0.0"
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["httpGet"]["port"] == "http"
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300
    svc = one(out, "Service")
    (svc_port,) = svc["spec"]["ports"]
    assert svc_port["targetPort"] == "http"
    assert (
        svc["spec"]["selector"].items()
        <= one(out, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    )


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_pod_runs_as_non_root(name: str) -> None:
    out = rendered(name)
    for spec in pod_specs(out):
        pod_sc = spec.get("securityContext") or {}
        assert pod_sc.get("runAsNonRoot") is True
        for c in spec["containers"] + spec.get("initContainers", []):
            sc = c.get("securityContext") or {}
            uid = sc.get("runAsUser", pod_sc.get("runAsUser"))
            assert uid is None or uid > 0, c["name"]
            assert sc.get("allowPrivilegeEscalation") is False, c["name"]
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], c["name"]
    c = container(one(out, "Deployment"), "clipserve")
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert (
        one(out, "Deployment")["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == 10001
    )
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/data", "/tmp"} <= mounts  # the only writable paths


# --- GPU ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_gpu_resources_only_when_enabled(name: str) -> None:
    values = VALUE_SETS[name]
    out = rendered(name)
    clipserve = container(one(out, "Deployment"), "clipserve")
    env = configmap_env(out)
    if values.get("gpu", {}).get("enabled"):
        assert gpu_limits(clipserve) == {"nvidia.com/gpu": 1}
        assert clipserve["resources"]["limits"]["memory"] == "2Gi"  # merged, not replaced
        assert clipserve["image"] == "clipserve:0.1.0-cuda"
        assert env["CLIPSERVE_PROVIDERS"].startswith("TensorrtExecutionProvider,")
        spec = one(out, "Deployment")["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
        assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    else:
        assert gpu_limits(clipserve) == {}
        assert clipserve["image"] == "clipserve:0.1.0"
        assert "CLIPSERVE_PROVIDERS" not in env
    triton_on = values.get("triton", {}).get("enabled")
    triton_gpu = triton_on and values["triton"].get("gpu", {}).get("enabled", True)
    for dep in objects(out, "Deployment"):
        for c in dep["spec"]["template"]["spec"]["containers"]:
            if c["name"] == "triton":
                assert gpu_limits(c) == ({"nvidia.com/gpu": 1} if triton_gpu else {})
            elif not values.get("gpu", {}).get("enabled"):
                assert gpu_limits(c) == {}, f"{dep['metadata']['name']}/{c['name']}"


# --- API keys -----------------------------------------------------------------------------------


def test_api_keys_from_a_chart_secret_mounted_as_file() -> None:
    out = rendered("external-qdrant")
    secret = one(out, "Secret", f"{FULLNAME}-api-keys")
    keys = base64.b64decode(secret["data"]["api-keys"]).decode()
    assert keys.splitlines() == ["key-one", "key-two"]
    dep = one(out, "Deployment")
    spec = dep["spec"]["template"]["spec"]
    (vol,) = [
        v
        for v in spec["volumes"]
        if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]
    ]
    (mount,) = [m for m in container(dep, "clipserve")["volumeMounts"] if m["name"] == vol["name"]]
    assert mount["readOnly"] is True
    (item,) = vol["secret"]["items"]
    env = configmap_env(out)
    assert env["CLIPSERVE_API_KEYS_FILE"] == f"{mount['mountPath']}/{item['path']}"
    assert item["key"] == "api-keys"
    # Key material only in the Secret: not in the ConfigMap, not in env.
    assert "CLIPSERVE_API_KEYS" not in env
    blob = json.dumps([o for o in objects(out) if o["kind"] != "Secret"])
    assert "key-one" not in blob and "key-two" not in blob
    # A key change rolls the pods.
    assert "checksum/secret" in dep["spec"]["template"]["metadata"]["annotations"]


def test_api_keys_from_an_existing_secret() -> None:
    out = rendered("triton")
    assert not [s for s in objects(out, "Secret") if s["metadata"]["name"].endswith("api-keys")]
    dep = one(out, "Deployment")
    (vol,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if "secret" in v]
    assert vol["secret"]["secretName"] == "team-keys"
    assert vol["secret"]["items"] == [{"key": "keys", "path": "api-keys"}]
    assert configmap_env(out)["CLIPSERVE_API_KEYS_FILE"].endswith("/api-keys")


def test_no_api_keys_by_default() -> None:
    out = rendered("cpu-default")
    assert not objects(out, "Secret")
    assert "CLIPSERVE_API_KEYS_FILE" not in configmap_env(out)


# --- store ----------------------------------------------------------------------------------


def test_embedded_store_is_one_replica_on_a_kept_pvc() -> None:
    out = rendered("cpu-default")
    dep = one(out, "Deployment")
    assert dep["spec"]["replicas"] == 1
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    pvc = one(out, "PersistentVolumeClaim", f"{FULLNAME}-data")
    assert pvc["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    (data,) = [v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == "data"]
    assert data["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    env = configmap_env(out)
    assert env["CLIPSERVE_DATA_DIR"] == "/data" and "CLIPSERVE_QDRANT_URL" not in env
    assert not objects(out, "HorizontalPodAutoscaler")


def test_external_qdrant_scales_with_an_hpa() -> None:
    out = rendered("external-qdrant")
    env = configmap_env(out)
    assert env["CLIPSERVE_QDRANT_URL"] == "http://qdrant.qdrant.svc:6333"
    assert not objects(out, "PersistentVolumeClaim")
    dep = one(out, "Deployment")
    assert "replicas" not in dep["spec"]  # the HPA owns it
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    hpa = one(out, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    # Qdrant's API key: from a Secret, never in the ConfigMap.
    c = container(dep, "clipserve")
    (key_env,) = [e for e in c["env"] if e["name"] == "CLIPSERVE_QDRANT_API_KEY"]
    ref = key_env["valueFrom"]["secretKeyRef"]
    secret = one(out, "Secret", ref["name"])
    assert base64.b64decode(secret["data"][ref["key"]]).decode() == "qdrant-secret"
    assert "qdrant-secret" not in json.dumps(env)
    pdb = one(out, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]


def test_service_monitor_scrapes_metrics() -> None:
    out = rendered("external-qdrant")
    (sm,) = objects(out, "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert (
        sm["spec"]["selector"]["matchLabels"].items()
        <= one(out, "Service")["metadata"]["labels"].items()
    )
    assert not objects(rendered("cpu-default"), "ServiceMonitor")


# --- Triton and models ----------------------------------------------------------------------


def test_triton_deployment_and_clipserve_in_front() -> None:
    out = rendered("triton")
    triton_name = f"{FULLNAME}-triton"
    triton = one(out, "Deployment", triton_name)
    svc = one(out, "Service", triton_name)
    ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    env = configmap_env(out)
    assert env["CLIPSERVE_RUNTIME"] == "triton"
    assert env["CLIPSERVE_TRITON_URL"] == f"{triton_name}:8001"
    assert env["CLIPSERVE_TRITON_PROTOCOL"] == "grpc"
    assert env["CLIPSERVE_MODELS"] == "mnist-clip"
    c = container(triton, "triton")
    assert c["image"].startswith("nvcr.io/nvidia/tritonserver:") and c["image"].endswith("-py3")
    assert "--model-repository=/models/mnist-clip" in c["args"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # models.source=image: an init container copies the models baked into the clipserve image.
    spec = triton["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["image"] == "clipserve:0.1.0"
    assert "/app/models/." in " ".join(init["command"])
    # The repository path Triton gets is a Triton repository in this repo's default model.
    for tower in ("image", "text"):
        assert (REPO / "models" / "mnist-clip" / tower / "config.pbtxt").is_file()
    assert (
        svc["spec"]["selector"].items() <= triton["spec"]["template"]["metadata"]["labels"].items()
    )
    assert one(out, "Deployment")["spec"]["replicas"] == 2


def test_models_from_a_pvc_shared_with_triton() -> None:
    out = rendered("models-pvc")
    env = configmap_env(out)
    assert env["CLIPSERVE_MODELS_DIR"] == "/models"
    for name in (FULLNAME, f"{FULLNAME}-triton"):
        spec = one(out, "Deployment", name)["spec"]["template"]["spec"]
        (vol,) = [v for v in spec["volumes"] if v["name"] == "models"]
        assert vol["persistentVolumeClaim"] == {"claimName": "model-repo", "readOnly": True}
        (mount,) = [
            m for c in spec["containers"] for m in c["volumeMounts"] if m["name"] == "models"
        ]
        assert mount["readOnly"] is True and mount["subPath"] == "repo"
        assert not spec.get("initContainers")


def test_models_from_an_init_container() -> None:
    out = rendered("models-init")
    env = configmap_env(out)
    assert env["CLIPSERVE_MODELS_DIR"] == "/models"
    assert env["CLIPSERVE_MODELS"] == "mnist-clip"
    assert env["CLIPSERVE_DEFAULT_MODEL"] == "mnist-clip"
    assert env["CLIPSERVE_MAX_BATCH_SIZE"] == "128"
    assert env["CLIPSERVE_LOG_FORMAT"] == "text"  # config wins over the chart's default
    spec = one(out, "Deployment")["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["image"] == "registry.local/clip-models:2026.11"
    assert {"name": "MODELS_DIR", "value": "/models"} in init["env"]
    (vol,) = [v for v in spec["volumes"] if v["name"] == "models"]
    assert "emptyDir" in vol


def test_configmap_keys_are_settings() -> None:
    """Every CLIPSERVE_* key the chart can emit is a real setting (typos would be ignored)."""
    from service.config import Settings

    names = {f"CLIPSERVE_{n.upper()}" for n in Settings.model_fields}
    for name in VALUE_SETS:
        for key in configmap_env(rendered(name)):
            assert key in names, f"{name}: {key} is not a clipserve setting"


def test_notes_render() -> None:
    for name in VALUE_SETS:
        notes = rendered(name)["manifests"]["clipserve/templates/NOTES.txt"]
        assert "port-forward" in notes and FULLNAME in notes
