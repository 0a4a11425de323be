"""A simulated cluster: new replicas become ready one startup lead after they are requested.

`SimulatedCluster` is synchronous and clock-free so that the simulator steps it on
virtual time; `SimulatedActuator` wraps one cluster per workload for the daemon.
Spot replicas can be preempted at a configured hourly rate (seeded); a preempted
replica is replaced at once and is ready again one lead later.
"""

from __future__ import annotations

import bisect
import random

from actuators.base import Actuator, ReplicaStatus
from runtime.config import WorkloadConfig
from runtime.model import Decision


class SimulatedCluster:
    def __init__(self, startup_lead_seconds: float, preemptions_per_hour: float = 0.0, seed: int = 1):
        self.lead = float(startup_lead_seconds)
        self.preemptions_per_hour = preemptions_per_hour
        self._random = random.Random(seed)
        self.ready = {"on_demand": 0, "spot": 0}
        # Sorted ready-at times of starting replicas, per capacity type.
        self.starting: dict[str, list[float]] = {"on_demand": [], "spot": []}
        self.last_advance: float | None = None
        self.preemptions = 0

    def start_ready(self, on_demand: int, spot: int) -> None:
        """Set counts that are ready from the start (the simulation's initial state)."""
        self.ready = {"on_demand": on_demand, "spot": spot}
        self.starting = {"on_demand": [], "spot": []}

    def requested(self, kind: str | None = None) -> int:
        kinds = (kind,) if kind else ("on_demand", "spot")
        return sum(self.ready[k] + len(self.starting[k]) for k in kinds)

    @property
    def ready_total(self) -> int:
        return self.ready["on_demand"] + self.ready["spot"]

    def advance(self, now: float) -> None:
        """Move replicas whose lead has passed to ready, then apply spot preemptions since the last call."""
        for kind, pending in self.starting.items():
            done = bisect.bisect_right(pending, now)
            if done:
                self.ready[kind] += done
                del pending[:done]
        if self.preemptions_per_hour > 0 and self.last_advance is not None and self.ready["spot"] > 0:
            probability = min(1.0, self.preemptions_per_hour * (now - self.last_advance) / 3600.0)
            preempted = sum(1 for _ in range(self.ready["spot"]) if self._random.random() < probability)
            if preempted:
                self.preemptions += preempted
                self.ready["spot"] -= preempted
                for _ in range(preempted):
                    bisect.insort(self.starting["spot"], now + self.lead)
        self.last_advance = now

    def scale(self, on_demand: int, spot: int, now: float) -> None:
        """Set the requested counts; removals take starting replicas first, the newest first."""
        for kind, target in (("on_demand", on_demand), ("spot", spot)):
            pending = self.starting[kind]
            have = self.ready[kind] + len(pending)
            if target > have:
                for _ in range(target - have):
                    pending.append(now + self.lead)
            elif target < have:
                remove = have - target
                from_pending = min(remove, len(pending))
                if from_pending:
                    del pending[len(pending) - from_pending :]
                self.ready[kind] -= remove - from_pending

    def status(self) -> ReplicaStatus:
        requested = self.requested()
        return ReplicaStatus(requested=requested, provisioned=requested, ready=self.ready_total)


class SimulatedActuator(Actuator):
    """The daemon's `simulated` actuator: one SimulatedCluster per workload, on the wall clock."""

    name = "simulated"

    def __init__(self, leads: dict[str, float], preemptions_per_hour: float = 0.0, seed: int = 1, initial_replicas: dict[str, int] | None = None):
        self.preemptions_per_hour = preemptions_per_hour
        self.seed = seed
        self.clusters = {
            workload: SimulatedCluster(lead, preemptions_per_hour, seed + index)
            for index, (workload, lead) in enumerate(sorted(leads.items()))
        }
        # A workload starts with its min_replicas ready, as a real Deployment would be running.
        for workload, count in (initial_replicas or {}).items():
            if workload in self.clusters:
                self.clusters[workload].start_ready(count, 0)

    def add_workload(self, workload: WorkloadConfig) -> None:
        cluster = SimulatedCluster(float(workload.startup_lead_seconds), self.preemptions_per_hour, self.seed + len(self.clusters))
        cluster.start_ready(workload.min_replicas, 0)
        self.clusters[workload.name] = cluster

    def remove_workload(self, name: str) -> None:
        self.clusters.pop(name, None)

    async def apply(self, decision: Decision, now: float) -> ReplicaStatus:
        cluster = self.clusters[decision.workload]
        cluster.advance(now)
        cluster.scale(decision.on_demand_replicas, decision.spot_replicas, now)
        return cluster.status()

    async def status(self, workload: str, now: float) -> ReplicaStatus | None:
        cluster = self.clusters.get(workload)
        if cluster is None:
            return None
        cluster.advance(now)
        return cluster.status()
