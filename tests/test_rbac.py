"""The rendered deploy/ manifests against a real kube-apiserver with RBAC on.

Every object `agent-autoscaler manifests` prints is created as admin, which proves the
server accepts them. SubjectAccessReviews then check what the daemon's ServiceAccount
may do, and real requests as the `scaler` user, bound to the same ClusterRole, check
that writes outside the role are refused.
"""

from __future__ import annotations

import pytest
import yaml

from runtime import cli
from runtime.config import parse_config
from runtime.manifests import ManifestError, render_documents

try:
    from tests import kubehelpers as kh
    from tests import realstack
except ImportError:
    import kubehelpers as kh
    import realstack

DAEMON_NAMESPACE = "scaling-system"
TARGET = "team-a"
UNCONFIGURED = "team-b"
SERVICE_ACCOUNT = f"system:serviceaccount:{DAEMON_NAMESPACE}:agent-autoscaler"


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    realstack.require(realstack.find_kube_binaries(), "kube-apiserver and etcd")
    with realstack.kube_apiserver(tmp_path_factory.mktemp("kube")) as server:
        for name in (TARGET, UNCONFIGURED):
            kh.create(server, kh.namespace(name))
        for document in render_documents(DAEMON_NAMESPACE, "registry.example.test/agent-autoscaler:1", [TARGET]):
            kh.create(server, document)
        kh.bind_cluster_role(server, TARGET, "scaler")
        for ns in (TARGET, UNCONFIGURED):
            kh.create(server, kh.deployment("web", ns, 2))
        kh.create(server, {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": TARGET}, "stringData": {"password": "x"}})
        yield server


def service_account_may(kube, verb: str, resource: str, namespace: str, group: str = "", subresource: str = "", name: str = "") -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
        "spec": {
            "user": SERVICE_ACCOUNT,
            "groups": ["system:serviceaccounts", f"system:serviceaccounts:{DAEMON_NAMESPACE}", "system:authenticated"],
            "resourceAttributes": {"verb": verb, "group": group, "resource": resource, "subresource": subresource, "namespace": namespace, "name": name},
        },
    }
    status, body = kube.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review)
    assert status == 201, body
    return bool(body["status"].get("allowed"))


ALLOWED = [
    ("get", "deployments", TARGET, "apps", "", ""),
    ("watch", "statefulsets", TARGET, "apps", "", ""),
    ("update", "deployments", TARGET, "apps", "scale", ""),
    ("patch", "statefulsets", TARGET, "apps", "scale", ""),
    ("patch", "horizontalpodautoscalers", TARGET, "autoscaling", "", ""),
    ("create", "events", TARGET, "", "", ""),
    ("watch", "scalingpolicies", TARGET, "scaling.agent-autoscaler.io", "", ""),
    ("update", "scalingpolicies", TARGET, "scaling.agent-autoscaler.io", "status", ""),
    ("list", "scalingpolicies", TARGET, "scaling.agent-autoscaler.io", "", ""),
    ("patch", "scalingpolicies", TARGET, "scaling.agent-autoscaler.io", "status", ""),
    ("create", "leases", DAEMON_NAMESPACE, "coordination.k8s.io", "", ""),
    ("update", "leases", DAEMON_NAMESPACE, "coordination.k8s.io", "", "agent-autoscaler"),
]

REFUSED = [
    ("delete", "deployments", TARGET, "apps", "", ""),
    ("update", "deployments", TARGET, "apps", "", ""),
    ("patch", "deployments", TARGET, "apps", "", ""),
    ("get", "secrets", TARGET, "", "", ""),
    ("list", "secrets", DAEMON_NAMESPACE, "", "", ""),
    ("create", "pods", TARGET, "", "", ""),
    ("update", "deployments", UNCONFIGURED, "apps", "scale", ""),
    ("get", "deployments", UNCONFIGURED, "apps", "", ""),
    ("update", "scalingpolicies", TARGET, "scaling.agent-autoscaler.io", "", ""),
    ("patch", "scalingpolicies", TARGET, "scaling.agent-autoscaler.io", "", ""),
    ("list", "scalingpolicies", UNCONFIGURED, "scaling.agent-autoscaler.io", "", ""),
    ("delete", "horizontalpodautoscalers", TARGET, "autoscaling", "", ""),
    ("update", "leases", DAEMON_NAMESPACE, "coordination.k8s.io", "", "someone-else"),
    ("create", "customresourcedefinitions", "", "apiextensions.k8s.io", "", ""),
    ("create", "rolebindings", TARGET, "rbac.authorization.k8s.io", "", ""),
]


@pytest.mark.parametrize(("verb", "resource", "namespace", "group", "subresource", "name"), ALLOWED)
def test_service_account_allowed(kube, verb, resource, namespace, group, subresource, name):
    assert service_account_may(kube, verb, resource, namespace, group, subresource, name)


@pytest.mark.parametrize(("verb", "resource", "namespace", "group", "subresource", "name"), REFUSED)
def test_service_account_refused(kube, verb, resource, namespace, group, subresource, name):
    assert not service_account_may(kube, verb, resource, namespace, group, subresource, name)


def test_scaler_scales_in_bound_namespace(kube):
    token = kube.user_tokens["scaler"]
    status, body = kube.request(
        "PATCH", f"/apis/apps/v1/namespaces/{TARGET}/deployments/web/scale", {"spec": {"replicas": 5}},
        token=token, content_type="application/merge-patch+json",
    )
    assert status == 200, body
    assert kh.spec_replicas(kube, TARGET, "web") == 5


def test_scaler_refused_outside_role(kube):
    token = kube.user_tokens["scaler"]
    status, _ = kube.request("DELETE", f"/apis/apps/v1/namespaces/{TARGET}/deployments/web", token=token)
    assert status == 403
    status, _ = kube.request("GET", f"/api/v1/namespaces/{TARGET}/secrets/db", token=token)
    assert status == 403
    status, _ = kube.request(
        "PATCH", f"/apis/apps/v1/namespaces/{UNCONFIGURED}/deployments/web/scale", {"spec": {"replicas": 9}},
        token=token, content_type="application/merge-patch+json",
    )
    assert status == 403
    status, _ = kube.request(
        "PATCH", f"/apis/apps/v1/namespaces/{TARGET}/deployments/web", {"spec": {"paused": True}},
        token=token, content_type="application/merge-patch+json",
    )
    assert status == 403
    assert kh.spec_replicas(kube, UNCONFIGURED, "web") == 2


def test_configmap_config_is_valid():
    documents = render_documents(DAEMON_NAMESPACE, "image:1", [TARGET])
    configmap = next(doc for doc in documents if doc["kind"] == "ConfigMap")
    config = parse_config(yaml.safe_load(configmap["data"]["config.yaml"]))
    assert config.daemon.actuator == "kubernetes"
    assert config.daemon.kubernetes.leader_election is not None
    assert config.daemon.kubernetes.leader_election.lease_namespace == DAEMON_NAMESPACE


def test_manifests_command_output(capsys):
    assert cli.main(["manifests", "--namespace", "ops", "--image", "reg.test/aa:2", "--target-namespace", "a", "--target-namespace", "b"]) == 0
    documents = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = [doc["kind"] for doc in documents]
    assert kinds[0] == "Namespace"
    assert "CustomResourceDefinition" in kinds
    bindings = [doc["metadata"]["namespace"] for doc in documents if doc["kind"] == "RoleBinding" and doc["roleRef"]["kind"] == "ClusterRole"]
    assert bindings == ["a", "b"]
    deployment = next(doc for doc in documents if doc["kind"] == "Deployment")
    assert deployment["metadata"]["namespace"] == "ops"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "reg.test/aa:2"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert "requests" in container["resources"]


def test_manifests_rejects_bad_namespace(capsys):
    assert cli.main(["manifests", "--target-namespace", "Team_A"]) == cli.EXIT_INVALID_INPUT
    assert "'Team_A' is not a valid namespace name" in capsys.readouterr().err
    with pytest.raises(ManifestError, match="not a container image reference"):
        render_documents("ops", "bad image", ["a"])
