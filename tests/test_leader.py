"""Lease leader election against a real kube-apiserver, as the `scaler` user bound to the
leader-election Role and the target ClusterRole from deploy/rbac.yaml."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from actuators.kubernetes import KubernetesActuator
from runtime.config import LeaderElectionConfig
from runtime.leader import LeaderElector, start_leader_election
from runtime.manifests import render_documents

try:
    from tests import kubehelpers as kh
    from tests import realstack
except ImportError:
    import kubehelpers as kh
    import realstack

DAEMON_NAMESPACE = "scaling-system"
TARGET = "team-a"
LEASE = "agent-autoscaler"


@pytest.fixture(scope="module")
def kube(tmp_path_factory):
    realstack.require(realstack.find_kube_binaries(), "kube-apiserver and etcd")
    with realstack.kube_apiserver(tmp_path_factory.mktemp("kube")) as server:
        kh.create(server, kh.namespace(TARGET))
        for document in render_documents(DAEMON_NAMESPACE, "image:1", [TARGET]):
            kh.create(server, document)
        kh.bind_cluster_role(server, TARGET, "scaler")
        kh.create(server, {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "leader-scaler", "namespace": DAEMON_NAMESPACE},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "agent-autoscaler-leader-election"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "scaler"}],
        })
        yield server


def lease(kube) -> dict:
    status, body = kube.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{DAEMON_NAMESPACE}/leases/{LEASE}")
    assert status in (200, 404), body
    return body if status == 200 else {}


def delete_lease(kube) -> None:
    kube.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{DAEMON_NAMESPACE}/leases/{LEASE}")


def settings(identity: str, duration: float = 2.0, renew: float = 0.5) -> LeaderElectionConfig:
    return LeaderElectionConfig(lease_name=LEASE, lease_namespace=DAEMON_NAMESPACE, lease_duration_seconds=duration, renew_interval_seconds=renew, identity=identity)


def actuator_for(kube, name: str) -> KubernetesActuator:
    config = kh.app_config([kh.workload_entry(name, TARGET)])
    return KubernetesActuator(config, kh.client_configuration(kube, "scaler"))


async def test_standby_takes_over_expired_lease(kube):
    delete_lease(kube)
    first, second = actuator_for(kube, "a"), actuator_for(kube, "b")
    changes: list[tuple[str, bool]] = []
    elector_a = LeaderElector(settings("daemon-a"), first.api_client, lambda leader: changes.append(("a", leader)))
    elector_b = LeaderElector(settings("daemon-b"), second.api_client, lambda leader: changes.append(("b", leader)))
    try:
        await elector_a.step()
        await elector_b.step()
        assert elector_a.is_leader
        assert not elector_b.is_leader
        assert lease(kube)["spec"]["holderIdentity"] == "daemon-a"

        # daemon-a stops renewing without releasing, as after a crash; daemon-b waits for expiry.
        for _ in range(40):
            await elector_b.step()
            if elector_b.is_leader:
                break
            await asyncio.sleep(0.25)
        assert elector_b.is_leader
        record = lease(kube)["spec"]
        assert record["holderIdentity"] == "daemon-b"
        assert record["leaseTransitions"] == 1

        # The old holder reads the new holder and stops at its next round.
        await elector_a.step()
        assert not elector_a.is_leader
        assert changes == [("a", True), ("b", True), ("a", False)]
    finally:
        await first.close()
        await second.close()


async def test_release_hands_over_at_once(kube):
    delete_lease(kube)
    first, second = actuator_for(kube, "a"), actuator_for(kube, "b")
    long = settings("daemon-a", duration=60.0, renew=1.0)
    elector_a = LeaderElector(long, first.api_client, lambda leader: None)
    elector_b = LeaderElector(settings("daemon-b", duration=60.0, renew=1.0), second.api_client, lambda leader: None)
    try:
        task = asyncio.create_task(elector_a.run())
        for _ in range(40):
            if elector_a.is_leader:
                break
            await asyncio.sleep(0.05)
        assert elector_a.is_leader
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert lease(kube)["spec"].get("holderIdentity") is None

        await elector_b.step()
        assert elector_b.is_leader
    finally:
        await first.close()
        await second.close()


async def test_standby_actuator_does_not_write(kube):
    delete_lease(kube)
    name = "gated"
    kh.create(kube, kh.deployment(name, TARGET, 2))
    leader_actuator, standby_actuator = actuator_for(kube, name), actuator_for(kube, name)
    try:
        leader_task = start_leader_election(leader_actuator, settings("daemon-a", duration=30.0, renew=1.0))
        for _ in range(40):
            if leader_actuator.writes_enabled:
                break
            await asyncio.sleep(0.05)
        standby_task = start_leader_election(standby_actuator, settings("daemon-b", duration=30.0, renew=1.0))
        await asyncio.sleep(0.3)
        assert leader_actuator.writes_enabled
        assert not standby_actuator.writes_enabled

        await standby_actuator.apply(kh.decision(name, 9), 0.0)
        assert kh.spec_replicas(kube, TARGET, name) == 2
        await leader_actuator.apply(kh.decision(name, 5), 0.0)
        assert kh.spec_replicas(kube, TARGET, name) == 5
        for task in (leader_task, standby_task):
            task.cancel()
        await asyncio.gather(leader_task, standby_task, return_exceptions=True)
    finally:
        await leader_actuator.close()
        await standby_actuator.close()


# Failover between two `agent-autoscaler run` processes ------------------------------------


def write_daemon_files(kube, directory: Path, identity: str, health_port: int, metrics_port: int) -> Path:
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": kube.url, "certificate-authority": str(kube.ca_file)}}],
        "users": [{"name": "scaler", "user": {"token": kube.user_tokens["scaler"]}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "scaler"}}],
    }
    (directory / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    trace = directory / "trace.csv"
    if not trace.exists():
        start = 1_700_000_000
        rows = [f"{start + 60 * i},{600}" for i in range(3 * 1440)]
        trace.write_text("timestamp,value\n" + "\n".join(rows) + "\n")
    workload = kh.workload_entry("failover", TARGET)
    workload["min_replicas"] = 3
    workload["signals"][0]["source"]["path"] = str(trace)
    workload["forecaster"] = {"model": "none"}
    config = {
        "daemon": {
            "tick_seconds": 0.5, "actuator": "kubernetes", "log_format": "json",
            "metrics_address": f"127.0.0.1:{metrics_port}", "health_address": f"127.0.0.1:{health_port}",
            "kubernetes": {
                "kubeconfig": str(directory / "kubeconfig"), "status_refresh_seconds": 0.5, "drift_policy": "override",
                "leader_election": {"lease_name": LEASE, "lease_namespace": DAEMON_NAMESPACE, "lease_duration_seconds": 3, "renew_interval_seconds": 0.5, "identity": identity},
            },
        },
        "budgets": {"default": {"max_hourly_cost": 100.0, "on_demand_price_per_replica_hour": 0.1, "spot_price_per_replica_hour": 0.03}},
        "workloads": [workload],
    }
    path = directory / f"{identity}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_daemon(config: Path, log_path: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "runtime.cli", "run", "--config", str(config)],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parent.parent,
    )


def wait_for(condition, timeout_seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False


def get_json(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, {}
    except OSError:
        return 0, {}


@pytest.mark.slow
def test_failover_between_daemon_processes(kube, tmp_path):
    delete_lease(kube)
    kh.create(kube, kh.deployment("failover", TARGET, 1))
    ports = [realstack.free_port() for _ in range(4)]
    config_a = write_daemon_files(kube, tmp_path, "daemon-a", ports[0], ports[1])
    config_b = write_daemon_files(kube, tmp_path, "daemon-b", ports[2], ports[3])
    daemon_a = start_daemon(config_a, tmp_path / "a.log")
    daemon_b = None
    try:
        assert wait_for(lambda: lease(kube).get("spec", {}).get("holderIdentity") == "daemon-a"), (tmp_path / "a.log").read_text()[-3000:]
        # min_replicas=3 clamps every decision, so the leader raises spec.replicas from 1.
        assert wait_for(lambda: kh.spec_replicas(kube, TARGET, "failover") >= 3), (tmp_path / "a.log").read_text()[-3000:]

        daemon_b = start_daemon(config_b, tmp_path / "b.log")
        assert wait_for(lambda: get_json(f"http://127.0.0.1:{ports[2]}/readyz")[0] == 200), (tmp_path / "b.log").read_text()[-3000:]
        status, body = get_json(f"http://127.0.0.1:{ports[2]}/readyz")
        assert body["leader"] is False
        status, body = get_json(f"http://127.0.0.1:{ports[0]}/healthz")
        assert status == 200

        # An abrupt stop: the Lease is not released, so daemon-b waits for it to expire.
        os.kill(daemon_a.pid, signal.SIGKILL)
        daemon_a.wait(timeout=30)
        assert wait_for(lambda: lease(kube)["spec"].get("holderIdentity") == "daemon-b"), (tmp_path / "b.log").read_text()[-3000:]
        assert lease(kube)["spec"]["leaseTransitions"] == 1

        kh.set_replicas(kube, TARGET, "failover", 1)
        assert wait_for(lambda: kh.spec_replicas(kube, TARGET, "failover") >= 3), (tmp_path / "b.log").read_text()[-3000:]
        b_log = (tmp_path / "b.log").read_text()
        assert '"leadership acquired"' in b_log

        daemon_b.send_signal(signal.SIGTERM)
        assert daemon_b.wait(timeout=60) == 0
        assert lease(kube)["spec"].get("holderIdentity") is None
    finally:
        for process in (daemon_a, daemon_b):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait(timeout=30)
