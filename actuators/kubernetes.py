"""The `kubernetes` actuator: writes replica counts through the Kubernetes API.

Three modes per workload, chosen in `daemon.kubernetes`:
- scale (default): `spec.replicas` of the target through its `scale` subresource, which
  Deployments, StatefulSets and any custom resource with a scale subresource share;
- spot split: the on-demand and spot counts of the decision go to two objects;
- HPA floor: `spec.minReplicas` of an existing HorizontalPodAutoscaler is set to the
  decision, and the HPA keeps scaling reactively above it.

The actuator caches each object's replica count and resourceVersion. An unchanged
decision costs no API call while the cache is younger than `status_refresh_seconds`.
Writes carry the cached resourceVersion, so a change made by someone else in the
meantime comes back as 409 Conflict, which re-reads, reports drift and retries.
No per-workload API error escapes `apply` or `status`: each is logged as one structlog
event with the workload and reason, counted in `errors`, and the last known status is
returned.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException

from actuators.base import Actuator, ReplicaStatus
from runtime.config import AppConfig, KubernetesActuatorConfig, TargetRef, WorkloadConfig
from runtime.model import Decision

log = structlog.get_logger("agent_autoscaler.actuator.kubernetes")

DRY_RUN_ALL = "All"


class TargetConfigError(ValueError):
    """Raised when a target cannot be scaled at all: unknown kind, no scale subresource, core group."""


@dataclass(frozen=True, slots=True)
class ScaleTarget:
    """One object whose scale subresource the actuator reads and writes."""

    group: str
    version: str
    plural: str
    kind: str
    namespace: str
    name: str

    @property
    def identity(self) -> str:
        return f"{self.group}/{self.version}/{self.plural}/{self.namespace}/{self.name}"


@dataclass(slots=True)
class ObjectState:
    """Cached view of one object; `expected` is the spec.replicas value the actuator believes is stored."""

    expected: int | None = None
    provisioned: int = 0
    resource_version: str | None = None
    read_at: float | None = None  # monotonic seconds
    missing: bool = False
    # Set when a read found a value that neither this actuator wrote nor saw before.
    drift_pending: bool = False
    # Last value sent with dryRun=All, so that an unchanged dry-run decision is not resent.
    dry_run_value: int | None = None


@dataclass(slots=True)
class HpaState:
    min_replicas: int | None = None
    max_replicas: int | None = None
    resource_version: str | None = None
    read_at: float | None = None
    missing: bool = False
    dry_run_value: int | None = None


@dataclass(slots=True)
class WorkloadPlan:
    """Actuation mode and objects of one workload, including the HPA in HPA-floor mode."""

    workload: str
    mode: str  # "scale", "spot_split" or "hpa_floor"
    target_ref: TargetRef
    names: tuple[str, ...]  # one object, or on-demand then spot
    hpa_name: str | None = None
    raise_max_replicas: bool = False
    targets: tuple[ScaleTarget, ...] = ()
    error: str | None = None


@dataclass(slots=True)
class ActuatorCounters:
    """API calls by verb and errors by reason; the benchmark reads them."""

    calls: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)
    writes: int = 0

    @property
    def total_calls(self) -> int:
        return sum(self.calls.values())


def rbac_hint(group: str, resource: str, verb: str, namespace: str) -> str:
    """Return the RBAC rule that would grant `verb` on `resource`, for 403 messages."""
    return (
        f"grant verbs [{verb}] on apiGroups [{group!r}] resources [{resource}] in namespace {namespace}, "
        "for example by a RoleBinding there to the ClusterRole agent-autoscaler from deploy/rbac.yaml"
    )


def server_message(exc: ApiException) -> str:
    """Extract the API server's Status message from an error, falling back to the reason."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (TypeError, ValueError):
        return str(exc.reason)
    return str(body.get("message") or exc.reason)


class KubernetesActuator(Actuator):
    """Scales workloads through the Kubernetes API; see the module docstring for the contract."""

    name = "kubernetes"

    def __init__(
        self,
        config: AppConfig,
        configuration: k8s.Configuration | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings: KubernetesActuatorConfig = config.daemon.kubernetes
        self.configuration = configuration
        self.clock = clock
        self.counters = ActuatorCounters()
        self.plans = {workload.name: self._plan(workload) for workload in config.workloads}
        self.objects: dict[ScaleTarget, ObjectState] = {}
        self.hpas: dict[tuple[str, str], HpaState] = {}
        self.discovery: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.last_logged: dict[tuple[str, str], float] = {}
        self.last_event_at: dict[str, float] = {}
        self._api_client: k8s.ApiClient | None = None
        self._client_lock = asyncio.Lock()
        self._discovery_lock = asyncio.Lock()
        # Leader election sets this to False when the lease is lost; no write goes out then.
        self.writes_enabled = True

    def _plan(self, workload: WorkloadConfig) -> WorkloadPlan:
        target = workload.target
        split = self.settings.spot_split.get(workload.name)
        floor = self.settings.hpa_floor.get(workload.name)
        if split is not None:
            return WorkloadPlan(workload.name, "spot_split", target, (split.on_demand_name, split.spot_name))
        if floor is not None:
            return WorkloadPlan(workload.name, "hpa_floor", target, (target.name,), floor.hpa_name, floor.raise_max_replicas)
        return WorkloadPlan(workload.name, "scale", target, (target.name,))

    def add_workload(self, workload: WorkloadConfig) -> None:
        self.plans[workload.name] = self._plan(workload)

    def remove_workload(self, name: str) -> None:
        plan = self.plans.pop(name, None)
        if plan is None:
            return
        # Drop the cached counts so that a workload added again for the same object reads it first.
        for target in plan.targets:
            self.objects.pop(target, None)
        if plan.hpa_name is not None:
            self.hpas.pop((plan.target_ref.namespace, plan.hpa_name), None)
        self.last_event_at.pop(name, None)

    def target_problem(self, workload: str) -> tuple[str, str] | None:
        """Return (reason, message) when the workload's target cannot be scaled now, else None."""
        plan = self.plans.get(workload)
        if plan is None:
            return None
        if plan.error is not None:
            return "TargetInvalid", plan.error
        missing = [target.identity for target in plan.targets if (state := self.objects.get(target)) is not None and state.missing]
        if missing:
            return "TargetNotFound", f"target {', '.join(missing)} was not found; create it or correct spec.target"
        return None

    # Client and discovery ---------------------------------------------------------------

    async def api_client(self) -> k8s.ApiClient:
        """Return the shared API client, loading kubeconfig or in-cluster settings on first use."""
        async with self._client_lock:
            if self._api_client is None:
                configuration = self.configuration
                if configuration is None:
                    configuration = k8s.Configuration()
                    if self.settings.kubeconfig is not None:
                        await k8s_config.load_kube_config(
                            config_file=str(self.settings.kubeconfig), context=self.settings.context,
                            client_configuration=configuration,
                        )
                    else:
                        k8s_config.load_incluster_config(client_configuration=configuration)
                self._api_client = k8s.ApiClient(configuration)
            return self._api_client

    async def close(self) -> None:
        if self._api_client is not None:
            await self._api_client.close()
            self._api_client = None

    async def _call(self, verb: str, coroutine_factory: Callable[[], Any]) -> Any:
        self.counters.calls[verb] += 1
        return await coroutine_factory()

    async def _resources(self, group: str, version: str) -> list[dict[str, Any]]:
        key = (group, version)
        # One lock for all groups: concurrent first decisions would otherwise each repeat discovery.
        async with self._discovery_lock:
            return await self._discover(key)

    async def _discover(self, key: tuple[str, str]) -> list[dict[str, Any]]:
        group, version = key
        if key not in self.discovery:
            api = k8s.CustomObjectsApi(await self.api_client())
            response = await self._call("discover", lambda: api.get_api_resources(
                group, version, _request_timeout=self.settings.request_timeout_seconds,
            ))
            self.discovery[key] = [
                {"name": resource.name, "kind": resource.kind} for resource in (response.resources or [])
            ]
        return self.discovery[key]

    async def _resolve(self, plan: WorkloadPlan) -> tuple[ScaleTarget, ...]:
        """Find the plural resource name of the target's kind and check it has a scale subresource."""
        if plan.targets:
            return plan.targets
        ref = plan.target_ref
        group, _, version = ref.api_version.rpartition("/")
        if not group:
            raise TargetConfigError(
                f"target api_version {ref.api_version!r} is the core group, which has no scalable kinds the actuator supports; "
                "use apps/v1 Deployment or StatefulSet, or a custom resource with a scale subresource"
            )
        resources = await self._resources(group, version)
        names = {resource["name"] for resource in resources}
        plural = next((r["name"] for r in resources if r.get("kind") == ref.kind and "/" not in r["name"]), None)
        if plural is None:
            kinds = sorted({r.get("kind", "") for r in resources if "/" not in r["name"]})
            raise TargetConfigError(f"kind {ref.kind!r} is not served by {ref.api_version}; use one of {kinds}")
        if f"{plural}/scale" not in names:
            raise TargetConfigError(f"{ref.kind} in {ref.api_version} has no scale subresource; pick a kind that has one or use hpa_floor mode")
        plan.targets = tuple(ScaleTarget(group, version, plural, ref.kind, ref.namespace, name) for name in plan.names)
        return plan.targets

    # Logging helpers ----------------------------------------------------------------------

    def _should_log(self, workload: str, reason: str) -> bool:
        key = (workload, reason)
        now = self.clock()
        previous = self.last_logged.get(key)
        if previous is not None and now - previous < self.settings.error_log_interval_seconds:
            return False
        self.last_logged[key] = now
        return True

    def _failure(self, workload: str, target: str, verb: str, resource: str, group: str, namespace: str, exc: Exception) -> None:
        """Count and log one failed request; repeats of the same reason are rate-limited."""
        status = getattr(exc, "status", None)
        if status == 403:
            reason, message = "forbidden", rbac_hint(group, resource, verb, namespace)
        elif status == 404:
            reason, message = "not_found", f"{resource} {target} does not exist; it is read again every status_refresh_seconds"
        elif status == 422:
            reason, message = "invalid", server_message(exc)
        elif status == 409:
            reason, message = "conflict", "retries exhausted; the next decision tries again"
        elif isinstance(exc, ApiException):
            reason, message = f"http_{status}", server_message(exc)
        else:
            reason, message = type(exc).__name__, str(exc) or repr(exc)
        self.counters.errors[reason] += 1
        if self._should_log(workload, f"{reason}:{verb}:{target}"):
            log.error(
                "kubernetes request failed", workload=workload, target=target, verb=verb, resource=resource,
                namespace=namespace, status=status, reason=reason, error=message,
                occurrences=self.counters.errors[reason],
            )

    # Scale subresource --------------------------------------------------------------------

    async def _read_scale(self, workload: str, target: ScaleTarget) -> ObjectState:
        """Read the object's scale, update the cache and flag drift; errors are logged, not raised."""
        state = self.objects.setdefault(target, ObjectState())
        api = k8s.CustomObjectsApi(await self.api_client())
        try:
            scale = await self._call("get", lambda: api.get_namespaced_custom_object_scale(
                target.group, target.version, target.namespace, target.plural, target.name,
                _request_timeout=self.settings.request_timeout_seconds,
            ))
        except Exception as exc:  # any request failure: logged and counted, never raised
            state.read_at = self.clock()
            if getattr(exc, "status", None) == 404:
                if not state.missing:
                    self._failure(workload, target.identity, "get", f"{target.plural}/scale", target.group, target.namespace, exc)
                state.missing = True
            else:
                self._failure(workload, target.identity, "get", f"{target.plural}/scale", target.group, target.namespace, exc)
            return state
        if state.missing:
            log.info("kubernetes target found again", workload=workload, target=target.identity)
        state.missing = False
        observed = int(scale.get("spec", {}).get("replicas", 0))
        if state.expected is not None and observed != state.expected:
            state.drift_pending = True
            log.warning(
                "replica count changed outside the autoscaler", workload=workload, target=target.identity,
                expected_replicas=state.expected, observed_replicas=observed, drift_policy=self.settings.drift_policy,
            )
        state.expected = observed
        state.provisioned = int(scale.get("status", {}).get("replicas", 0) or 0)
        state.resource_version = scale.get("metadata", {}).get("resourceVersion")
        state.read_at = self.clock()
        return state

    def _fresh(self, read_at: float | None) -> bool:
        return read_at is not None and self.clock() - read_at < self.settings.status_refresh_seconds

    async def _write_scale(self, workload: str, target: ScaleTarget, replicas: int, decision: Decision) -> None:
        """Write `replicas` unless the cache shows it is already set; retry 409 with a fresh read."""
        state = self.objects.setdefault(target, ObjectState())
        if state.expected is None or (state.missing and not self._fresh(state.read_at)):
            state = await self._read_scale(workload, target)
        if state.missing or state.expected is None:
            return
        if state.drift_pending:
            state.drift_pending = False
            if self.settings.drift_policy == "respect":
                log.info(
                    "respecting external replica change until the next decision", workload=workload, target=target.identity,
                    observed_replicas=state.expected, decided_replicas=replicas,
                )
                return
        if self.settings.dry_run:
            if state.dry_run_value == replicas or (state.dry_run_value is None and state.expected == replicas):
                return
        elif state.expected == replicas:
            return
        if not self.writes_enabled:
            log.info("write skipped: not the leader", workload=workload, target=target.identity, to_replicas=replicas)
            return

        api = k8s.CustomObjectsApi(await self.api_client())
        for attempt in range(self.settings.conflict_retries + 1):
            body = {
                "apiVersion": "autoscaling/v1", "kind": "Scale",
                "metadata": {"name": target.name, "namespace": target.namespace, "resourceVersion": state.resource_version},
                "spec": {"replicas": replicas},
            }
            options: dict[str, Any] = {"field_manager": self.settings.field_manager, "_request_timeout": self.settings.request_timeout_seconds}
            if self.settings.dry_run:
                options["dry_run"] = DRY_RUN_ALL
            previous = state.expected
            try:
                written = await self._call("update", lambda: api.replace_namespaced_custom_object_scale(
                    target.group, target.version, target.namespace, target.plural, target.name, body, **options,
                ))
            except Exception as exc:  # classified and logged below, never raised
                status = getattr(exc, "status", None)
                if status == 409 and attempt < self.settings.conflict_retries:
                    self.counters.errors["conflict_retried"] += 1
                    log.info("write conflict; re-reading", workload=workload, target=target.identity, attempt=attempt + 1, to_replicas=replicas)
                    state = await self._read_scale(workload, target)
                    if state.missing or state.expected is None:
                        return
                    if state.drift_pending and self.settings.drift_policy == "respect":
                        state.drift_pending = False
                        log.info("respecting external replica change until the next decision", workload=workload,
                                 target=target.identity, observed_replicas=state.expected, decided_replicas=replicas)
                        return
                    state.drift_pending = False
                    if state.expected == replicas:
                        return
                    continue
                if status == 404:
                    state.missing = True
                    state.read_at = self.clock()
                self._failure(workload, target.identity, "update", f"{target.plural}/scale", target.group, target.namespace, exc)
                return
            self.counters.writes += 1
            if self.settings.dry_run:
                state.dry_run_value = replicas
            else:
                state.expected = replicas
                state.resource_version = (written or {}).get("metadata", {}).get("resourceVersion")
                state.read_at = self.clock()
            log.info(
                "scaled" if not self.settings.dry_run else "dry run: scale accepted by the API server",
                workload=workload, target=target.identity, from_replicas=previous, to_replicas=replicas,
                reason=decision.reason.value, dry_run=self.settings.dry_run,
            )
            await self._post_event(workload, target, previous, replicas, decision)
            return

    # HPA floor ----------------------------------------------------------------------------

    async def _read_hpa(self, workload: str, namespace: str, name: str) -> HpaState:
        state = self.hpas.setdefault((namespace, name), HpaState())
        api = k8s.AutoscalingV2Api(await self.api_client())
        try:
            hpa = await self._call("get", lambda: api.read_namespaced_horizontal_pod_autoscaler(
                name, namespace, _request_timeout=self.settings.request_timeout_seconds,
            ))
        except Exception as exc:  # logged and counted, never raised
            state.read_at = self.clock()
            state.missing = getattr(exc, "status", None) == 404
            self._failure(workload, f"{namespace}/{name}", "get", "horizontalpodautoscalers", "autoscaling", namespace, exc)
            return state
        state.missing = False
        minimum = hpa.spec.min_replicas if hpa.spec.min_replicas is not None else 1
        if state.min_replicas is not None and minimum != state.min_replicas:
            log.warning("HPA minReplicas changed outside the autoscaler", workload=workload, hpa=f"{namespace}/{name}",
                        expected_replicas=state.min_replicas, observed_replicas=minimum)
        state.min_replicas = minimum
        state.max_replicas = hpa.spec.max_replicas
        state.resource_version = hpa.metadata.resource_version
        state.read_at = self.clock()
        return state

    async def _write_hpa_floor(self, plan: WorkloadPlan, decision: Decision) -> None:
        assert plan.hpa_name is not None
        namespace = plan.target_ref.namespace
        # minReplicas must be at least 1 unless the HPAScaleToZero feature gate is on.
        floor = max(1, decision.final_replicas)
        state = self.hpas.setdefault((namespace, plan.hpa_name), HpaState())
        if state.min_replicas is None or not self._fresh(state.read_at):
            state = await self._read_hpa(plan.workload, namespace, plan.hpa_name)
        if state.min_replicas is None:
            return
        current = state.dry_run_value if self.settings.dry_run and state.dry_run_value is not None else state.min_replicas
        if current == floor:
            return
        if not self.writes_enabled:
            log.info("write skipped: not the leader", workload=plan.workload, hpa=f"{namespace}/{plan.hpa_name}", to_replicas=floor)
            return
        spec: dict[str, Any] = {"minReplicas": floor}
        if plan.raise_max_replicas and state.max_replicas is not None and floor > state.max_replicas:
            spec["maxReplicas"] = floor
        body = {"metadata": {"resourceVersion": state.resource_version}, "spec": spec}
        options: dict[str, Any] = {"field_manager": self.settings.field_manager, "_request_timeout": self.settings.request_timeout_seconds}
        if self.settings.dry_run:
            options["dry_run"] = DRY_RUN_ALL
        api = k8s.AutoscalingV2Api(await self.api_client())
        try:
            await self._call("patch", lambda: api.patch_namespaced_horizontal_pod_autoscaler(plan.hpa_name, namespace, body, **options))
        except Exception as exc:  # logged and counted; a 409 is retried at the next decision after a re-read
            if getattr(exc, "status", None) == 409:
                state.read_at = None
            self._failure(plan.workload, f"{namespace}/{plan.hpa_name}", "patch", "horizontalpodautoscalers", "autoscaling", namespace, exc)
            return
        self.counters.writes += 1
        previous = state.min_replicas
        if self.settings.dry_run:
            state.dry_run_value = floor
        else:
            state.min_replicas = floor
            state.max_replicas = spec.get("maxReplicas", state.max_replicas)
            state.read_at = None  # the resourceVersion changed, so read before the next patch
        log.info(
            "HPA floor set" if not self.settings.dry_run else "dry run: HPA floor accepted by the API server",
            workload=plan.workload, hpa=f"{namespace}/{plan.hpa_name}", from_replicas=previous, to_replicas=floor,
            max_replicas=spec.get("maxReplicas"), reason=decision.reason.value, dry_run=self.settings.dry_run,
        )

    # Events -------------------------------------------------------------------------------

    async def _post_event(self, workload: str, target: ScaleTarget, previous: int | None, replicas: int, decision: Decision) -> None:
        """Post one core/v1 Event on the target, at most one per workload per event_interval_seconds."""
        if not self.settings.events or self.settings.dry_run:
            return
        now = self.clock()
        last = self.last_event_at.get(workload)
        if last is not None and now - last < self.settings.event_interval_seconds:
            return
        self.last_event_at[workload] = now
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{target.name}.", "namespace": target.namespace},
            "involvedObject": {"apiVersion": f"{target.group}/{target.version}", "kind": target.kind, "name": target.name, "namespace": target.namespace},
            "reason": "PredictiveScale", "type": "Normal",
            "message": f"scaled from {previous} to {replicas} replicas for workload {workload}: {decision.reason.value}",
            "source": {"component": "agent-autoscaler"}, "reportingComponent": "agent-autoscaler",
            "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
        }
        api = k8s.CoreV1Api(await self.api_client())
        try:
            await self._call("create", lambda: api.create_namespaced_event(target.namespace, body, _request_timeout=self.settings.request_timeout_seconds))
        except Exception as exc:  # an Event is informational, so a failure only logs
            self._failure(workload, target.identity, "create", "events", "", target.namespace, exc)

    # Actuator interface -------------------------------------------------------------------

    async def _targets(self, plan: WorkloadPlan) -> tuple[ScaleTarget, ...] | None:
        if plan.error is not None:
            return None
        try:
            return await self._resolve(plan)
        except TargetConfigError as exc:
            plan.error = str(exc)
            self.counters.errors["invalid_target"] += 1
            log.error("kubernetes target cannot be scaled", workload=plan.workload, target=plan.target_ref.model_dump(), error=plan.error)
            return None
        except Exception as exc:  # discovery failed; retried at the next call
            self._failure(plan.workload, plan.target_ref.api_version, "get", "discovery", plan.target_ref.api_version.rpartition("/")[0], plan.target_ref.namespace, exc)
            return None

    def _known_status(self, targets: tuple[ScaleTarget, ...]) -> ReplicaStatus | None:
        states = [self.objects.get(target) for target in targets]
        if any(state is None or state.expected is None for state in states):
            return None
        requested = sum(state.expected for state in states if state is not None and state.expected is not None)
        provisioned = sum(state.provisioned for state in states if state is not None)
        # NOTE: the scale subresource has no ready count, so ready is reported as provisioned.
        return ReplicaStatus(requested=requested, provisioned=provisioned, ready=provisioned)

    async def status(self, workload: str, now: float) -> ReplicaStatus | None:
        plan = self.plans.get(workload)
        if plan is None:
            return None
        targets = await self._targets(plan)
        if targets is None:
            return None
        for target in targets:
            state = self.objects.get(target)
            if state is None or not self._fresh(state.read_at):
                await self._read_scale(workload, target)
        return self._known_status(targets)

    async def apply(self, decision: Decision, now: float) -> ReplicaStatus:
        plan = self.plans.get(decision.workload)
        fallback = ReplicaStatus(0, 0, 0)
        if plan is None:
            self.counters.errors["unknown_workload"] += 1
            log.error("decision for a workload not in the config", workload=decision.workload)
            return fallback
        targets = await self._targets(plan)
        if targets is None:
            return fallback
        if plan.mode == "hpa_floor":
            await self._write_hpa_floor(plan, decision)
        elif plan.mode == "spot_split":
            # The two counts add up to final_replicas once both writes succeed; a failed write is
            # logged and retried at the next decision.
            pairs = [(targets[0], decision.on_demand_replicas), (targets[1], decision.spot_replicas)]
            for target, replicas in pairs:
                await self._write_scale(decision.workload, target, replicas, decision)
        else:
            await self._write_scale(decision.workload, targets[0], decision.final_replicas, decision)
        return self._known_status(targets) or fallback
