"""Leader election through a coordination.k8s.io/v1 Lease, so that one daemon replica actuates.

The algorithm follows client-go's leaderelection package: the holder renews `renewTime`
every `renew_interval_seconds`. A standby takes the Lease over once the record it
observed has not changed for `lease_duration_seconds`, measured on its own monotonic
clock, so clock skew between nodes does not matter. Every update carries the observed
resourceVersion, so two standbys racing for an expired Lease cannot both win: the
loser gets 409 Conflict.

The holder stops actuating at once when it reads another holder from the Lease, and when it has not
renewed successfully for `lease_duration_seconds - renew_interval_seconds`, which is
before any standby may take over.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import socket
import time
from collections.abc import Awaitable, Callable

import structlog
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio.client.exceptions import ApiException

from runtime.config import LeaderElectionConfig

log = structlog.get_logger("agent_autoscaler.leader")


def default_identity() -> str:
    return f"{socket.gethostname()}_{os.getpid()}"


def _now_micro() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    """Acquires and renews one Lease; `on_change(is_leader)` runs on every change of leadership."""

    def __init__(
        self,
        settings: LeaderElectionConfig,
        api_client: Callable[[], Awaitable[k8s.ApiClient]],
        on_change: Callable[[bool], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.identity = settings.identity or default_identity()
        self.api_client = api_client
        self.on_change = on_change
        self.clock = clock
        self.is_leader = False
        self.observed_record: tuple[str | None, str | None] | None = None  # (holder, renewTime)
        self.observed_at = 0.0
        self.last_renewed_at: float | None = None

    def _set_leader(self, leader: bool, reason: str) -> None:
        if leader == self.is_leader:
            return
        self.is_leader = leader
        log.info(
            "leadership acquired" if leader else "leadership lost", identity=self.identity, reason=reason,
            lease=f"{self.settings.lease_namespace}/{self.settings.lease_name}",
        )
        self.on_change(leader)

    def _lease_body(self, transitions: int, acquire_time: str, resource_version: str | None) -> dict:
        metadata: dict = {"name": self.settings.lease_name, "namespace": self.settings.lease_namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {
                "holderIdentity": self.identity,
                # The Lease API counts whole seconds; round up so that standbys never wait less than configured.
                "leaseDurationSeconds": max(1, int(-(-self.settings.lease_duration_seconds // 1))),
                "acquireTime": acquire_time, "renewTime": _now_micro(), "leaseTransitions": transitions,
            },
        }

    async def try_acquire_or_renew(self) -> bool:
        """Make one attempt to acquire or renew the Lease and return whether this process holds it."""
        api = k8s.CoordinationV1Api(await self.api_client())
        name, namespace = self.settings.lease_name, self.settings.lease_namespace
        try:
            lease = await api.read_namespaced_lease(name, namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            await api.create_namespaced_lease(namespace, self._lease_body(0, _now_micro(), None))
            self.last_renewed_at = self.clock()
            return True

        spec = lease.spec
        holder = spec.holder_identity or None
        renew_time = spec.renew_time.isoformat() if spec.renew_time else None
        record = (holder, renew_time)
        now = self.clock()
        if record != self.observed_record:
            self.observed_record = record
            self.observed_at = now
        duration = float(spec.lease_duration_seconds or self.settings.lease_duration_seconds)
        transitions = spec.lease_transitions or 0
        if holder == self.identity:
            acquire_time = spec.acquire_time.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if spec.acquire_time else _now_micro()
        elif holder is None or now - self.observed_at >= duration:
            acquire_time = _now_micro()
            transitions += 1
        else:
            return False  # another holder renewed within the lease duration
        await api.replace_namespaced_lease(name, namespace, self._lease_body(transitions, acquire_time, lease.metadata.resource_version))
        self.last_renewed_at = self.clock()
        return True

    async def step(self) -> None:
        """Run one election round and update leadership; API errors are logged, never raised."""
        try:
            holding = await self.try_acquire_or_renew()
        except Exception as exc:  # any request failure: keep leading only until the renew deadline
            status = getattr(exc, "status", None)
            log.warning("lease request failed", identity=self.identity, status=status, error=str(exc) or repr(exc))
            deadline = self.settings.lease_duration_seconds - self.settings.renew_interval_seconds
            if status == 409:
                self._set_leader(False, "another process updated the lease first")
            elif self.is_leader and (self.last_renewed_at is None or self.clock() - self.last_renewed_at >= deadline):
                self._set_leader(False, "lease not renewed before the renew deadline")
            return
        if holding:
            self._set_leader(True, "lease acquired or renewed")
        else:
            self._set_leader(False, f"lease held by {self.observed_record[0] if self.observed_record else None}")

    async def run(self) -> None:
        """Loop until cancelled; on cancellation release the Lease so that a standby takes over at once."""
        log.info("leader election started", identity=self.identity, lease=f"{self.settings.lease_namespace}/{self.settings.lease_name}")
        try:
            while True:
                await self.step()
                await asyncio.sleep(self.settings.renew_interval_seconds)
        finally:
            if self.is_leader:
                self._set_leader(False, "daemon stopping")
                await asyncio.shield(self.release())

    async def release(self) -> None:
        """Clear the holder so that standbys need not wait for the lease to expire."""
        try:
            api = k8s.CoordinationV1Api(await self.api_client())
            lease = await api.read_namespaced_lease(self.settings.lease_name, self.settings.lease_namespace)
            if lease.spec.holder_identity != self.identity:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            await api.replace_namespaced_lease(self.settings.lease_name, self.settings.lease_namespace, lease)
            log.info("lease released", identity=self.identity)
        except Exception as exc:  # the lease then simply expires
            log.warning("lease release failed; standbys wait for expiry", identity=self.identity, error=str(exc) or repr(exc))


def start_leader_election(actuator: object, settings: LeaderElectionConfig | None) -> asyncio.Task | None:
    """Gate a kubernetes actuator's writes on holding the Lease; return the election task or None.

    Without leader election, or for other actuators, the process always actuates.
    """
    api_client = getattr(actuator, "api_client", None)
    if settings is None or api_client is None:
        return None
    actuator.writes_enabled = False  # type: ignore[attr-defined]

    def on_change(leader: bool) -> None:
        actuator.writes_enabled = leader  # type: ignore[attr-defined]

    elector = LeaderElector(settings, api_client, on_change)
    actuator.elector = elector  # type: ignore[attr-defined]
    return asyncio.create_task(elector.run())
