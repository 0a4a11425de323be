"""The actuator interface: apply a decision to a workload and report its replica counts."""

from __future__ import annotations

import abc
from dataclasses import dataclass

from runtime.config import WorkloadConfig
from runtime.model import Decision


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    """Replica counts of one workload as the actuator reads them."""

    requested: int  # spec.replicas: what was asked for
    provisioned: int  # pods that exist and cost money, ready or starting
    ready: int


class Actuator(abc.ABC):
    """Applies decisions. Implementations must not raise for per-workload API errors;
    they log them and report the workload's last known status instead."""

    name: str = "base"

    @abc.abstractmethod
    async def apply(self, decision: Decision, now: float) -> ReplicaStatus:
        """Bring the workload towards `decision` and return its status afterwards."""

    async def status(self, workload: str, now: float) -> ReplicaStatus | None:
        """Return the workload's current status, or None when unknown."""
        return None

    def add_workload(self, workload: WorkloadConfig) -> None:
        """Start accepting decisions for a workload added while the daemon runs."""
        return None

    def remove_workload(self, name: str) -> None:
        """Forget a workload removed while the daemon runs, with any cached state of its targets."""
        return None

    async def close(self) -> None:
        return None
