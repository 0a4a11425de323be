"""The ScalingPolicy CRD from deploy/crd.yaml on a real kube-apiserver: schema validation,
the status subresource, and RBAC of the `scaler` user bound to the deploy/ ClusterRole."""

from __future__ import annotations


import pytest

from runtime.config import WorkloadConfig

try:
    from tests import kubehelpers as kh
    from tests import realstack
except ImportError:
    import kubehelpers as kh
    import realstack

NAMESPACE = "team-a"
COLLECTION = f"/apis/scaling.agent-autoscaler.io/v1alpha1/namespaces/{NAMESPACE}/scalingpolicies"


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    realstack.require(realstack.find_kube_binaries(), "kube-apiserver and etcd")
    with realstack.kube_apiserver(tmp_path_factory.mktemp("kube")) as server:
        kh.serve_policy_crd(server, NAMESPACE)
        yield server


def policy(name: str, **spec_changes) -> dict:
    spec = kh.workload_entry(name, NAMESPACE)
    spec.pop("name")
    spec.update(spec_changes)
    return {"apiVersion": "scaling.agent-autoscaler.io/v1alpha1", "kind": "ScalingPolicy", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}


def test_valid_policy_matches_config_rules(kube):
    status, created = kube.request("POST", COLLECTION, policy("web"))
    assert status == 201, created
    spec = dict(created["spec"])
    workload = WorkloadConfig.model_validate({"name": created["metadata"]["name"], **spec})
    assert workload.target.namespace == NAMESPACE
    assert workload.max_replicas == 50


@pytest.mark.parametrize(("changes", "field"), [
    ({"max_replicas": 0}, "spec.max_replicas"),
    ({"capacity_per_replica": 0}, "spec.capacity_per_replica"),
    ({"signals": []}, "spec.signals"),
    ({"signals": [{"name": "q", "role": "queue", "source": {"kind": "trace"}}]}, "spec.signals[0].role"),
    ({"target": {"kind": "Deployment"}}, "spec.target.name"),
])
def test_schema_rejects_invalid_spec(kube, changes, field):
    status, body = kube.request("POST", COLLECTION, policy("bad", **changes))
    assert status == 422, body
    assert field in body["message"]


def test_scaler_writes_status_only(kube):
    kube.request("POST", COLLECTION, policy("status-demo"))
    token = kube.user_tokens["scaler"]
    status, current = kube.request("GET", f"{COLLECTION}/status-demo", token=token)
    assert status == 200, current

    current["status"] = {
        "phase": "Active", "observedGeneration": current["metadata"]["generation"], "currentReplicas": 2, "desiredReplicas": 4,
        "lastDecisionReason": "forecast_ahead",
        "conditions": [{"type": "Ready", "status": "True", "reason": "Scaling", "message": "decisions are applied"}],
    }
    status, updated = kube.request("PUT", f"{COLLECTION}/status-demo/status", current, token=token)
    assert status == 200, updated
    assert updated["status"]["desiredReplicas"] == 4

    current = updated
    current["spec"]["max_replicas"] = 3
    status, _ = kube.request("PUT", f"{COLLECTION}/status-demo", current, token=token)
    assert status == 403


def test_status_schema_rejects_unknown_condition(kube):
    kube.request("POST", COLLECTION, policy("conditions"))
    _, current = kube.request("GET", f"{COLLECTION}/conditions")
    current["status"] = {"conditions": [{"type": "Exploded", "status": "True"}]}
    status, body = kube.request("PUT", f"{COLLECTION}/conditions/status", current)
    assert status == 422, body
    assert "status.conditions[0].type" in body["message"]
