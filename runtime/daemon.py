"""The daemon: asyncio services around the pure evaluation core.

Services, each one task owned by `run_daemon`:
- signal sources push observations into per-workload runtimes (and may trigger an
  immediate evaluation, for example on a lag event);
- the ticker evaluates every workload each `tick_seconds`;
- one trigger task per workload evaluates at once when an event arrives, debounced;
- the fitter runs forecaster fits in a process pool and cheap updates in a thread;
- the snapshotter writes per-workload state and budget ledgers to `state_file`;
- the metrics server serves /metrics.

A crash of any core task stops the daemon with exit code 1; SIGTERM and SIGINT stop
it cleanly with exit code 0 after a final snapshot.
"""

from __future__ import annotations

import abc
import asyncio
import json
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from pathlib import Path

import numpy as np
import structlog

from actuators.base import Actuator, ReplicaStatus
from actuators.log import LogActuator
from actuators.simulated import SimulatedActuator
from forecasters import fit_job
from runtime.budget import BudgetLedger
from runtime.config import (
    AppConfig, BudgetTier, KafkaEventsSourceConfig, KafkaLagSourceConfig, PrometheusSourceConfig, TraceSourceConfig, WorkloadConfig,
)
from runtime.evaluator import WorkloadRuntime
from runtime.logs import configure_logging
from runtime.metrics import DaemonMetrics, SourceCollector
from runtime.model import Decision, Observation
from runtime.simulate import observed_load_with_centres
from runtime.credentials import SecretError
from runtime.traces import TraceError, load_trace

log = structlog.get_logger("agent_autoscaler")

ObservationSink = Callable[[str, str, Observation, bool], None]


class SignalSource(abc.ABC):
    """A producer of observations for one or more (workload, signal) pairs.

    `run` loops until cancelled and handles its own transient errors: it reports an
    unknown observation (never zero) and retries. It raises only for defects, which
    stop the daemon.
    """

    name = "source"

    async def load_history(self, sink_history: Callable[[str, np.ndarray, np.ndarray], None]) -> None:
        """Load past samples of load signals so that forecasters are trained at start."""
        return None

    @abc.abstractmethod
    async def run(self, sink: ObservationSink) -> None:
        ...


class TraceReplaySource(SignalSource):
    """Replays a CSV trace on the wall clock, starting after a warm-up loaded as history."""

    name = "trace"

    def __init__(self, workload: str, signal_name: str, config: TraceSourceConfig, tick_seconds: float, clock: Callable[[], float] = time.time):
        self.workload = workload
        self.signal = signal_name
        self.config = config
        self.tick_seconds = tick_seconds
        self.clock = clock
        self.trace = load_trace(config.path)
        self.warmup = min(7 * 86400.0, 0.4 * self.trace.duration_seconds)
        self.started_at = clock()

    def trace_time(self, now: float) -> float:
        elapsed = (now - self.started_at) * self.config.speedup_ratio
        span = self.trace.duration_seconds - self.warmup
        return self.trace.start + self.warmup + (elapsed % span)

    async def load_history(self, sink_history: Callable[[str, np.ndarray, np.ndarray], None]) -> None:
        # Past samples are shifted onto wall-clock time so that they end at start-up.
        trace_times = np.arange(self.trace.start, self.trace.start + self.warmup, self.tick_seconds)
        if trace_times.size == 0:
            return
        values, centres = observed_load_with_centres(self.trace, trace_times, max(self.tick_seconds, self.trace.interval_seconds))
        shift = self.started_at - (self.trace.start + self.warmup)
        sink_history(self.workload, centres + shift, values)

    async def run(self, sink: ObservationSink) -> None:
        window = max(self.tick_seconds, self.trace.interval_seconds) * self.config.speedup_ratio
        while True:
            now = self.clock()
            position = self.trace_time(now)
            values, centres = observed_load_with_centres(self.trace, np.array([position]), window)
            # The sample describes the trace intervals it averages, mapped back to wall-clock time.
            sample_time = now - (position - float(centres[0])) / self.config.speedup_ratio
            sink(self.workload, self.signal, Observation.checked(float(values[0]), now, sample_time=sample_time), False)
            await asyncio.sleep(min(self.tick_seconds, self.trace.interval_seconds / self.config.speedup_ratio))


def build_sources(config: AppConfig) -> list[SignalSource]:
    # Imported here because those modules subclass SignalSource from this one.
    from runtime.kafka_sources import KafkaEventsSource, KafkaLagSource
    from runtime.lag_events import EventRoute
    from runtime.prometheus_source import PrometheusSource

    sources: list[SignalSource] = []
    # Signals of one workload with equal kafka_lag settings share one connection.
    lag_signals: dict[tuple[str, KafkaLagSourceConfig], list[tuple[str, str]]] = {}
    # Signals reading the same events topic in the same group share one consumer.
    event_consumers: dict[tuple[object, ...], tuple[KafkaEventsSourceConfig, list[EventRoute]]] = {}
    for workload in config.workloads:
        for signal_config in workload.signals:
            source = signal_config.source
            if isinstance(source, TraceSourceConfig):
                sources.append(TraceReplaySource(workload.name, signal_config.name, source, config.daemon.tick_seconds))
            elif isinstance(source, PrometheusSourceConfig):
                sources.append(PrometheusSource(workload.name, signal_config.name, source, signal_config.stale_after_seconds, signal_config.role == "load"))
            elif isinstance(source, KafkaLagSourceConfig):
                lag_signals.setdefault((workload.name, source), []).append((signal_config.name, signal_config.role))
            elif isinstance(source, KafkaEventsSourceConfig):
                # Two consumers in one group would split the topic's partitions, so the key
                # is the connection, topic and group only.
                key = tuple(source.model_dump(exclude={"match_group", "match_topic", "max_event_bytes", "max_future_seconds", "max_age_seconds"}).items())
                route = EventRoute(workload.name, signal_config.name, source.match_group, source.match_topic)
                # NOTE: the first signal's size and timestamp limits apply to the whole shared consumer.
                event_consumers.setdefault(key, (source, []))[1].append(route)
    for (workload_name, lag_config), signals in lag_signals.items():
        sources.append(KafkaLagSource(workload_name, lag_config, signals))
    for events_config, routes in event_consumers.values():
        sources.append(KafkaEventsSource(events_config, routes))
    return sources


def build_actuator(config: AppConfig) -> Actuator:
    if config.daemon.actuator == "simulated":
        leads = {workload.name: float(workload.startup_lead_seconds) for workload in config.workloads}
        initial = {workload.name: workload.min_replicas for workload in config.workloads}
        return SimulatedActuator(leads, config.daemon.simulated.spot_preemptions_per_hour_ratio, config.daemon.simulated.seed, initial)
    if config.daemon.actuator == "kubernetes":
        from actuators.kubernetes import KubernetesActuator

        return KubernetesActuator(config)
    return LogActuator()


class WorkloadNotFoundError(KeyError):
    """Raised by `Daemon.evaluate` for a workload that is not (or no longer) configured."""


class Daemon:
    """Holds the per-workload runtimes, budget ledgers and the actuator; the services drive it."""

    def __init__(
        self,
        config: AppConfig,
        actuator: Actuator | None = None,
        sources: list[SignalSource] | None = None,
        clock: Callable[[], float] = time.time,
        metrics: DaemonMetrics | None = None,
        fit_executor: Executor | None = None,
    ):
        self.config = config
        self.clock = clock
        self.runtimes: dict[str, WorkloadRuntime] = {workload.name: WorkloadRuntime.create(workload) for workload in config.workloads}
        self.ledgers = {name: BudgetLedger(name, budget) for name, budget in config.budgets.items()}
        self.actuator = actuator or build_actuator(config)
        self.sources = sources if sources is not None else build_sources(config)
        self.metrics = metrics or DaemonMetrics()
        self.metrics.registry.register(SourceCollector(lambda: self.sources))
        self.fit_executor = fit_executor
        self.triggers: dict[str, asyncio.Event] = {}
        self.trigger_times: dict[str, float] = {}
        self.last_accrual: dict[str, float] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.decision_listeners: list[Callable[[Decision], None]] = []
        # Tasks (trigger loop and sources) of each workload added by add_workload while running.
        self.added_tasks: dict[str, list[asyncio.Task]] = {}

    # Sinks the sources call ------------------------------------------------------------

    def submit_observation(self, workload: str, signal_name: str, observation: Observation, urgent: bool = False) -> None:
        runtime = self.runtimes.get(workload)
        if runtime is None:
            self.metrics.errors.labels("source", "unknown_workload").inc()
            return
        runtime.observe(signal_name, observation)
        if urgent:
            self.trigger_times.setdefault(workload, time.perf_counter())
            event = self.triggers.get(workload)
            if event is not None:
                event.set()

    def submit_history(self, workload: str, timestamps: np.ndarray, values: np.ndarray) -> None:
        runtime = self.runtimes.get(workload)
        if runtime is not None:
            runtime.history.extend(timestamps, values)

    # Evaluation --------------------------------------------------------------------------

    async def evaluate(self, name: str) -> Decision:
        """Evaluate one workload now, apply the decision and account for its cost."""
        lock = self.locks.setdefault(name, asyncio.Lock())
        async with lock:
            started = time.perf_counter()
            triggered = self.trigger_times.pop(name, None)
            runtime = self.runtimes.get(name)
            if runtime is None:
                raise WorkloadNotFoundError(name)
            now = self.clock()
            ledger = self.ledgers[runtime.config.budget]
            status = await self._status(name, now)
            previous_decision = runtime.last_decision
            previous_accrual = self.last_accrual.get(name)
            if previous_accrual is not None and now > previous_accrual and previous_decision is not None:
                # Bill what ran since the last evaluation, at the mix the previous decision set.
                provisioned = status.provisioned if status else previous_decision.final_replicas
                ratio = previous_decision.spot_replicas / previous_decision.final_replicas if previous_decision.final_replicas else 0.0
                spot = int(round(provisioned * ratio))
                ledger.accrue(name, provisioned - spot, spot, now - previous_accrual, now)
            self.last_accrual[name] = now
            budget = ledger.state_for(name, now)
            previous_state = runtime.state
            decision = runtime.decide(budget, now, current_replicas=status.requested if status else None)
            applied = await self._apply(decision, now)
            # A write the actuator could not confirm (an API error, a dry run) changed nothing,
            # so it must not count against the rate policies of the next decisions.
            confirmed = applied is not None and applied.requested == decision.final_replicas
            if not confirmed:
                runtime.state.scale_up_events = [item for item in previous_state.scale_up_events]
                runtime.state.scale_down_events = [item for item in previous_state.scale_down_events]
            elapsed = time.perf_counter() - (triggered if triggered is not None else started)
            self.metrics.decision_latency.observe(elapsed)
            self.metrics.record_decision(decision)
            self.metrics.budget_remaining.labels(ledger.name).set(ledger.remaining_ratio(now))
            self.metrics.budget_hourly_cost.labels(ledger.name).set(ledger.hourly_rate())
            log.info(
                "decision", triggered_by="event" if triggered is not None else "tick", latency_seconds=round(elapsed, 6),
                applied=confirmed, current_replicas_known=status is not None, **decision.as_log_fields(),
            )
            for listener in self.decision_listeners:
                listener(decision)
            return decision

    async def _status(self, name: str, now: float) -> ReplicaStatus | None:
        try:
            return await self.actuator.status(name, now)
        except Exception as exc:  # an actuator defect must not stop other workloads
            self.metrics.errors.labels("actuator", type(exc).__name__).inc()
            log.error("actuator status failed", workload=name, error=str(exc), error_type=type(exc).__name__)
            return None

    async def _apply(self, decision: Decision, now: float) -> ReplicaStatus | None:
        try:
            return await self.actuator.apply(decision, now)
        except Exception as exc:  # logged and counted; the next tick retries
            self.metrics.errors.labels("actuator", type(exc).__name__).inc()
            log.error("actuator apply failed", workload=decision.workload, error=str(exc), error_type=type(exc).__name__)
            return None

    async def evaluate_all(self) -> None:
        # A copy, because add_workload and remove_workload change the dict between awaits.
        for name in list(self.runtimes):
            try:
                await self.evaluate(name)
            except WorkloadNotFoundError:
                continue  # removed while this round ran

    # Services ----------------------------------------------------------------------------

    async def ticker(self) -> None:
        tick = self.config.daemon.tick_seconds
        while True:
            await self.evaluate_all()
            await asyncio.sleep(tick)

    async def trigger_loop(self, name: str) -> None:
        event = self.triggers.setdefault(name, asyncio.Event())
        debounce = self.config.daemon.event_debounce_seconds
        while True:
            await event.wait()
            # Let a burst of events settle so that it becomes one decision.
            if debounce > 0:
                await asyncio.sleep(debounce)
            event.clear()
            await self.evaluate(name)

    async def fitter(self, poll_seconds: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        while True:
            now = self.clock()
            for runtime in list(self.runtimes.values()):
                if runtime.fit_due(now):
                    request = runtime.fit_request(now)
                    if request is None:
                        continue
                    runtime.fit_in_progress = True
                    try:
                        outcome = await loop.run_in_executor(
                            self.fit_executor, fit_job, request.requested, request.history, request.season,
                            request.upper_quantile_ratio, request.end_index, request.horizon,
                        )
                    except Exception as exc:  # a broken worker process; retry at the next update interval
                        runtime.fit_in_progress = False
                        runtime.next_refit_at = now + runtime.config.forecaster.update_interval_seconds
                        self.metrics.errors.labels("forecaster", type(exc).__name__).inc()
                        log.error("forecaster fit failed", workload=runtime.name, error=str(exc), error_type=type(exc).__name__)
                        continue
                    runtime.apply_fit(outcome, self.clock())
                    model = outcome.model.name if outcome.model else "none"
                    self.metrics.fits.labels(runtime.name, model).inc()
                    log.info(
                        "forecaster fitted", workload=runtime.name, requested=outcome.requested, model=model,
                        backtest_mase=outcome.scores, fit_warnings=outcome.warnings[:5], fallback_reason=outcome.fallback_reason,
                        history_points=len(request.history),
                    )
                if runtime.update_due(self.clock()):
                    # NOTE: updates run in a thread and hold the GIL for most of their ~10 ms. With
                    # thousands of workloads they belong in the fit process pool instead.
                    await asyncio.to_thread(runtime.update_forecast, self.clock())
            await asyncio.sleep(poll_seconds)

    # Workloads added and removed while running -------------------------------------------

    def add_workload(self, workload: WorkloadConfig, budget_tiers: tuple[BudgetTier, ...] | None = None) -> None:
        """Start scaling a workload that is not in the config file: its runtime, sources and trigger task.

        `budget_tiers` replaces the tiers of the workload's budget for this workload only.
        Raises ValueError for a taken name or an undefined budget, and TraceError for an
        unreadable trace; nothing is added then. Must run inside the event loop.
        """
        name = workload.name
        if name in self.runtimes:
            raise ValueError(f"workload {name!r} already exists; choose another name")
        ledger = self.ledgers.get(workload.budget)
        if ledger is None:
            raise ValueError(f"budget {workload.budget!r} is not defined; use one of {sorted(self.ledgers)}")
        # build_sources reads only `workloads` and `daemon`, so a copy with this one workload suffices.
        # NOTE: a kafka_events signal here gets its own consumer; one in the same group as a
        # file workload's consumer splits the topic's partitions with it.
        sources = build_sources(self.config.model_copy(update={"workloads": (workload,)}))
        self.runtimes[name] = WorkloadRuntime.create(workload)
        if budget_tiers is not None:
            ledger.tiers_by_workload[name] = budget_tiers
        self.actuator.add_workload(workload)
        self.triggers[name] = asyncio.Event()
        tasks = [asyncio.create_task(self.trigger_loop(name), name=f"trigger:{name}")]
        for source in sources:
            tasks.append(asyncio.create_task(self._run_added_source(source), name=f"source:{source.name}:{name}"))
        for task in tasks:
            task.add_done_callback(lambda done, workload=name: self._added_task_done(workload, done))
        self.added_tasks[name] = tasks
        log.info("workload added", workload=name, target=workload.target.model_dump(), sources=len(sources))

    async def _run_added_source(self, source: SignalSource) -> None:
        await source.load_history(self.submit_history)
        await source.run(self.submit_observation)

    def _added_task_done(self, workload: str, task: asyncio.Task) -> None:
        # Unlike the tasks of file workloads, these do not stop the daemon: other workloads keep running.
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:
            self.metrics.errors.labels("workload_task", type(error).__name__).inc()
            log.error("workload task stopped", workload=workload, task=task.get_name(), error=repr(error))

    async def remove_workload(self, name: str) -> bool:
        """Stop a workload added by add_workload and drop its state; return False for any other name."""
        tasks = self.added_tasks.pop(name, None)
        if tasks is None:
            return False
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Wait for an evaluation in progress, so that no decision for the workload follows its removal.
        async with self.locks.setdefault(name, asyncio.Lock()):
            runtime = self.runtimes.pop(name, None)
            self.triggers.pop(name, None)
            self.trigger_times.pop(name, None)
            self.last_accrual.pop(name, None)
            if runtime is not None:
                ledger = self.ledgers.get(runtime.config.budget)
                if ledger is not None:
                    ledger.hourly_rate_by_workload.pop(name, None)
                    ledger.tiers_by_workload.pop(name, None)
            self.actuator.remove_workload(name)
        self.locks.pop(name, None)
        log.info("workload removed", workload=name)
        return True

    async def remove_added_workloads(self) -> None:
        for name in list(self.added_tasks):
            await self.remove_workload(name)

    def snapshot(self) -> dict[str, object]:
        return {
            "version": 1,
            "written_at": self.clock(),
            "workloads": {name: runtime.snapshot() for name, runtime in self.runtimes.items()},
            "budgets": {name: ledger.to_dict() for name, ledger in self.ledgers.items()},
        }

    def write_snapshot(self, path: Path) -> None:
        """Write the state file atomically: a crash mid-write leaves the previous snapshot."""
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(path.suffix + ".tmp")
        temporary.write_text(json.dumps(self.snapshot()), encoding="utf-8")
        os.replace(temporary, path)

    def restore_snapshot(self, path: Path) -> bool:
        """Load a snapshot if one exists; a corrupt file is logged and ignored, never fatal."""
        if not path.exists():
            return False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            for name, item in data.get("workloads", {}).items():
                if name in self.runtimes:
                    self.runtimes[name].restore(item)
            for name, item in data.get("budgets", {}).items():
                if name in self.ledgers:
                    self.ledgers[name].restore(item)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.error("state snapshot unreadable; starting without it", path=str(path), error=str(exc))
            return False
        log.info("state restored", path=str(path), written_at=data.get("written_at"), age_seconds=round(self.clock() - float(data.get("written_at", self.clock())), 1))
        return True

    async def snapshotter(self, path: Path) -> None:
        while True:
            await asyncio.sleep(self.config.daemon.state_snapshot_interval_seconds)
            await asyncio.to_thread(self.write_snapshot, path)


def _serve_metrics(daemon: Daemon) -> None:
    from prometheus_client import start_http_server

    host, _, port = daemon.config.daemon.metrics_address.rpartition(":")
    start_http_server(int(port), addr=host, registry=daemon.metrics.registry)
    log.info("metrics server started", address=daemon.config.daemon.metrics_address)


async def run_daemon(config: AppConfig, duration_seconds: float | None = None, daemon: Daemon | None = None, serve_metrics: bool = True) -> int:
    """Run every service until SIGTERM/SIGINT, `duration_seconds`, or a crashed task."""
    configure_logging(config.daemon.log_format)
    try:
        daemon = daemon or Daemon(config)
    except TraceError as exc:
        log.error("invalid trace source", error=str(exc))
        return 3
    except SecretError as exc:
        log.error("signal source credentials unreadable", error=str(exc))
        return 3
    executor_owned = daemon.fit_executor is None
    if executor_owned:
        daemon.fit_executor = ProcessPoolExecutor(config.daemon.fit_workers, mp_context=multiprocessing.get_context("spawn"))
    state_file = config.daemon.state_file
    if state_file is not None:
        daemon.restore_snapshot(state_file)
    for source in daemon.sources:
        await source.load_history(daemon.submit_history)
    if serve_metrics:
        try:
            _serve_metrics(daemon)
        except OSError as exc:
            log.error("metrics server failed to start", address=config.daemon.metrics_address, error=str(exc))
            return 1

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    tasks: dict[asyncio.Task, str] = {}
    for name in daemon.runtimes:
        daemon.triggers[name] = asyncio.Event()
        tasks[asyncio.create_task(daemon.trigger_loop(name))] = f"trigger:{name}"
    for source in daemon.sources:
        tasks[asyncio.create_task(source.run(daemon.submit_observation))] = f"source:{source.name}"
    tasks[asyncio.create_task(daemon.fitter())] = "fitter"
    # Started before the ticker so that a standby never writes before its first election round.
    from runtime.leader import start_leader_election

    election = start_leader_election(daemon.actuator, config.daemon.kubernetes.leader_election if config.daemon.actuator == "kubernetes" else None)
    if election is not None:
        tasks[election] = "leader-election"
    tasks[asyncio.create_task(daemon.ticker())] = "ticker"
    policy_namespaces = config.daemon.kubernetes.scaling_policy_namespaces
    if policy_namespaces and hasattr(daemon.actuator, "api_client"):
        from runtime.policies import ScalingPolicyController

        policies = ScalingPolicyController(daemon, daemon.actuator.api_client, policy_namespaces)
        tasks[asyncio.create_task(policies.run())] = "scaling-policies"
    if state_file is not None:
        tasks[asyncio.create_task(daemon.snapshotter(state_file))] = "snapshotter"
    health_runner = None
    if config.daemon.health_address is not None:
        from runtime.health import start_health_server

        elector = getattr(daemon.actuator, "elector", None)
        try:
            health_runner = await start_health_server(config.daemon.health_address, lambda: True, lambda: None if elector is None else elector.is_leader)
        except OSError as exc:
            log.error("health server failed to start", address=config.daemon.health_address, error=str(exc))
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return 1
    log.info("daemon started", workloads=sorted(daemon.runtimes), actuator=daemon.actuator.name, sources=len(daemon.sources), tick_seconds=config.daemon.tick_seconds)

    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*tasks, stopper], timeout=duration_seconds, return_when=asyncio.FIRST_COMPLETED)
    exit_code = 0
    if stopper in done:
        stop_reason = "signal"
    elif not done:
        stop_reason = "duration elapsed"
    else:
        stop_reason = "core task stopped"
    for task in done:
        if task is stopper:
            continue
        error = task.exception() if not task.cancelled() else None
        log.error("core task stopped; shutting down", task=tasks[task], error=repr(error))
        exit_code = 1

    for task in [*tasks, stopper]:
        task.cancel()
    await asyncio.gather(*tasks, stopper, return_exceptions=True)
    await daemon.remove_added_workloads()
    if state_file is not None:
        daemon.write_snapshot(state_file)
    if health_runner is not None:
        await health_runner.cleanup()
    await daemon.actuator.close()
    if executor_owned and daemon.fit_executor is not None:
        daemon.fit_executor.shutdown(wait=False, cancel_futures=True)
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
    log.info("daemon stopped", exit_code=exit_code, reason=stop_reason)
    return exit_code
