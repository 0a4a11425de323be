"""The kubernetes actuator against a real kube-apiserver, running as the `scaler` user
bound to the ClusterRole from deploy/rbac.yaml in the namespace `team-a` only."""

from __future__ import annotations

import uuid

import pytest
from structlog.testing import capture_logs

from actuators.kubernetes import KubernetesActuator
from runtime.model import Reason

try:
    from tests import kubehelpers as kh
    from tests import realstack
except ImportError:
    import kubehelpers as kh
    import realstack

ALLOWED = "team-a"
OTHER = "team-b"


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    realstack.require(realstack.find_kube_binaries(), "kube-apiserver and etcd")
    with realstack.kube_apiserver(tmp_path_factory.mktemp("kube")) as server:
        kh.create(server, kh.deploy_cluster_role())
        for name in (ALLOWED, OTHER):
            kh.create(server, kh.namespace(name))
        kh.bind_cluster_role(server, ALLOWED, "scaler")
        yield server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def actuator_for(kube, workloads, user="scaler", clock=None, **settings) -> KubernetesActuator:
    config = kh.app_config(workloads, **settings)
    options = {"clock": clock} if clock is not None else {}
    return KubernetesActuator(config, kh.client_configuration(kube, user), **options)


class ManualClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_scale_up_and_down_through_subresource(kube):
    name = unique("web")
    kh.create(kube, kh.deployment(name, ALLOWED, 2))
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)])
    try:
        status = await actuator.status(name, 0.0)
        assert status is not None
        assert status.requested == 2

        with capture_logs() as logs:
            status = await actuator.apply(kh.decision(name, 7), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, name) == 7
        assert status.requested == 7
        scaled = [entry for entry in logs if entry["event"] == "scaled"]
        assert len(scaled) == 1
        assert scaled[0]["workload"] == name
        assert scaled[0]["from_replicas"] == 2
        assert scaled[0]["to_replicas"] == 7
        assert scaled[0]["reason"] == Reason.FORECAST_AHEAD.value

        await actuator.apply(kh.decision(name, 3), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, name) == 3
        assert actuator.counters.errors == {}
    finally:
        await actuator.close()


async def test_unchanged_decision_makes_no_call(kube):
    name = unique("steady")
    kh.create(kube, kh.deployment(name, ALLOWED, 4))
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)])
    try:
        await actuator.status(name, 0.0)
        await actuator.apply(kh.decision(name, 5), 0.0)
        calls_after_write = actuator.counters.total_calls
        for _ in range(10):
            await actuator.status(name, 0.0)
            await actuator.apply(kh.decision(name, 5), 0.0)
        assert actuator.counters.total_calls == calls_after_write
        assert actuator.counters.writes == 1
    finally:
        await actuator.close()


async def test_statefulset_and_dry_run(kube):
    name = unique("store")
    statefulset = kh.deployment(name, ALLOWED, 1)
    statefulset["kind"] = "StatefulSet"
    statefulset["spec"]["serviceName"] = name
    kh.create(kube, statefulset)
    entry = kh.workload_entry(name, ALLOWED, kind="StatefulSet")

    dry = actuator_for(kube, [entry], dry_run=True)
    try:
        with capture_logs() as logs:
            await dry.apply(kh.decision(name, 6), 0.0)
            await dry.apply(kh.decision(name, 6), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, name, "statefulsets") == 1
        accepted = [entry for entry in logs if entry["event"] == "dry run: scale accepted by the API server"]
        assert len(accepted) == 1
        assert dry.counters.calls["update"] == 1
    finally:
        await dry.close()

    real = actuator_for(kube, [entry])
    try:
        await real.apply(kh.decision(name, 6), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, name, "statefulsets") == 6
    finally:
        await real.close()


async def test_dry_run_reports_server_validation(kube):
    name = unique("dryneg")
    kh.create(kube, kh.deployment(name, ALLOWED, 2))
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)], dry_run=True)
    try:
        await actuator.apply(kh.decision(name, -3), 0.0)
        assert actuator.counters.errors["invalid"] == 1
        assert kh.spec_replicas(kube, ALLOWED, name) == 2
    finally:
        await actuator.close()


async def test_conflict_rereads_and_retries(kube):
    name = unique("race")
    kh.create(kube, kh.deployment(name, ALLOWED, 2))
    clock = ManualClock()
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)], clock=clock, drift_policy="override")
    try:
        await actuator.status(name, 0.0)
        # Another client changes the object, so the cached resourceVersion is stale.
        kh.set_replicas(kube, ALLOWED, name, 3)
        with capture_logs() as logs:
            await actuator.apply(kh.decision(name, 9), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, name) == 9
        assert actuator.counters.errors["conflict_retried"] == 1
        events = [entry["event"] for entry in logs]
        assert "write conflict; re-reading" in events
        assert "replica count changed outside the autoscaler" in events
    finally:
        await actuator.close()


async def test_drift_respected_then_next_decision_applies(kube):
    name = unique("drift")
    kh.create(kube, kh.deployment(name, ALLOWED, 2))
    clock = ManualClock()
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)], clock=clock, drift_policy="respect", status_refresh_seconds=30)
    try:
        await actuator.apply(kh.decision(name, 4), 0.0)
        kh.set_replicas(kube, ALLOWED, name, 11)
        clock.now += 31  # the cached count expires, so status() reads again

        with capture_logs() as logs:
            status = await actuator.status(name, 0.0)
            await actuator.apply(kh.decision(name, 4), 0.0)
        assert status is not None
        assert status.requested == 11
        drift = [entry for entry in logs if entry["event"] == "replica count changed outside the autoscaler"]
        assert len(drift) == 1
        assert drift[0]["expected_replicas"] == 4
        assert drift[0]["observed_replicas"] == 11
        assert kh.spec_replicas(kube, ALLOWED, name) == 11

        await actuator.apply(kh.decision(name, 4), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, name) == 4
    finally:
        await actuator.close()


async def test_drift_overridden_at_once(kube):
    name = unique("override")
    kh.create(kube, kh.deployment(name, ALLOWED, 2))
    clock = ManualClock()
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)], clock=clock, drift_policy="override", status_refresh_seconds=30)
    try:
        await actuator.apply(kh.decision(name, 4), 0.0)
        kh.set_replicas(kube, ALLOWED, name, 11)
        clock.now += 31
        await actuator.status(name, 0.0)
        await actuator.apply(kh.decision(name, 4), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, name) == 4
    finally:
        await actuator.close()


async def test_missing_target_logged_once_then_found(kube):
    name = unique("later")
    clock = ManualClock()
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)], clock=clock, status_refresh_seconds=30)
    try:
        with capture_logs() as logs:
            for _ in range(3):
                status = await actuator.apply(kh.decision(name, 3), 0.0)
                clock.now += 1
        assert status.requested == 0
        failures = [entry for entry in logs if entry["event"] == "kubernetes request failed"]
        assert len(failures) == 1
        assert failures[0]["status"] == 404
        assert failures[0]["workload"] == name

        kh.create(kube, kh.deployment(name, ALLOWED, 1))
        clock.now += 31
        await actuator.apply(kh.decision(name, 3), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, name) == 3
    finally:
        await actuator.close()


async def test_forbidden_namespace_names_missing_rule(kube):
    name = unique("elsewhere")
    kh.create(kube, kh.deployment(name, OTHER, 2))
    actuator = actuator_for(kube, [kh.workload_entry(name, OTHER)])
    try:
        with capture_logs() as logs:
            status = await actuator.apply(kh.decision(name, 5), 0.0)
            await actuator.apply(kh.decision(name, 5), 0.0)
        assert status.requested == 0
        assert kh.spec_replicas(kube, OTHER, name) == 2
        failures = [entry for entry in logs if entry["event"] == "kubernetes request failed"]
        assert len(failures) == 1
        assert failures[0]["status"] == 403
        assert failures[0]["verb"] == "get"
        assert failures[0]["resource"] == "deployments/scale"
        assert "namespace team-b" in failures[0]["error"]
        assert "ClusterRole agent-autoscaler" in failures[0]["error"]
        assert actuator.counters.errors["forbidden"] == 2
    finally:
        await actuator.close()


async def test_negative_count_rejected_with_server_message(kube):
    name = unique("negative")
    kh.create(kube, kh.deployment(name, ALLOWED, 2))
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)])
    try:
        with capture_logs() as logs:
            status = await actuator.apply(kh.decision(name, -1), 0.0)
        assert status.requested == 2
        assert kh.spec_replicas(kube, ALLOWED, name) == 2
        failures = [entry for entry in logs if entry["event"] == "kubernetes request failed"]
        assert len(failures) == 1
        assert failures[0]["status"] == 422
        assert "greater than or equal to 0" in failures[0]["error"]
    finally:
        await actuator.close()


async def test_kind_without_scale_is_config_error(kube):
    name = unique("nokind")
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED, kind="ControllerRevision")])
    try:
        with capture_logs() as logs:
            await actuator.apply(kh.decision(name, 2), 0.0)
            await actuator.apply(kh.decision(name, 2), 0.0)
        errors = [entry for entry in logs if entry["event"] == "kubernetes target cannot be scaled"]
        assert len(errors) == 1
        assert "no scale subresource" in errors[0]["error"]
    finally:
        await actuator.close()


async def test_spot_split_writes_two_workloads(kube):
    name = unique("split")
    on_demand, spot = f"{name}-ondemand", f"{name}-spot"
    kh.create(kube, kh.deployment(on_demand, ALLOWED, 1))
    kh.create(kube, kh.deployment(spot, ALLOWED, 1))
    split = {name: {"on_demand_name": on_demand, "spot_name": spot}}
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)], spot_split=split)
    try:
        status = await actuator.apply(kh.decision(name, 10, spot=7), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, on_demand) == 3
        assert kh.spec_replicas(kube, ALLOWED, spot) == 7
        assert status.requested == 10

        status = await actuator.apply(kh.decision(name, 4, spot=2), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, on_demand) == 2
        assert kh.spec_replicas(kube, ALLOWED, spot) == 2
        assert status.requested == 4
    finally:
        await actuator.close()


async def test_hpa_floor_sets_min_replicas(kube):
    name = unique("coop")
    kh.create(kube, kh.deployment(name, ALLOWED, 2))
    kh.create(kube, {
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": ALLOWED},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": 1, "maxReplicas": 8,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}],
        },
    })
    floor = {name: {"hpa_name": name, "raise_max_replicas": True}}
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)], hpa_floor=floor)
    path = f"/apis/autoscaling/v2/namespaces/{ALLOWED}/horizontalpodautoscalers/{name}"
    try:
        await actuator.apply(kh.decision(name, 5), 0.0)
        _, hpa = kube.request("GET", path)
        assert hpa["spec"]["minReplicas"] == 5
        assert hpa["spec"]["maxReplicas"] == 8
        assert kh.spec_replicas(kube, ALLOWED, name) == 2

        await actuator.apply(kh.decision(name, 12), 0.0)
        _, hpa = kube.request("GET", path)
        assert hpa["spec"]["minReplicas"] == 12
        assert hpa["spec"]["maxReplicas"] == 12

        writes = actuator.counters.writes
        await actuator.apply(kh.decision(name, 12), 0.0)
        assert actuator.counters.writes == writes
    finally:
        await actuator.close()


async def test_custom_resource_with_scale_subresource(kube):
    kh.create(kube, {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "workerpools.example.test"},
        "spec": {
            "group": "example.test", "scope": "Namespaced",
            "names": {"plural": "workerpools", "singular": "workerpool", "kind": "WorkerPool"},
            "versions": [{
                "name": "v1", "served": True, "storage": True,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                    "spec": {"type": "object", "properties": {"replicas": {"type": "integer", "minimum": 0}}},
                    "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
                }}},
                "subresources": {"scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}},
            }],
        },
    })
    name = unique("pool")
    path = f"/apis/example.test/v1/namespaces/{ALLOWED}/workerpools"
    for _ in range(50):  # a new CRD is served a moment after it is created
        status, _ = kube.request("POST", path, {"apiVersion": "example.test/v1", "kind": "WorkerPool", "metadata": {"name": name, "namespace": ALLOWED}, "spec": {"replicas": 1}})
        if status == 201:
            break
        import time
        time.sleep(0.1)
    assert status == 201
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED, kind="WorkerPool", api_version="example.test/v1")], user=None)
    try:
        await actuator.apply(kh.decision(name, 4), 0.0)
        assert kh.spec_replicas(kube, ALLOWED, name, "workerpools", "example.test/v1") == 4
    finally:
        await actuator.close()


async def test_scale_posts_event_on_target(kube):
    name = unique("evented")
    kh.create(kube, kh.deployment(name, ALLOWED, 1))
    actuator = actuator_for(kube, [kh.workload_entry(name, ALLOWED)], event_interval_seconds=3600)
    try:
        await actuator.apply(kh.decision(name, 3), 0.0)
        await actuator.apply(kh.decision(name, 4), 0.0)
        status, events = kube.request("GET", f"/api/v1/namespaces/{ALLOWED}/events?fieldSelector=involvedObject.name%3D{name}")
        assert status == 200
        assert len(events["items"]) == 1
        event = events["items"][0]
        assert event["reason"] == "PredictiveScale"
        assert event["involvedObject"]["kind"] == "Deployment"
        assert "from 1 to 3" in event["message"]
    finally:
        await actuator.close()
