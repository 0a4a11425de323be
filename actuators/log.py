"""The `log` actuator: a dry run that records each change and assumes it took effect at once."""

from __future__ import annotations

import structlog

from actuators.base import Actuator, ReplicaStatus
from runtime.model import Decision

log = structlog.get_logger("agent_autoscaler.actuator")


class LogActuator(Actuator):
    name = "log"

    def __init__(self) -> None:
        self.replicas: dict[str, int] = {}

    async def apply(self, decision: Decision, now: float) -> ReplicaStatus:
        previous = self.replicas.get(decision.workload)
        if previous != decision.final_replicas:
            log.info(
                "dry run: would scale", workload=decision.workload,
                from_replicas=previous if previous is not None else decision.current_replicas,
                to_replicas=decision.final_replicas, on_demand=decision.on_demand_replicas,
                spot=decision.spot_replicas, reason=decision.reason.value,
            )
            self.replicas[decision.workload] = decision.final_replicas
        count = self.replicas[decision.workload]
        return ReplicaStatus(requested=count, provisioned=count, ready=count)

    async def status(self, workload: str, now: float) -> ReplicaStatus | None:
        count = self.replicas.get(workload)
        return None if count is None else ReplicaStatus(count, count, count)
