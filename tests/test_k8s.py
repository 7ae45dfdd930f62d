"""The Kubernetes manifests (deploy/k8s) validate offline and say what the README promises.

``kubernetes-validate`` checks every manifest against the Kubernetes OpenAPI schemas it ships
(strict: unknown fields are errors). The structural tests then hold the deployment's contract:
one worker per pod, probes on /healthz and /readyz, a non-root read-only container, a drain
before SIGTERM, selectors that match, every setting configurable. No cluster is needed.
"""

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from service.config import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
VERSION = "1.30.0"  # the oldest Kubernetes still supported upstream when this was written
MANIFESTS = sorted(path for path in K8S.glob("*.yaml") if path.name != "kustomization.yaml")


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((K8S / name).read_text())
    return document


@pytest.fixture(scope="module")
def by_kind() -> dict[str, dict[str, Any]]:
    return {load(path.name)["kind"]: load(path.name) for path in MANIFESTS}


@pytest.mark.parametrize("version", [VERSION, kubernetes_validate.latest_version()])
@pytest.mark.parametrize("path", MANIFESTS, ids=[path.name for path in MANIFESTS])
def test_manifest_validates_against_the_kubernetes_schema(path: Path, version: str) -> None:
    kubernetes_validate.validate(load(path.name), version, strict=True)


@pytest.mark.parametrize(
    ("name", "mutate"),
    [
        ("deployment.yaml", lambda d: d["spec"].update(replicas="three")),
        ("deployment.yaml", lambda d: d["spec"]["template"]["spec"].update(probes=[])),
        ("hpa.yaml", lambda d: d["spec"].pop("scaleTargetRef")),
        ("service.yaml", lambda d: d["spec"]["ports"][0].update(port="eighty")),
    ],
)
def test_the_validator_rejects_broken_manifests(name: str, mutate: Any) -> None:
    document = load(name)
    mutate(document)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(document, VERSION, strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(load("kustomization.yaml")["resources"])
    assert listed == {path.name for path in MANIFESTS}


def test_one_kind_each(by_kind: dict[str, dict[str, Any]]) -> None:
    assert set(by_kind) == {"ConfigMap", "Secret", "Deployment", "Service",
                            "HorizontalPodAutoscaler", "PodDisruptionBudget",
                            "NetworkPolicy"}  # fmt: skip


def _pod(by_kind: dict[str, dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind["Deployment"]["spec"]["template"]
    return spec


def _container(by_kind: dict[str, dict[str, Any]]) -> dict[str, Any]:
    [container] = _pod(by_kind)["spec"]["containers"]
    return container


def test_probes_resources_and_drain(by_kind: dict[str, dict[str, Any]]) -> None:
    container = _container(by_kind)
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    assert container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
    grace = _pod(by_kind)["spec"]["terminationGracePeriodSeconds"]
    # A descent may run to its deadline after the drain pause: the kubelet must wait for it.
    assert grace > Settings().descent_deadline_seconds + pause


def test_non_root_read_only_and_no_privileges(by_kind: dict[str, dict[str, Any]]) -> None:
    pod = _pod(by_kind)["spec"]
    container = _container(by_kind)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER (Dockerfile)
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert pod["automountServiceAccountToken"] is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert mounts == {"/tmp": "tmp"}
    assert "USER 10001:10001" in (ROOT / "Dockerfile").read_text()


def test_selectors_match_the_pods(by_kind: dict[str, dict[str, Any]]) -> None:
    labels = _pod(by_kind)["metadata"]["labels"]
    selectors = [
        by_kind["Deployment"]["spec"]["selector"]["matchLabels"],
        by_kind["Service"]["spec"]["selector"],
        by_kind["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
        by_kind["NetworkPolicy"]["spec"]["podSelector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= labels.items(), selector
    port = _container(by_kind)["ports"][0]
    assert (port["name"], port["containerPort"]) == ("http", 8000)
    assert by_kind["Service"]["spec"]["ports"][0]["targetPort"] == "http"
    assert by_kind["NetworkPolicy"]["spec"]["ingress"][0]["ports"][0]["port"] == "http"
    assert by_kind["NetworkPolicy"]["spec"]["egress"] == []


def test_autoscaling_on_cpu_within_the_disruption_budget(
    by_kind: dict[str, dict[str, Any]],
) -> None:
    hpa = by_kind["HorizontalPodAutoscaler"]["spec"]
    deployment = by_kind["Deployment"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                     "name": deployment["metadata"]["name"]}  # fmt: skip
    [metric] = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert metric["resource"]["target"]["type"] == "Utilization"
    assert hpa["minReplicas"] >= 2 and hpa["maxReplicas"] > hpa["minReplicas"]
    # With maxUnavailable 1 and at least two pods, a drain never takes the service down.
    assert by_kind["PodDisruptionBudget"]["spec"]["maxUnavailable"] == 1
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_scrape_annotations_point_at_metrics(by_kind: dict[str, dict[str, Any]]) -> None:
    annotations = _pod(by_kind)["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": "8000",
                           "prometheus.io/path": "/metrics"}  # fmt: skip


def test_every_setting_is_configurable(
    by_kind: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every Settings field is in the ConfigMap with the app's default, the keys in the Secret.

    A new setting in service/config.py fails here until deploy/k8s/configmap.yaml has it.
    """
    for key in [k for k in os.environ if k.startswith("SERVICE_")]:
        monkeypatch.delenv(key)
    config = by_kind["ConfigMap"]["data"]
    secret = by_kind["Secret"]["stringData"]
    assert set(secret) == {"SERVICE_API_KEYS"} and secret["SERVICE_API_KEYS"] == ""
    defaults = Settings()
    fixed = {"host": "0.0.0.0", "workers": 1}  # all interfaces; one worker per pod
    for name in Settings.model_fields:
        key = f"SERVICE_{name.upper()}"
        if name == "api_keys":
            assert key not in config, "API keys belong in the Secret"
            continue
        assert key in config, f"{key} ({name} in service/config.py) is not in configmap.yaml"
        value = getattr(Settings.model_validate({name: config[key]}), name)
        assert value == fixed.get(name, getattr(defaults, name)), key
    assert set(config) == {f"SERVICE_{n.upper()}" for n in Settings.model_fields} - {
        "SERVICE_API_KEYS"
    }
    env_from = _container(by_kind)["envFrom"]
    assert env_from == [{"configMapRef": {"name": by_kind["ConfigMap"]["metadata"]["name"]}},
                        {"secretRef": {"name": by_kind["Secret"]["metadata"]["name"]}}]  # fmt: skip
