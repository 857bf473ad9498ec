"""deploy/helm/clipserve: lint and render with Helm's own Go library under several value sets,
validate every rendered object against the Kubernetes schemas, and check what matters: probes,
GPU requests, the API-key Secret, non-root pods, the store and Triton wiring.

The Helm and Kubernetes tooling lives in .tools/helm (see tests/deploy/helm_driver.py).
"""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.chart import (
    FULLNAME,
    KUBE_VERSIONS,
    configmap_env,
    container,
    helm,
    objects,
    one,
)
from tests.deploy.tools import CHART, REPO

pytestmark = pytest.mark.deploy
# Custom resources: no schema in kubernetes-validate; their shape is asserted below instead.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}

EXTERNAL_QDRANT = {
    "mode": "external",
    "external": {"url": "http://qdrant.qdrant.svc:6333", "apiKey": "qdrant-secret"},
}
GPU = {
    "gpu": {"enabled": True},
    "nodeSelector": {"nvidia.com/gpu.present": "true"},
    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
}
VALUE_SETS: dict[str, dict[str, Any]] = {
    "cpu-default": {},
    "gpu": GPU,
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
    "triton-models-init": {
        "triton": {"enabled": True},
        "models": {"source": "init", "init": {"image": "registry.local/clip-models:2026.11"}},
        "qdrant": {"mode": "external", "external": {"url": "http://qdrant:6333"}},
    },
    "gpu-queue-depth": {
        **GPU,
        "qdrant": {"mode": "external", "external": {"url": "http://qdrant:6333"}},
        "serviceMonitor": {"enabled": True},
        "autoscaling": {
            "enabled": True,
            "targetCPUUtilizationPercentage": 0,
            "queueDepth": {"enabled": True, "averageValue": 48},
        },
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


def rendered(name: str) -> dict[str, Any]:
    out = helm(json.dumps(VALUE_SETS[name], sort_keys=True))
    assert out["render_error"] is None, f"{name}: {out['render_error']}"
    return out


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
        ({"gpu": {"enabled": True}, "triton": {"enabled": True}}, "GPU they never use"),
        ({"terminationGracePeriodSeconds": 30}, "must cover preStopSleepSeconds"),
        (
            {"preStopSleepSeconds": 5, "config": {"REQUEST_TIMEOUT_S": "60"}},
            "must cover preStopSleepSeconds plus the request timeout (65 s)",
        ),
        (
            {
                "qdrant": EXTERNAL_QDRANT,
                "autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": 0},
            },
            "autoscaling needs a metric",
        ),
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
    assert env["CLIPSERVE_MODELS"] == "mini-clip"
    c = container(triton, "triton")
    assert c["image"].startswith("nvcr.io/nvidia/tritonserver:") and c["image"].endswith("-py3")
    assert "--model-repository=/models/mini-clip" in c["args"]
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # models.source=image: an init container copies the models baked into the clipserve image.
    spec = triton["spec"]["template"]["spec"]
    (init,) = spec["initContainers"]
    assert init["image"] == "clipserve:0.1.0"
    assert "/app/models/." in " ".join(init["command"])
    # The repository path Triton gets is a Triton repository in this repo's default model.
    for tower in ("image", "text"):
        assert (REPO / "models" / "mini-clip" / tower / "config.pbtxt").is_file()
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
    (vol,) = [v for v in spec["volumes"] if v["name"] == "models"]
    assert "emptyDir" in vol


@pytest.mark.parametrize("name", ["models-init", "triton-models-init", "triton"])
def test_init_containers_fill_the_volume_from_elsewhere(name: str) -> None:
    """An init container writes the models emptyDir at MODELS_DIR, a path of its own: mounted at
    models.mountPath (/models) it would hide what a model image keeps there, and the default
    `cp -R /models/. $MODELS_DIR/` would copy a folder onto itself. (The image test runs these
    commands in the built image.)"""
    out = rendered(name)
    inits = [
        (d["metadata"]["name"], c)
        for d in objects(out, "Deployment")
        for c in d["spec"]["template"]["spec"].get("initContainers", [])
    ]
    assert inits
    for deployment, init in inits:
        (mount,) = [m for m in init["volumeMounts"] if m["name"] == "models"]
        env = {e["name"]: e["value"] for e in init["env"]}
        assert env["MODELS_DIR"] == mount["mountPath"], deployment
        assert mount["mountPath"] != "/models", deployment
        source = init["command"][-1].split("cp -R ", 1)[1].split()[0].rstrip(".")
        assert not mount["mountPath"].startswith(source.rstrip("/")), (deployment, source)


class _NoDuplicateKeys(yaml.SafeLoader):
    """YAML that refuses a mapping with a repeated key (safe_load keeps the last silently; the
    API server and other parsers may keep the first)."""


def _construct_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    keys = [loader.construct_object(k) for k, _ in node.value]
    duplicates = {k for k in keys if keys.count(k) > 1}
    if duplicates:
        raise yaml.constructor.ConstructorError(
            None, None, f"duplicate keys {sorted(duplicates)}", node.start_mark
        )
    return loader.construct_mapping(node)


_NoDuplicateKeys.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_manifests_repeat_no_key(name: str) -> None:
    for path, text in rendered(name)["manifests"].items():
        if path.endswith(".yaml"):
            list(yaml.load_all(text, Loader=_NoDuplicateKeys))  # raises on a repeated key


def test_only_clipserve_pods_match_its_service_and_pdb() -> None:
    out = rendered("external-qdrant")
    (test_pod,) = objects(out, "Pod")
    labels = test_pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/component"] == "test"
    for selector in (
        one(out, "Service")["spec"]["selector"],
        one(out, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
    ):
        assert not selector.items() <= labels.items(), selector


# --- rollouts and scaling -----------------------------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_pods_drain_before_they_stop(name: str) -> None:
    """preStop keeps a terminating pod serving while it leaves the endpoints, and the grace
    period covers that sleep plus the request timeout the server drains for after SIGTERM."""
    out = rendered(name)
    dep = one(out, "Deployment")
    command = container(dep, "clipserve")["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and int(command[1]) == 10
    timeout = float(configmap_env(out).get("CLIPSERVE_REQUEST_TIMEOUT_S", 30))
    grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= int(command[1]) + timeout


def test_no_prestop_when_switched_off() -> None:
    out = helm(json.dumps({"preStopSleepSeconds": 0}))
    assert "lifecycle" not in container(one(out, "Deployment"), "clipserve")


def test_hpa_scales_gpu_pods_on_queue_depth(server) -> None:
    """The HPA asks for the per-pod custom metric that the documented Prometheus adapter rule
    serves, built from a series the service really exports."""
    out = rendered("gpu-queue-depth")
    (metric,) = one(out, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "48"}
    name = metric["pods"]["metric"]["name"]
    adapter = yaml.safe_load((CHART.parent / "prometheus-adapter-values.yaml").read_text())
    (rule,) = adapter["rules"]["custom"]
    assert rule["name"]["as"] == name
    assert rule["resources"]["overrides"] == {
        "namespace": {"resource": "namespace"},
        "pod": {"resource": "pod"},
    }
    series = rule["seriesQuery"].split("{", 1)[0]
    exported = httpx.get(f"{server.url}/metrics").text
    assert f"# TYPE {series} gauge" in exported
    assert any(line.startswith(f"{series}{{") for line in exported.splitlines())
    # The adapter needs the series scraped with pod labels: the ServiceMonitor does that.
    assert objects(out, "ServiceMonitor")


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
