"""ScalingPolicy resources driving the daemon against a real kube-apiserver.

The daemon runs as the `scaler` user bound to the ClusterRole from deploy/rbac.yaml in
`team-a` only. Every policy replays a trace of 10 requests per second with a capacity
of 1 per replica at 80 % utilization, so the daemon wants 13 replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from actuators.kubernetes import KubernetesActuator
from runtime.config import ConfigError, parse_config
from runtime.daemon import Daemon, run_daemon
from runtime.policies import ScalingPolicyController

try:
    from tests import kubehelpers as kh
    from tests import realstack
except ImportError:
    import kubehelpers as kh
    import realstack

NAMESPACE = "team-a"
COLLECTION = f"/apis/scaling.agent-autoscaler.io/v1alpha1/namespaces/{NAMESPACE}/scalingpolicies"
TICK_SECONDS = 0.2
EXPECTED_REPLICAS = 13  # ceil(10 requests/s / (1.0 capacity * 0.8 utilization))
# Immediate changes in both directions, so that the final count is reached within a few ticks.
FAST_BEHAVIOR = {
    "scale_up": {"stabilization_window_seconds": 0, "policies": [{"type": "Pods", "value": 100, "period_seconds": 1}]},
    "scale_down": {"stabilization_window_seconds": 0, "policies": [{"type": "Percent", "value": 100, "period_seconds": 1}]},
}


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    realstack.require(realstack.find_kube_binaries(), "kube-apiserver and etcd")
    with realstack.kube_apiserver(tmp_path_factory.mktemp("kube")) as server:
        kh.serve_policy_crd(server, NAMESPACE)
        yield server


@pytest.fixture(autouse=True)
def delete_policies(kube):
    """Delete every ScalingPolicy after each test, so that the next daemon starts from an empty namespace."""
    yield
    status, body = kube.request("DELETE", COLLECTION)
    assert status == 200, body


@pytest.fixture(scope="module")
def trace_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("trace") / "steady.csv"
    rows = [f"{minute * 60},600" for minute in range(200)]  # 600 requests per 60 s interval
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    return path


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def policy_spec(target_name: str, trace: Path, **changes) -> dict:
    spec = {
        "target": {"name": target_name},
        "max_replicas": 50,
        "capacity_per_replica": 1.0,
        "forecaster": {"model": "none"},
        "behavior": FAST_BEHAVIOR,
        "signals": [{"name": "requests", "role": "load", "source": {"kind": "trace", "path": str(trace)}}],
    }
    spec.update(changes)
    return spec


def create_policy(kube, name: str, spec: dict) -> dict:
    document = {"apiVersion": "scaling.agent-autoscaler.io/v1alpha1", "kind": "ScalingPolicy", "metadata": {"name": name, "namespace": NAMESPACE}, "spec": spec}
    status, body = kube.request("POST", COLLECTION, document)
    assert status == 201, body
    return body


def app_config(trace: Path, file_workloads: list[dict] | None = None):
    workloads = file_workloads or [{**kh.workload_entry("file-only", NAMESPACE), "signals": policy_spec("x", trace)["signals"]}]
    return parse_config({
        "daemon": {
            "tick_seconds": TICK_SECONDS, "actuator": "kubernetes",
            "kubernetes": {"events": False, "scaling_policy_namespaces": [NAMESPACE]},
        },
        "budgets": {"default": {"max_hourly_cost": 1000.0, "on_demand_price_per_replica_hour": 0.1, "spot_price_per_replica_hour": 0.03}},
        "workloads": workloads,
    })


@contextlib.asynccontextmanager
async def running_daemon(kube, config, watch_from: str | None = None, namespaces: tuple[str, ...] = (NAMESPACE,)):
    """Run the ticker and the policy controller as `scaler`; `watch_from` starts the watch without a list."""
    actuator = KubernetesActuator(config, kh.client_configuration(kube, "scaler"))
    daemon = Daemon(config, actuator=actuator)
    controller = ScalingPolicyController(daemon, actuator.api_client, namespaces, watch_timeout_seconds=30, retry_max_seconds=0.5)
    if watch_from is None:
        runner = asyncio.create_task(controller.run())
    else:
        runner = asyncio.gather(controller.watch_namespace(NAMESPACE, watch_from), controller.status_writer())
    tasks = [asyncio.create_task(daemon.ticker()), runner]
    try:
        yield daemon, controller
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await daemon.remove_added_workloads()
        await actuator.close()


async def get_policy(kube, name: str) -> dict:
    status, body = await asyncio.to_thread(kube.request, "GET", f"{COLLECTION}/{name}")
    assert status == 200, body
    return body


async def wait_for_status(kube, name: str, check, timeout_seconds: float = 10.0) -> dict:
    """Poll the policy until `check(resource)` holds; return the resource, or fail with its last status."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        resource = await get_policy(kube, name)
        if check(resource):
            return resource
        assert time.monotonic() < deadline, f"timed out; last status {resource.get('status')}"
        await asyncio.sleep(0.1)


async def wait_for_replicas(kube, deployment: str, replicas: int, timeout_seconds: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while (current := await asyncio.to_thread(kh.spec_replicas, kube, NAMESPACE, deployment)) != replicas:
        assert time.monotonic() < deadline, f"spec.replicas of {deployment} is {current}, expected {replicas}"
        await asyncio.sleep(0.1)


def condition(resource: dict, kind: str) -> dict:
    return next(item for item in resource["status"]["conditions"] if item["type"] == kind)


def ready_reason(resource: dict) -> str | None:
    conditions = (resource.get("status") or {}).get("conditions") or []
    return next((item.get("reason") for item in conditions if item["type"] == "Ready"), None)


async def test_policy_scales_and_reports_status(kube, trace_file):
    name = unique("api")
    kh.create(kube, kh.deployment(name, NAMESPACE, 1))
    async with running_daemon(kube, app_config(trace_file)) as (daemon, controller):
        create_policy(kube, name, policy_spec(name, trace_file))
        await wait_for_replicas(kube, name, EXPECTED_REPLICAS)
        resource = await wait_for_status(kube, name, lambda r: r.get("status", {}).get("currentReplicas") == EXPECTED_REPLICAS)

        status = resource["status"]
        assert status["phase"] == "Active"
        assert status["observedGeneration"] == 1
        assert status["desiredReplicas"] == EXPECTED_REPLICAS
        assert status["lastDecisionReason"]
        assert status["lastDecisionTime"].endswith("Z")
        assert condition(resource, "Ready")["status"] == "True"
        assert condition(resource, "ScalingLimited")["status"] == "False"
        assert condition(resource, "BudgetLimited")["status"] == "False"
        assert condition(resource, "SourceUnavailable")["status"] == "False"
        for item in status["conditions"]:
            assert item["reason"]
            assert item["message"]
            assert item["lastTransitionTime"]

        # Steady state: ticks go on, but neither the status nor its resourceVersion change.
        writes = controller.counters.status_writes
        version = resource["metadata"]["resourceVersion"]
        await asyncio.sleep(10 * TICK_SECONDS)
        assert controller.counters.status_writes == writes
        assert (await get_policy(kube, name))["metadata"]["resourceVersion"] == version
        assert name in daemon.runtimes


async def test_spec_update_follows_generation(kube, trace_file):
    name = unique("worker")
    kh.create(kube, kh.deployment(name, NAMESPACE, 2))
    async with running_daemon(kube, app_config(trace_file)):
        create_policy(kube, name, policy_spec(name, trace_file))
        await wait_for_replicas(kube, name, EXPECTED_REPLICAS)

        status, body = await asyncio.to_thread(
            kube.request, "PATCH", f"{COLLECTION}/{name}", {"spec": {"max_replicas": 5}}, content_type="application/merge-patch+json",
        )
        assert status == 200, body
        assert body["metadata"]["generation"] == 2
        await wait_for_replicas(kube, name, 5)
        resource = await wait_for_status(kube, name, lambda r: r["status"].get("observedGeneration") == 2 and r["status"].get("desiredReplicas") == 5)

        assert resource["status"]["phase"] == "Active"
        limited = condition(resource, "ScalingLimited")
        assert limited["status"] == "True"
        assert limited["reason"] == "TooManyReplicas"
        assert limited["observedGeneration"] == 2


@pytest.mark.parametrize(("changes", "field"), [
    ({"min_replicas": 10, "max_replicas": 5}, "min_replicas=10"),
    ({"startup_lead_seconds": 600, "forecast_horizon_seconds": 300}, "forecast_horizon_seconds=300"),
    ({"budget": "missing"}, "spec.budget"),
    ({"target": {"name": "x", "namespace": "elsewhere"}}, "spec.target.namespace"),
])
async def test_invalid_policy_isolated(kube, trace_file, changes, field):
    bad, good = unique("bad"), unique("good")
    kh.create(kube, kh.deployment(good, NAMESPACE, 1))
    async with running_daemon(kube, app_config(trace_file)) as (daemon, controller):
        with capture_logs() as logs:
            create_policy(kube, bad, policy_spec(bad, trace_file, **changes))
            create_policy(kube, good, policy_spec(good, trace_file))
            resource = await wait_for_status(kube, bad, lambda r: ready_reason(r) == "InvalidSpec")
            await wait_for_replicas(kube, good, EXPECTED_REPLICAS)

        assert resource["status"]["phase"] == "Invalid"
        ready = condition(resource, "Ready")
        assert ready["status"] == "False"
        assert field in ready["message"]
        assert bad not in daemon.runtimes
        rejected = [entry for entry in logs if entry["event"] == "scaling policy rejected"]
        assert [(entry["policy"], entry["reason"]) for entry in rejected] == [(bad, "InvalidSpec")]


async def test_budget_tier_override(kube, trace_file):
    name, bad = unique("thrifty"), unique("bad-tiers")
    kh.create(kube, kh.deployment(name, NAMESPACE, 1))
    halved = [{"name": "half", "above_remaining_ratio": 0, "scale_factor_ratio": 0.5, "spot_ratio": 0.5}]
    too_much_spot = [{"name": "spot", "above_remaining_ratio": 0, "scale_factor_ratio": 1.0, "spot_ratio": 0.95}]
    async with running_daemon(kube, app_config(trace_file)):
        create_policy(kube, name, policy_spec(name, trace_file, budget_tiers=halved))
        create_policy(kube, bad, policy_spec(bad, trace_file, budget_tiers=too_much_spot))
        resource = await wait_for_status(kube, name, lambda r: r.get("status", {}).get("phase") == "Active")
        rejected = await wait_for_status(kube, bad, lambda r: ready_reason(r) == "InvalidSpec")

    assert resource["status"]["desiredReplicas"] < EXPECTED_REPLICAS
    budget = condition(resource, "BudgetLimited")
    assert budget["status"] == "True"
    assert "half" in budget["message"]
    message = condition(rejected, "Ready")["message"]
    assert "spec.budget_tiers" in message
    assert "max_spot_ratio" in message


async def test_status_waits_for_leadership(kube, trace_file):
    name = unique("standby")
    kh.create(kube, kh.deployment(name, NAMESPACE, 1))
    async with running_daemon(kube, app_config(trace_file)) as (daemon, controller):
        daemon.actuator.writes_enabled = False  # as leader election sets it on a standby
        create_policy(kube, name, policy_spec(name, trace_file))
        await asyncio.sleep(10 * TICK_SECONDS)
        assert name in daemon.runtimes
        assert "status" not in await get_policy(kube, name)
        assert controller.counters.status_writes == 0

        daemon.actuator.writes_enabled = True
        resource = await wait_for_status(kube, name, lambda r: r.get("status", {}).get("phase") == "Active")
    assert resource["status"]["desiredReplicas"] == EXPECTED_REPLICAS


def test_policy_namespaces_need_kubernetes_actuator(trace_file):
    config = app_config(trace_file).model_dump(mode="json")
    config["daemon"]["actuator"] = "log"
    with pytest.raises(ConfigError) as raised:
        parse_config(config)
    assert "scaling_policy_namespaces" in str(raised.value)


async def test_policy_credentials_rejected(kube, trace_file):
    name = unique("secret")
    signals = [{"name": "requests", "role": "load", "source": {
        "kind": "prometheus", "url": "http://127.0.0.1:1", "query": "up",
        "bearer_token_file": "/var/run/secrets/kubernetes.io/serviceaccount/token",
    }}]
    async with running_daemon(kube, app_config(trace_file)):
        create_policy(kube, name, policy_spec(name, trace_file, signals=signals))
        resource = await wait_for_status(kube, name, lambda r: ready_reason(r) == "InvalidSpec")
    assert "spec.signals.0.source.bearer_token_file" in condition(resource, "Ready")["message"]


async def test_conflict_with_file_workload(kube, trace_file):
    shared = unique("shared")
    kh.create(kube, kh.deployment(shared, NAMESPACE, 3))
    file_workload = {**kh.workload_entry("from-file", NAMESPACE, target=shared), "signals": policy_spec("x", trace_file)["signals"]}
    by_target, by_name = unique("same-target"), "from-file"
    async with running_daemon(kube, app_config(trace_file, [file_workload])) as (daemon, controller):
        with capture_logs() as logs:
            create_policy(kube, by_target, policy_spec(shared, trace_file))
            create_policy(kube, by_name, policy_spec(unique("other"), trace_file))
            target_conflict = await wait_for_status(kube, by_target, lambda r: ready_reason(r) == "Conflict")
            name_conflict = await wait_for_status(kube, by_name, lambda r: ready_reason(r) == "Conflict")

        assert target_conflict["status"]["phase"] == "Conflict"
        assert "from-file" in condition(target_conflict, "Ready")["message"]
        assert "config file" in condition(name_conflict, "Ready")["message"]
        # The file's workload keeps its own definition.
        assert daemon.runtimes["from-file"].config.target.name == shared
        assert by_target not in daemon.runtimes
        conflicts = [entry for entry in logs if entry["event"] == "scaling policy rejected" and entry["reason"] == "Conflict"]
        assert sorted(entry["policy"] for entry in conflicts) == sorted([by_target, by_name])
        assert all(entry["log_level"] == "error" for entry in conflicts)


async def test_deleted_policy_stops_scaling(kube, trace_file):
    name = unique("batch")
    kh.create(kube, kh.deployment(name, NAMESPACE, 1))
    config = app_config(trace_file)
    async with running_daemon(kube, config) as (daemon, controller):
        create_policy(kube, name, policy_spec(name, trace_file))
        await wait_for_replicas(kube, name, EXPECTED_REPLICAS)

        status, body = await asyncio.to_thread(kube.request, "DELETE", f"{COLLECTION}/{name}")
        assert status == 200, body
        deadline = time.monotonic() + 10
        while name in daemon.runtimes:
            assert time.monotonic() < deadline, "workload still configured after its ScalingPolicy was deleted"
            await asyncio.sleep(0.1)
        assert name not in daemon.actuator.plans

        await asyncio.to_thread(kh.set_replicas, kube, NAMESPACE, name, 2)
        await asyncio.sleep(5 * TICK_SECONDS)
        assert kh.spec_replicas(kube, NAMESPACE, name) == 2


async def test_watch_lists_again_after_gone(kube, trace_file):
    name = unique("relist")
    kh.create(kube, kh.deployment(name, NAMESPACE, 1))
    create_policy(kube, name, policy_spec(name, trace_file))
    # resourceVersion 1 predates the CRD, so the API server ends the watch with 410 Gone.
    with capture_logs() as logs:
        async with running_daemon(kube, app_config(trace_file), watch_from="1"):
            await wait_for_replicas(kube, name, EXPECTED_REPLICAS)
    assert any(entry["event"] == "scaling policy watch expired; listing again" for entry in logs)


async def test_unbound_namespace_retried(kube, trace_file):
    name = unique("beside")
    kh.create(kube, kh.deployment(name, NAMESPACE, 1))
    create_policy(kube, name, policy_spec(name, trace_file))
    # The ClusterRole is bound in team-a only, so every list in `default` is rejected with 403.
    with capture_logs() as logs:
        async with running_daemon(kube, app_config(trace_file), namespaces=(NAMESPACE, "default")):
            await wait_for_replicas(kube, name, EXPECTED_REPLICAS)
            await asyncio.sleep(1.0)
    failures = [entry for entry in logs if entry["event"] == "scaling policy watch failed; listing again"]
    assert len(failures) >= 2
    assert {entry["namespace"] for entry in failures} == {"default"}
    assert {entry["reason"] for entry in failures} == {"http_403"}
    assert "Bind the ClusterRole there" in failures[0]["error"]


async def test_missing_target_not_ready(kube, trace_file):
    name = unique("ghost")
    async with running_daemon(kube, app_config(trace_file)):
        create_policy(kube, name, policy_spec(name, trace_file))
        resource = await wait_for_status(kube, name, lambda r: ready_reason(r) == "TargetNotFound")
    assert resource["status"]["phase"] == "Active"
    assert name in condition(resource, "Ready")["message"]


async def test_run_daemon_starts_policy_watch(kube, trace_file):
    name = unique("wired")
    kh.create(kube, kh.deployment(name, NAMESPACE, 1))
    create_policy(kube, name, policy_spec(name, trace_file))
    config = app_config(trace_file)
    actuator = KubernetesActuator(config, kh.client_configuration(kube, "scaler"))
    daemon = Daemon(config, actuator=actuator)
    run = asyncio.create_task(run_daemon(config, duration_seconds=5, daemon=daemon, serve_metrics=False))
    try:
        await wait_for_replicas(kube, name, EXPECTED_REPLICAS)
    finally:
        exit_code = await run
    assert exit_code == 0
    assert name not in daemon.runtimes  # removed at shutdown
