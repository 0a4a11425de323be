"""Helpers shared by the tests that run against the real kube-apiserver from realstack."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes_asyncio import client as k8s

from runtime.config import AppConfig, parse_config
from runtime.model import Decision, Reason

DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy"

# REST collection paths of the kinds the tests create, by (apiVersion, kind).
COLLECTIONS = {
    ("v1", "Namespace"): "/api/v1/namespaces",
    ("v1", "ServiceAccount"): "/api/v1/namespaces/{ns}/serviceaccounts",
    ("v1", "ConfigMap"): "/api/v1/namespaces/{ns}/configmaps",
    ("v1", "Secret"): "/api/v1/namespaces/{ns}/secrets",
    ("v1", "Service"): "/api/v1/namespaces/{ns}/services",
    ("apps/v1", "Deployment"): "/apis/apps/v1/namespaces/{ns}/deployments",
    ("apps/v1", "StatefulSet"): "/apis/apps/v1/namespaces/{ns}/statefulsets",
    ("autoscaling/v2", "HorizontalPodAutoscaler"): "/apis/autoscaling/v2/namespaces/{ns}/horizontalpodautoscalers",
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): "/apis/rbac.authorization.k8s.io/v1/clusterroles",
    ("rbac.authorization.k8s.io/v1", "Role"): "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): "/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"): "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
}


def create(kube: Any, document: dict[str, Any]) -> dict[str, Any]:
    """Create one object as admin and fail the test unless the server returns 201."""
    path = COLLECTIONS[(document["apiVersion"], document["kind"])]
    path = path.format(ns=document["metadata"].get("namespace", ""))
    status, body = kube.request("POST", path, document)
    assert status == 201, (document["kind"], document["metadata"]["name"], body)
    return body


def deploy_documents(file_name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY_DIR / file_name).read_text()) if doc]


def deploy_cluster_role() -> dict[str, Any]:
    return next(doc for doc in deploy_documents("rbac.yaml") if doc["kind"] == "ClusterRole")


def bind_cluster_role(kube: Any, namespace: str, user: str, role_name: str = "agent-autoscaler") -> None:
    """Grant the ClusterRole to a static-token user in one namespace, as deploy/ grants it to the ServiceAccount."""
    create(kube, {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": f"{role_name}-{user}", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role_name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    })


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def deployment(name: str, ns: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "main", "image": "registry.invalid/agent:1"}]}},
        },
    }


def spec_replicas(kube: Any, ns: str, name: str, plural: str = "deployments", group_version: str = "apps/v1") -> int:
    status, body = kube.request("GET", f"/apis/{group_version}/namespaces/{ns}/{plural}/{name}")
    assert status == 200, body
    return int(body["spec"]["replicas"])


def set_replicas(kube: Any, ns: str, name: str, replicas: int) -> None:
    """Change spec.replicas as another client would (kubectl scale)."""
    status, body = kube.request(
        "PATCH", f"/apis/apps/v1/namespaces/{ns}/deployments/{name}/scale", {"spec": {"replicas": replicas}},
        content_type="application/merge-patch+json",
    )
    assert status == 200, body


def client_configuration(kube: Any, user: str | None) -> k8s.Configuration:
    """Client settings for a static-token user, or for the admin when `user` is None."""
    token = kube.admin_token if user is None else kube.user_tokens[user]
    configuration = k8s.Configuration(host=kube.url, api_key={"BearerToken": token}, api_key_prefix={"BearerToken": "Bearer"})
    configuration.ssl_ca_cert = str(kube.ca_file)
    return configuration


def workload_entry(name: str, ns: str, target: str | None = None, kind: str = "Deployment", api_version: str = "apps/v1") -> dict[str, Any]:
    return {
        "name": name,
        "target": {"api_version": api_version, "kind": kind, "namespace": ns, "name": target or name},
        "max_replicas": 50,
        "capacity_per_replica": 1.0,
        "signals": [{"name": "requests", "role": "load", "source": {"kind": "trace", "path": "unused.csv"}}],
    }


def app_config(workloads: list[dict[str, Any]], **kubernetes: Any) -> AppConfig:
    return parse_config({
        "daemon": {"actuator": "kubernetes", "kubernetes": kubernetes},
        "budgets": {"default": {"max_hourly_cost": 10.0, "on_demand_price_per_replica_hour": 0.1, "spot_price_per_replica_hour": 0.03}},
        "workloads": workloads,
    })


def decision(workload: str, replicas: int, spot: int = 0, reason: Reason = Reason.FORECAST_AHEAD) -> Decision:
    """A planner decision with every stage at `replicas`; only the counts matter to actuators."""
    return Decision(
        workload=workload, timestamp=0.0, current_replicas=replicas, load_per_second=math.nan,
        reactive_replicas=None, forecast_replicas=None, forecast_upper_per_second=None, forecaster="none",
        combined_replicas=replicas, stabilized_replicas=replicas, rate_limited_replicas=replicas,
        clamped_replicas=replicas, budget_replicas=replicas, continuity_floor_replicas=replicas,
        final_replicas=replicas, on_demand_replicas=replicas - spot, spot_replicas=spot, reason=reason,
        budget_tier="comfortable", budget_remaining_ratio=1.0,
    )


def serve_policy_crd(server: Any, namespace_name: str, user: str = "scaler") -> None:
    """Create the namespace, the ScalingPolicy CRD and the ClusterRole bound to `user`, and wait until the CRD is served."""
    create(server, namespace(namespace_name))
    create(server, deploy_documents("crd.yaml")[0])
    create(server, deploy_cluster_role())
    bind_cluster_role(server, namespace_name, user)
    collection = f"/apis/scaling.agent-autoscaler.io/v1alpha1/namespaces/{namespace_name}/scalingpolicies"
    for _ in range(100):  # a new CRD is served shortly after it is created
        status, _ = server.request("GET", collection)
        if status == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"the ScalingPolicy CRD was not served in {namespace_name} within 10 s")
