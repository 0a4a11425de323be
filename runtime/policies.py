"""ScalingPolicy resources: workloads defined in the cluster instead of the config file.

`ScalingPolicyController` watches the ScalingPolicy resources of each configured
namespace, validates every spec with the rules of a `workloads` entry in the config
file, adds, replaces or removes the workload in the running daemon, and reports the
outcome in the resource's `status` subresource.

- A spec that fails validation, or that names a workload or target that the config file
  or another ScalingPolicy already scales, gets `Ready=False` (reason `InvalidSpec` or
  `Conflict`) and scales nothing. It never stops the daemon or another workload.
- Status is written with a JSON merge patch only when the computed status differs from
  the one stored on the server, so a steady workload costs no write per tick. Only the
  leader writes when leader election is on.
- The watch starts from a list. When it ends it resumes from the last resourceVersion.
  On 410 Gone, or on any other error, the controller lists again and reconciles
  additions and deletions missed in between.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import watch as k8s_watch
from kubernetes_asyncio.client.exceptions import ApiException
from pydantic import ValidationError

from runtime.config import AppConfig, BudgetConfig, BudgetTier, WorkloadConfig, _describe
from runtime.daemon import Daemon
from runtime.model import Decision, Reason
from runtime.traces import TraceError

log = structlog.get_logger("agent_autoscaler.policies")

GROUP = "scaling.agent-autoscaler.io"
VERSION = "v1alpha1"
PLURAL = "scalingpolicies"

# Source fields that make the daemon read a secret. A ScalingPolicy may not set them,
# because any user allowed to create one could otherwise make the daemon send its own
# files or environment (such as its service account token) to a URL of that user's choice.
CREDENTIAL_FIELDS = (
    "bearer_token_file", "bearer_token_env", "basic_auth_password_file", "basic_auth_password_env",
    "sasl_password_file", "sasl_password_env",
)

LIMITING_REASONS = {
    Reason.SCALE_UP_LIMITED: "ScaleUpLimited",
    Reason.SCALE_DOWN_LIMITED: "ScaleDownLimited",
    Reason.AT_MIN_REPLICAS: "TooFewReplicas",
    Reason.AT_MAX_REPLICAS: "TooManyReplicas",
}
BUDGET_REASONS = {Reason.BUDGET_LIMITED: "BudgetTier", Reason.BUDGET_CEILING: "BudgetCeiling"}


class PolicySpecError(ValueError):
    """Raised with every problem of one ScalingPolicy spec, each with its key path, value and fix."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


def _rfc3339(unix_seconds: float) -> str:
    return dt.datetime.fromtimestamp(unix_seconds, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _spec_problems(error: ValidationError) -> list[str]:
    """Format WorkloadConfig errors like ConfigError does, with key paths as they are in the resource."""
    problems = []
    for item in error.errors():
        location = tuple(item["loc"])
        if location[:1] == ("name",):
            location = ("metadata", "name", *location[1:])
        else:
            location = ("spec", *location)
        problems.append(_describe({**item, "loc": location}))
    return problems


def _tier_problems(error: ValidationError) -> list[str]:
    """Format BudgetConfig errors about overriding tiers with the path spec.budget_tiers."""
    problems = []
    for item in error.errors():
        location = tuple(item["loc"])
        if location[:1] == ("tiers",):
            location = location[1:]
        problems.append(_describe({**item, "loc": ("spec", "budget_tiers", *location)}))
    return problems


def workload_from_policy(resource: dict[str, Any], config: AppConfig) -> tuple[WorkloadConfig, tuple[BudgetTier, ...] | None]:
    """Validate a ScalingPolicy with the config file's rules; return its workload and budget tier overrides.

    The workload is named after the resource, and its target lives in the resource's own
    namespace. Raises PolicySpecError naming every problem.
    """
    metadata = resource.get("metadata", {})
    namespace = metadata.get("namespace", "")
    spec = dict(resource.get("spec") or {})
    tiers = spec.pop("budget_tiers", None)
    problems: list[str] = []

    target = dict(spec.get("target") or {})
    if target.get("namespace", namespace) != namespace:
        problems.append(
            f"spec.target.namespace: {target['namespace']!r} differs from the ScalingPolicy's namespace {namespace!r}; "
            f"remove the field or create the ScalingPolicy in namespace {target['namespace']!r}"
        )
    target["namespace"] = namespace
    spec["target"] = target

    for index, signal in enumerate(spec.get("signals") or []):
        source = signal.get("source") if isinstance(signal, dict) else None
        for key in CREDENTIAL_FIELDS:
            if isinstance(source, dict) and key in source:
                problems.append(
                    f"spec.signals.{index}.source.{key}: credentials are not accepted from a ScalingPolicy (got {source[key]!r}); "
                    "define this workload in the config file instead"
                )

    workload: WorkloadConfig | None = None
    try:
        workload = WorkloadConfig.model_validate({**spec, "name": metadata.get("name", "")})
    except ValidationError as exc:
        problems.extend(_spec_problems(exc))

    overrides: tuple[BudgetTier, ...] | None = None
    if workload is not None:
        budget = config.budgets.get(workload.budget)
        if budget is None:
            problems.append(
                f"spec.budget: budget {workload.budget!r} is not defined in the config file; "
                f"define it under budgets or use one of {sorted(config.budgets)}"
            )
        elif tiers is not None:
            # The budget's own rules (ordering, last threshold 0, max_spot_ratio) apply to the overrides.
            try:
                overrides = BudgetConfig.model_validate({**budget.model_dump(), "tiers": tiers}).tiers
            except ValidationError as exc:
                problems.extend(_tier_problems(exc))
    if problems:
        raise PolicySpecError(problems)
    assert workload is not None
    return workload, overrides


def _target_key(workload: WorkloadConfig) -> tuple[str, str, str, str]:
    """Identify the scaled object by API group, kind, namespace and name; the version does not matter."""
    target = workload.target
    return target.api_version.rpartition("/")[0], target.kind, target.namespace, target.name


@dataclass
class PolicyState:
    """Controller state of one ScalingPolicy resource."""

    namespace: str
    name: str
    uid: str
    generation: int
    resource: dict[str, Any]
    observed_status: dict[str, Any]
    phase: str = "Pending"
    # (reason, message) of Ready=False for phases Invalid and Conflict.
    problem: tuple[str, str] | None = None
    workload: WorkloadConfig | None = None
    last_decision: Decision | None = None
    # Time of the last decision that changed desiredReplicas or the reason. A time per
    # decision would change the status, and cost a write, on every tick.
    last_decision_time: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.namespace, self.name

    @property
    def identity(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class PolicyCounters:
    """Status writes and failures by reason; tests read them."""

    status_writes: int = 0
    errors: Counter = field(default_factory=Counter)


class ScalingPolicyController:
    """Keeps the daemon's workloads in step with the ScalingPolicy resources of some namespaces."""

    def __init__(
        self,
        daemon: Daemon,
        api_client: Callable[[], Awaitable[k8s.ApiClient]],
        namespaces: tuple[str, ...] | list[str],
        watch_timeout_seconds: int = 300,
        retry_max_seconds: float = 60.0,
        request_timeout_seconds: float | None = None,
        field_manager: str | None = None,
    ) -> None:
        settings = daemon.config.daemon.kubernetes
        self.daemon = daemon
        self.api_client = api_client
        self.namespaces = tuple(namespaces)
        self.watch_timeout_seconds = watch_timeout_seconds
        self.retry_max_seconds = retry_max_seconds
        self.request_timeout_seconds = request_timeout_seconds or settings.request_timeout_seconds
        self.field_manager = field_manager or settings.field_manager
        self.policies: dict[tuple[str, str], PolicyState] = {}
        # Accepted policies by workload name, for the decision listener.
        self.by_workload: dict[str, PolicyState] = {}
        self.counters = PolicyCounters()
        self.file_names = {workload.name for workload in daemon.config.workloads}
        self.file_targets = {_target_key(workload): workload.name for workload in daemon.config.workloads}
        self.dirty: set[tuple[str, str]] = set()
        self.wake = asyncio.Event()
        # Serializes changes to the daemon's workloads, which the namespace watches make concurrently.
        self.lock = asyncio.Lock()
        daemon.decision_listeners.append(self.on_decision)

    async def run(self) -> None:
        """Watch every namespace and write status until cancelled; every error is logged and retried, never raised."""
        log.info("scaling policy watch started", namespaces=list(self.namespaces))
        tasks = [asyncio.create_task(self.watch_namespace(namespace)) for namespace in self.namespaces]
        tasks.append(asyncio.create_task(self.status_writer()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # Watch --------------------------------------------------------------------------------

    async def watch_namespace(self, namespace: str, resource_version: str | None = None) -> None:
        """List, then watch from the list's resourceVersion; list again after 410 Gone or an error.

        `resource_version` starts the first watch without a list, from that version.
        """
        delay = 1.0
        while True:
            try:
                if resource_version is None:
                    resource_version = await self.relist(namespace)
                delay = 1.0
                resource_version = await self.watch_once(namespace, resource_version)
            except ApiException as exc:
                resource_version = None
                if exc.status == 410:
                    log.info("scaling policy watch expired; listing again", namespace=namespace, reason="gone")
                    continue
                message = str(exc.reason)
                if exc.status == 403:
                    message += (
                        f"; the daemon's service account may not list and watch scalingpolicies in {namespace!r}. "
                        f"Bind the ClusterRole there (a RoleBinding in {namespace!r} to the agent-autoscaler ClusterRole, "
                        "as `agent-autoscaler manifests --target-namespace` renders) or remove the namespace from "
                        "daemon.kubernetes.scaling_policy_namespaces"
                    )
                self._watch_failed(namespace, f"http_{exc.status}", message, delay)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                resource_version = None
                self._watch_failed(namespace, type(exc).__name__, str(exc) or repr(exc), delay)
            except Exception as exc:  # a defect handling one resource must not stop the daemon or other workloads
                resource_version = None
                self._watch_failed(namespace, f"defect_{type(exc).__name__}", repr(exc), delay)
            else:
                continue
            await asyncio.sleep(delay)
            delay = min(2 * delay, self.retry_max_seconds)

    def _watch_failed(self, namespace: str, reason: str, message: str, retry_seconds: float) -> None:
        self.counters.errors[reason] += 1
        log.error(
            "scaling policy watch failed; listing again", namespace=namespace, reason=reason, error=message,
            retry_seconds=retry_seconds, occurrences=self.counters.errors[reason],
        )

    async def relist(self, namespace: str) -> str:
        """Reconcile with a full list of the namespace and return the list's resourceVersion."""
        api = k8s.CustomObjectsApi(await self.api_client())
        listing = await api.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, _request_timeout=self.request_timeout_seconds)
        present = set()
        for item in listing.get("items", []):
            present.add((namespace, item["metadata"]["name"]))
            await self.upsert(item)
        for key in [key for key in self.policies if key[0] == namespace and key not in present]:
            await self.delete(key)
        return listing["metadata"]["resourceVersion"]

    async def watch_once(self, namespace: str, resource_version: str) -> str:
        """Apply watch events until the server ends the watch; return the last resourceVersion seen."""
        api = k8s.CustomObjectsApi(await self.api_client())
        watcher = k8s_watch.Watch()
        async with watcher:
            stream = watcher.stream(
                api.list_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL,
                resource_version=resource_version, allow_watch_bookmarks=True,
                timeout_seconds=self.watch_timeout_seconds,
                _request_timeout=self.watch_timeout_seconds + self.request_timeout_seconds,
            )
            async for event in stream:
                kind = event["type"]
                resource = event["raw_object"]
                if kind in ("ADDED", "MODIFIED"):
                    await self.upsert(resource)
                elif kind == "DELETED":
                    await self.delete((namespace, resource["metadata"]["name"]), resource["metadata"].get("uid"))
        return watcher.resource_version or resource_version

    # Reconciliation -----------------------------------------------------------------------

    async def upsert(self, resource: dict[str, Any]) -> None:
        metadata = resource["metadata"]
        key = (metadata["namespace"], metadata["name"])
        generation = int(metadata.get("generation", 0))
        async with self.lock:
            state = self.policies.get(key)
            if state is not None and state.uid != metadata["uid"]:
                # Deleted and created again between two lists.
                await self._deactivate(state)
                state = None
            if state is not None and state.generation == generation:
                # Only status or metadata changed, for example by this controller's own write.
                state.resource = resource
                state.observed_status = resource.get("status") or {}
                self._mark(key)
                return
            if state is None:
                state = PolicyState(key[0], key[1], metadata["uid"], generation, resource, resource.get("status") or {})
                self.policies[key] = state
            else:
                await self._deactivate(state)
                state.generation = generation
                state.resource = resource
                state.observed_status = resource.get("status") or {}
            await self._activate(state)

    async def delete(self, key: tuple[str, str], uid: str | None = None) -> None:
        async with self.lock:
            state = self.policies.get(key)
            if state is None or (uid is not None and state.uid != uid):
                return
            del self.policies[key]
            self.dirty.discard(key)
            await self._deactivate(state)
            log.info("scaling policy deleted", namespace=state.namespace, policy=state.name, workload=state.name, reason="deleted")
            # A policy that lost a conflict to this one may be accepted now.
            for other in list(self.policies.values()):
                if other.phase == "Conflict":
                    await self._activate(other)

    async def _deactivate(self, state: PolicyState) -> None:
        if state.workload is not None:
            self.by_workload.pop(state.workload.name, None)
            await self.daemon.remove_workload(state.workload.name)
            state.workload = None
        state.last_decision = None

    async def _activate(self, state: PolicyState) -> None:
        """Validate the spec, check conflicts and add the workload; set the phase either way."""
        try:
            workload, tiers = workload_from_policy(state.resource, self.daemon.config)
        except PolicySpecError as exc:
            self._reject(state, "Invalid", "InvalidSpec", f"invalid spec, so nothing is scaled: {exc}", exc.problems)
            return
        conflict = self._conflict(state, workload)
        if conflict is not None:
            self._reject(state, "Conflict", "Conflict", conflict, [conflict])
            return
        try:
            self.daemon.add_workload(workload, tiers)
        except (TraceError, ValueError) as exc:
            self._reject(state, "Invalid", "InvalidSpec", f"invalid spec, so nothing is scaled: {exc}", [str(exc)])
            return
        except Exception as exc:  # a source that fails to start affects this policy only
            self._reject(state, "Invalid", "SourceFailed", f"a signal source failed to start, so nothing is scaled: {exc!r}", [repr(exc)])
            return
        # NOTE: a spec change replaces the runtime, so planner state and load history start over,
        # and the daemon's state file does not restore workloads that come from ScalingPolicy resources.
        state.workload = workload
        self.by_workload[workload.name] = state
        state.phase = "Pending"
        state.problem = None
        log.info("scaling policy accepted", namespace=state.namespace, policy=state.name, workload=workload.name,
                 generation=state.generation, target=workload.target.model_dump(), reason="accepted")
        self._mark(state.key)

    def _reject(self, state: PolicyState, phase: str, reason: str, message: str, problems: list[str]) -> None:
        state.phase = phase
        state.problem = (reason, message)
        state.workload = None
        self.counters.errors[reason] += 1
        log.error("scaling policy rejected", namespace=state.namespace, policy=state.name, workload=state.name,
                  generation=state.generation, reason=reason, problems=problems)
        self._mark(state.key)

    def _conflict(self, state: PolicyState, workload: WorkloadConfig) -> str | None:
        """Describe why another definition owns this workload's name or target, or return None."""
        if workload.name in self.file_names:
            return f"workload {workload.name!r} is also defined in the config file, which takes precedence; rename the ScalingPolicy or remove the file entry"
        owner = self.file_targets.get(_target_key(workload))
        if owner is not None:
            return (f"target {workload.target.kind}/{workload.target.name} is already scaled by workload {owner!r} from the config file, "
                    "which takes precedence; point spec.target elsewhere or remove the file entry")
        for other in self.policies.values():
            if other is state or other.workload is None:
                continue
            # NOTE: the policy accepted first keeps the workload; which one that is depends on watch order.
            if other.workload.name == workload.name:
                return f"ScalingPolicy {other.identity} already defines workload {workload.name!r}; workload names are unique across namespaces, so rename one"
            if _target_key(other.workload) == _target_key(workload):
                return f"target {workload.target.kind}/{workload.target.name} is already scaled by ScalingPolicy {other.identity}; delete one of the two"
        return None

    # Status -------------------------------------------------------------------------------

    def on_decision(self, decision: Decision) -> None:
        state = self.by_workload.get(decision.workload)
        if state is None:
            return
        previous = state.last_decision
        if previous is None or previous.final_replicas != decision.final_replicas or previous.reason != decision.reason:
            state.last_decision_time = _rfc3339(decision.timestamp)
        state.last_decision = decision
        self._mark(state.key)

    def _mark(self, key: tuple[str, str]) -> None:
        self.dirty.add(key)
        self.wake.set()

    def desired_status(self, state: PolicyState) -> dict[str, Any]:
        """Compute the status the resource should show; unchanged conditions keep their lastTransitionTime."""
        status: dict[str, Any] = {"observedGeneration": state.generation}
        conditions: list[tuple[str, str, str, str]] = []  # (type, status, reason, message)
        decision = state.last_decision
        if state.problem is not None:
            status["phase"] = state.phase
            conditions.append(("Ready", "False", *state.problem))
        elif decision is None:
            status["phase"] = "Pending"
            conditions.append(("Ready", "Unknown", "AwaitingDecision", "the workload is configured and waits for its first decision"))
        else:
            status.update({
                "phase": "Active",
                "currentReplicas": decision.current_replicas,
                "desiredReplicas": decision.final_replicas,
                "lastDecisionTime": state.last_decision_time,
                "lastDecisionReason": decision.reason.value,
            })
            conditions.extend(self._decision_conditions(state, decision))
        status["conditions"] = self._with_transition_times(state, conditions)
        return status

    def _decision_conditions(self, state: PolicyState, decision: Decision) -> list[tuple[str, str, str, str]]:
        target_problem = getattr(self.daemon.actuator, "target_problem", None)
        problem = target_problem(decision.workload) if target_problem is not None else None
        if problem is not None:
            ready = ("Ready", "False", *problem)
        else:
            ready = ("Ready", "True", "Scaling", f"decisions are applied to {decision.workload}")
        if decision.reason in LIMITING_REASONS:
            limited = ("ScalingLimited", "True", LIMITING_REASONS[decision.reason],
                       f"the desired count was limited to {decision.final_replicas} replicas ({decision.reason.value})")
        else:
            limited = ("ScalingLimited", "False", "DesiredWithinRange", "the desired count is within the bounds and rate limits")
        if decision.reason in BUDGET_REASONS or decision.budget_replicas < decision.clamped_replicas:
            budget = ("BudgetLimited", "True", BUDGET_REASONS.get(decision.reason, "BudgetTier"),
                      f"budget tier {decision.budget_tier} lowered the count from {decision.clamped_replicas} to {decision.budget_replicas} replicas")
        else:
            budget = ("BudgetLimited", "False", "WithinBudget", f"budget tier {decision.budget_tier} does not lower the count")
        if decision.invalid_signals:
            source = ("SourceUnavailable", "True", "SignalUnknown",
                      f"no usable sample of signals {sorted(decision.invalid_signals)}; the last safe count is held")
        else:
            source = ("SourceUnavailable", "False", "SignalsAvailable", "every signal has a usable sample")
        return [ready, limited, budget, source]

    def _with_transition_times(self, state: PolicyState, conditions: list[tuple[str, str, str, str]]) -> list[dict[str, Any]]:
        previous = {item.get("type"): item for item in state.observed_status.get("conditions") or []}
        now = _rfc3339(self.daemon.clock())
        result = []
        for kind, status, reason, message in conditions:
            old = previous.get(kind)
            changed = old is None or old.get("status") != status
            result.append({
                "type": kind, "status": status, "reason": reason, "message": message,
                "lastTransitionTime": now if changed else old.get("lastTransitionTime", now),
                "observedGeneration": state.generation,
            })
        return result

    def _may_write(self) -> bool:
        # The kubernetes actuator sets this flag to False while another process holds the Lease.
        return bool(getattr(self.daemon.actuator, "writes_enabled", True))

    async def status_writer(self) -> None:
        """Write the status of every marked policy whose computed status differs from the stored one."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            if not self._may_write():
                continue  # the leader writes; the marks stay for when this process leads
            keys, self.dirty = self.dirty, set()
            for key in keys:
                state = self.policies.get(key)
                if state is None:
                    continue
                try:
                    await self.write_status(state)
                except Exception as exc:  # a defect for one policy must not stop the writer for the others
                    self.counters.errors["status_defect"] += 1
                    log.error("scaling policy status write failed", namespace=state.namespace, policy=state.name, workload=state.name,
                              reason=f"defect_{type(exc).__name__}", error=repr(exc))

    async def write_status(self, state: PolicyState) -> bool:
        """Patch the status subresource when it would change; return whether a write succeeded."""
        desired = self.desired_status(state)
        observed = state.observed_status
        if all(observed.get(name) == value for name, value in desired.items()) and set(observed) <= set(desired):
            return False

        # A merge patch removes a field only when it is sent as null.
        body = {"status": {**{name: None for name in observed if name not in desired}, **desired}}
        api = k8s.CustomObjectsApi(await self.api_client())
        ready = desired["conditions"][0]
        try:
            updated = await api.patch_namespaced_custom_object_status(
                GROUP, VERSION, state.namespace, PLURAL, state.name, body,
                field_manager=self.field_manager, _content_type="application/merge-patch+json",
                _request_timeout=self.request_timeout_seconds,
            )
        except (ApiException, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            reason = f"http_{exc.status}" if isinstance(exc, ApiException) else type(exc).__name__
            self.counters.errors[f"status_{reason}"] += 1
            log.error("scaling policy status write failed", namespace=state.namespace, policy=state.name, workload=state.name,
                      reason=reason, error=str(getattr(exc, "reason", "") or exc), occurrences=self.counters.errors[f"status_{reason}"])
            if not (isinstance(exc, ApiException) and exc.status == 404):
                self.dirty.add(state.key)  # retried at the next decision or watch event
            return False

        self.counters.status_writes += 1
        # Keep the stored status unless a newer watch event has already replaced the state.
        if self.policies.get(state.key) is state:
            state.observed_status = updated.get("status") or {}
        log.info("scaling policy status written", namespace=state.namespace, policy=state.name, workload=state.name,
                 phase=desired["phase"], reason=ready["reason"], observed_generation=state.generation,
                 desired_replicas=desired.get("desiredReplicas"))
        return True
