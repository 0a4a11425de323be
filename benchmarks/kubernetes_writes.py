"""Measure the kubernetes actuator against a real kube-apiserver started by tests/realstack.py.

Reports, for N Deployments (default 1,000):
- scale writes per second when every decision changes the count (bounded concurrency);
- API calls per decision when nothing changes (the goal is zero);
- leader failover time after the holder stops without releasing the Lease, and after it
  releases the Lease on shutdown.

Run: python benchmarks/kubernetes_writes.py [--workloads 1000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from actuators.kubernetes import KubernetesActuator  # noqa: E402
from runtime.config import LeaderElectionConfig  # noqa: E402
from runtime.leader import LeaderElector  # noqa: E402
from tests import kubehelpers as kh  # noqa: E402
from tests import realstack  # noqa: E402

NAMESPACE = "bench"


async def apply_all(actuator: KubernetesActuator, names: list[str], replicas: int, concurrency: int) -> float:
    """Apply one decision per workload with at most `concurrency` in flight; return elapsed seconds."""
    gate = asyncio.Semaphore(concurrency)

    async def one(name: str) -> None:
        async with gate:
            await actuator.apply(kh.decision(name, replicas), 0.0)

    started = time.perf_counter()
    await asyncio.gather(*(one(name) for name in names))
    return time.perf_counter() - started


async def measure_writes(kube, count: int, concurrency: int) -> None:
    names = [f"w{i:04d}" for i in range(count)]
    config = kh.app_config([kh.workload_entry(name, NAMESPACE) for name in names], events=False, status_refresh_seconds=600)
    configuration = kh.client_configuration(kube, None)
    configuration.connection_pool_maxsize = concurrency
    actuator = KubernetesActuator(config, configuration)
    try:
        first = await apply_all(actuator, names, 3, concurrency)
        print(f"first decisions (read + write each): {count} in {first:.2f} s, calls {dict(actuator.counters.calls)}")
        before = actuator.counters.total_calls
        writes_before = actuator.counters.writes
        elapsed = await apply_all(actuator, names, 5, concurrency)
        writes = actuator.counters.writes - writes_before
        print(f"changed decisions: {writes} writes in {elapsed:.2f} s = {writes / elapsed:.0f} writes/s, "
              f"{(actuator.counters.total_calls - before) / count:.2f} API calls per decision")
        before = actuator.counters.total_calls
        elapsed = await apply_all(actuator, names, 5, concurrency)
        print(f"unchanged decisions: {count} in {elapsed * 1000:.1f} ms, "
              f"{(actuator.counters.total_calls - before) / count:.2f} API calls per decision")
        print(f"errors: {dict(actuator.counters.errors)}")
    finally:
        await actuator.close()


async def measure_failover(kube, duration: float, renew: float, release: bool) -> float:
    kube.request("DELETE", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/bench")
    clients = [KubernetesActuator(kh.app_config([kh.workload_entry("x", NAMESPACE)]), kh.client_configuration(kube, None)) for _ in range(2)]

    def settings(identity: str) -> LeaderElectionConfig:
        return LeaderElectionConfig(lease_name="bench", lease_namespace=NAMESPACE, lease_duration_seconds=duration, renew_interval_seconds=renew, identity=identity)

    holder = LeaderElector(settings("a"), clients[0].api_client, lambda leader: None)
    standby = LeaderElector(settings("b"), clients[1].api_client, lambda leader: None)
    holder_task = asyncio.create_task(holder.run())
    while not holder.is_leader:
        await asyncio.sleep(0.01)
    standby_task = asyncio.create_task(standby.run())
    await asyncio.sleep(renew * 2)
    stopped = time.perf_counter()
    if release:
        holder_task.cancel()
        await asyncio.gather(holder_task, return_exceptions=True)
    else:
        # A crash: the holder stops renewing and never releases.
        holder_task.cancel()
        holder.is_leader = False
        await asyncio.gather(holder_task, return_exceptions=True)
    while not standby.is_leader:
        await asyncio.sleep(0.01)
    failover = time.perf_counter() - stopped
    standby_task.cancel()
    await asyncio.gather(standby_task, return_exceptions=True)
    for client in clients:
        await client.close()
    return failover


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=1000, help="number of Deployments (default 1000)")
    parser.add_argument("--concurrency", type=int, default=64, help="decisions applied at once (default 64)")
    args = parser.parse_args()
    if realstack.find_kube_binaries() is None:
        print(f"error: kube-apiserver or etcd not found; run {realstack.SETUP_COMMAND}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as workdir, realstack.kube_apiserver(Path(workdir)) as kube:
        kh.create(kube, kh.namespace(NAMESPACE))
        started = time.perf_counter()
        for i in range(args.workloads):
            kh.create(kube, kh.deployment(f"w{i:04d}", NAMESPACE, 1))
        print(f"created {args.workloads} Deployments in {time.perf_counter() - started:.1f} s")
        asyncio.run(measure_writes(kube, args.workloads, args.concurrency))
        for release in (False, True):
            failover = asyncio.run(measure_failover(kube, duration=3.0, renew=0.5, release=release))
            kind = "holder released the Lease" if release else "holder stopped without release"
            print(f"leader failover, lease 3 s, renew 0.5 s, {kind}: {failover:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
