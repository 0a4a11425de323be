"""Kafka signal sources built on aiokafka: lag computed from the broker, and lag events.

`KafkaLagSource` reads the log-start, log-end and committed offsets of a consumer
group each poll and applies the rules of runtime/kafka_lag.py. `KafkaEventsSource`
consumes a topic of lag events in its own consumer group, commits after each batch
and triggers an immediate evaluation of every workload an event updated.

Both report the source as down (never zero) while the broker is unreachable, and
reconnect on their own. The events consumer resumes from its committed offsets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.helpers import create_ssl_context

from runtime.config import KafkaConnectionConfig, KafkaEventsSourceConfig, KafkaLagSourceConfig
from runtime.credentials import read_secret
from runtime.daemon import ObservationSink, SignalSource
from runtime.kafka_lag import (
    LagAssessment, LagRules, OffsetRates, PartitionOffsets, StuckDetector, assess_lag, lag_seconds, offsets_inconsistency,
)
from runtime.lag_events import EventLimits, EventRejected, EventRoute, EventRouter, LagEvent, RejectionCounter, parse_lag_event
from runtime.model import Observation, Validity

log = structlog.get_logger("agent_autoscaler.kafka")

# How long offsets that contradict the previous poll stay unknown before they are
# accepted as the new truth. A restarted broker's coordinator loads in seconds; a
# change that lasts a minute (expired offsets, a recreated topic) is real.
OFFSETS_SETTLE_SECONDS = 60.0

BROKER_ERRORS = (KafkaError, asyncio.TimeoutError, OSError)


class TopicNotFoundError(Exception):
    """Raised when a configured topic does not exist on the cluster."""


def connection_kwargs(config: KafkaConnectionConfig) -> dict[str, Any]:
    """Return the aiokafka client arguments for a connection config; the password is read here, never logged."""
    kwargs: dict[str, Any] = {
        "bootstrap_servers": config.bootstrap_servers,
        "security_protocol": config.security_protocol,
        "request_timeout_ms": int(config.request_timeout_seconds * 1000),
    }
    if config.security_protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = create_ssl_context(cafile=str(config.tls_ca_file) if config.tls_ca_file else None)
    if config.security_protocol.startswith("SASL"):
        kwargs["sasl_mechanism"] = config.sasl_mechanism
        kwargs["sasl_plain_username"] = config.sasl_username
        kwargs["sasl_plain_password"] = read_secret(config.sasl_password_file, config.sasl_password_env, "SASL password")
    return kwargs


class KafkaLagSource(SignalSource):
    """Consumer lag of one group from the broker, for the signals of one workload.

    Backlog signals receive the lag in records that drives scaling, with the
    partition cap in `Observation.max_replicas`. Load signals receive the arrival rate
    in records per second, unknown until two polls span a rate.
    """

    name = "kafka_lag"

    def __init__(self, workload: str, config: KafkaLagSourceConfig, signals: list[tuple[str, str]], clock: Callable[[], float] = time.time):
        self.workload = workload
        self.config = config
        self.signals = signals
        self.clock = clock
        self.rules = LagRules(
            lag_threshold=config.lag_threshold,
            activation_lag_threshold=config.activation_lag_threshold,
            reset_policy=config.offset_reset_policy,
            allow_idle_consumers=config.allow_idle_consumers,
            limit_to_partitions_with_lag=config.limit_to_partitions_with_lag,
            stuck_after_seconds=config.stuck_partition_after_seconds,
        )
        self.stuck = StuckDetector(config.stuck_partition_after_seconds) if config.stuck_partition_after_seconds else None
        self.rates = OffsetRates(config.rate_window_seconds)
        # Read once here, so that an unreadable SASL password fails at start, not in the loop.
        self.client_kwargs = connection_kwargs(config)
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.failures = 0
        self.last: LagAssessment | None = None
        # Last snapshot that passed the consistency check, and since when the current
        # snapshots fail it (Unix seconds).
        self.trusted_offsets: list[PartitionOffsets] | None = None
        self.inconsistent_since: float | None = None
        self.warned_no_commits = False

    async def _connect(self) -> None:
        admin = AIOKafkaAdminClient(**self.client_kwargs)
        consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **self.client_kwargs)
        try:
            await admin.start()
            await consumer.start()
        except BaseException:
            await admin.close()
            await consumer.stop()
            raise
        self.admin, self.consumer = admin, consumer

    async def close(self) -> None:
        admin, consumer = self.admin, self.consumer
        self.admin = self.consumer = None
        if admin is not None:
            await admin.close()
        if consumer is not None:
            await consumer.stop()

    async def fetch_offsets(self) -> list[PartitionOffsets]:
        """Read log-start, log-end and committed offsets of every partition of the topics."""
        if self.admin is None or self.consumer is None:
            await self._connect()
        assert self.admin is not None and self.consumer is not None
        timeout = self.config.request_timeout_seconds
        topics = await asyncio.wait_for(self.admin.describe_topics(list(self.config.topics)), timeout)
        partitions: list[TopicPartition] = []
        for topic in topics:
            if topic["error_code"] != 0 or not topic["partitions"]:
                raise TopicNotFoundError(f"topic {topic['topic']!r} not found (error code {topic['error_code']}); check the topics of the kafka_lag source")
            partitions.extend(TopicPartition(topic["topic"], item["partition"]) for item in topic["partitions"])
        committed = await asyncio.wait_for(self.admin.list_consumer_group_offsets(self.config.group_id, partitions=partitions), timeout)
        # beginning_offsets and end_offsets may wait forever for a missing partition, hence the timeout.
        starts = await asyncio.wait_for(self.consumer.beginning_offsets(partitions), timeout)
        ends = await asyncio.wait_for(self.consumer.end_offsets(partitions), timeout)
        result = []
        for partition in sorted(partitions):
            entry = committed.get(partition)
            offset = entry.offset if entry is not None and entry.offset >= 0 else None
            result.append(PartitionOffsets(partition.topic, partition.partition, starts[partition], ends[partition], offset))
        return result

    def observe(self, offsets: list[PartitionOffsets], now: float) -> list[tuple[str, Observation]]:
        """Apply the lag rules to one snapshot and return one observation per signal."""
        problem = offsets_inconsistency(self.trusted_offsets, offsets)
        if problem is not None:
            if self.inconsistent_since is None:
                self.inconsistent_since = now
                log.warning(
                    "kafka offsets inconsistent with the previous poll; the signals are unknown until they settle",
                    workload=self.workload, group_id=self.config.group_id, problem=problem,
                    accept_after_seconds=OFFSETS_SETTLE_SECONDS,
                )
            if now - self.inconsistent_since < OFFSETS_SETTLE_SECONDS:
                detail = f"offsets of group {self.config.group_id} inconsistent: {problem}"
                return [(signal, Observation.unknown(now, Validity.AMBIGUOUS, detail)) for signal, _ in self.signals]
            # A state that persists is real (offsets expired, a topic recreated): accept it.
            log.warning("kafka offsets stayed changed; accepting them", workload=self.workload, group_id=self.config.group_id, problem=problem)
        self.inconsistent_since = None
        self.trusted_offsets = offsets
        stuck = self.stuck.update(offsets, self.rules.reset_policy, now) if self.stuck else frozenset()
        self.rates.update(offsets, now)
        assessment = assess_lag(offsets, self.rules, stuck)
        previous_stuck = self.last.stuck_partitions if self.last is not None else ()
        if assessment.stuck_partitions != previous_stuck:
            log.warning(
                "kafka stuck partitions changed; the lag of stuck partitions is left out of the demand",
                workload=self.workload, group_id=self.config.group_id,
                stuck_partitions=[f"{topic}/{partition}" for topic, partition in assessment.stuck_partitions],
            )
        self.last = assessment
        drain_seconds = lag_seconds(assessment.total_lag, self.rates.consumption_rate())
        arrival = self.rates.arrival_rate()
        detail = (
            f"lag {assessment.total_lag} records over {assessment.partition_count} partitions, "
            f"{assessment.partitions_with_lag} with lag, demand {assessment.demand_lag}, "
            f"lag_seconds {'unknown' if drain_seconds is None else round(drain_seconds, 1)}"
        )
        if assessment.stuck_partitions:
            detail += f", stuck partitions {list(assessment.stuck_partitions)}"
        if offsets and all(item.committed is None for item in offsets):
            # Legitimate for a group that has not started yet, but also what a mistyped
            # group_id looks like, so report it where an operator will see it.
            detail += f", no committed offset on any partition (offset_reset_policy {self.config.offset_reset_policy}; check group_id if the group should exist)"
            if not self.warned_no_commits:
                self.warned_no_commits = True
                log.warning(
                    "kafka consumer group has no committed offsets; lag follows the reset policy",
                    workload=self.workload, group_id=self.config.group_id, topics=list(self.config.topics),
                    offset_reset_policy=self.config.offset_reset_policy,
                )
        else:
            self.warned_no_commits = False
        observations = []
        for signal, role in self.signals:
            if role == "backlog":
                observations.append((signal, Observation(float(assessment.demand_lag), now, Validity.OK, detail, assessment.max_replicas)))
            elif arrival is None:
                observations.append((signal, Observation.unknown(now, Validity.MISSING, "arrival rate needs two polls")))
            else:
                observations.append((signal, Observation.checked(arrival, now, f"arrival rate over {self.config.rate_window_seconds:.0f} s")))
        return observations

    async def run(self, sink: ObservationSink) -> None:
        streak = 0
        try:
            while True:
                now = self.clock()
                try:
                    offsets = await self.fetch_offsets()
                except (*BROKER_ERRORS, TopicNotFoundError) as exc:
                    streak += 1
                    self.failures += 1
                    delay = min(self.config.poll_interval_seconds * 2 ** (streak - 1), self.config.backoff_max_seconds)
                    if streak == 1:
                        log.warning(
                            "kafka lag query failed; the signals are unknown and the workload keeps its replica count until the query succeeds",
                            workload=self.workload, group_id=self.config.group_id, error=str(exc), error_type=type(exc).__name__, retry_in_seconds=delay,
                        )
                    # Reconnect from scratch at the next attempt, so a restarted broker is found again.
                    await self.close()
                    for signal, _ in self.signals:
                        detail = f"kafka lag of group {self.config.group_id} unavailable ({streak} failure(s) in a row): {type(exc).__name__}"
                        sink(self.workload, signal, Observation.unknown(now, Validity.SOURCE_DOWN, detail), False)
                    await asyncio.sleep(delay)
                    continue
                if streak:
                    log.info("kafka lag query recovered", workload=self.workload, group_id=self.config.group_id, failed_attempts=streak)
                    streak = 0
                for signal, observation in self.observe(offsets, self.clock()):
                    sink(self.workload, signal, observation, False)
                await asyncio.sleep(self.config.poll_interval_seconds)
        finally:
            await self.close()


class KafkaEventsSource(SignalSource):
    """Consumes one lag-events topic in the daemon's own group and routes events to signals.

    Each batch is validated, the newest event per (workload, signal) is submitted as
    urgent, and the batch's offsets are committed after that. The daemon's trigger
    loop debounces the resulting evaluations.
    """

    name = "kafka_events"

    def __init__(self, config: KafkaEventsSourceConfig, routes: list[EventRoute], clock: Callable[[], float] = time.time, max_batch_records: int = 10_000):
        self.config = config
        self.router = EventRouter(routes)
        self.clock = clock
        self.limits = EventLimits(config.max_event_bytes, config.max_future_seconds, config.max_age_seconds)
        self.client_kwargs = connection_kwargs(config)
        self.rejections = RejectionCounter()
        self.max_batch_records = max_batch_records
        self.accepted = 0
        self.reconnects = 0
        # Set once the consumer has partitions and a position in each; tests and benchmarks wait on it.
        self.ready = asyncio.Event()

    def _consumer(self) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            self.config.topic,
            group_id=self.config.group_id,
            enable_auto_commit=False,
            # A new group starts at the end: older events would be rejected as too old anyway.
            auto_offset_reset="latest",
            **self.client_kwargs,
        )

    async def _wait_assigned(self, consumer: AIOKafkaConsumer) -> None:
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100, max_records=1)
            if consumer.assignment():
                break
        # Resolve the start position now, so events produced after `ready` is set are never skipped.
        for partition in consumer.assignment():
            await consumer.position(partition)
        self.ready.set()

    def process_batch(self, records: list[Any], sink: ObservationSink) -> int:
        """Validate a batch, submit the newest event per signal as urgent, and return the accepted count."""
        now = self.clock()
        newest: dict[tuple[str, str], LagEvent] = {}
        accepted = 0
        for record in records:
            try:
                event = parse_lag_event(record.value, now, self.limits)
                routes = self.router.match(event)
            except EventRejected as rejection:
                self.rejections.record(rejection, now, record.partition, record.offset)
                continue
            accepted += 1
            for route in routes:
                key = (route.workload, route.signal)
                previous = newest.get(key)
                if previous is None or event.timestamp >= previous.timestamp:
                    newest[key] = event
        for (workload, signal), event in newest.items():
            detail = f"lag event: {event.total_lag} records" + (f" over {event.partition_count} partitions" if event.partition_count else "")
            sink(workload, signal, Observation(float(event.total_lag), event.timestamp, Validity.OK, detail), True)
        self.accepted += accepted
        return accepted

    async def run(self, sink: ObservationSink) -> None:
        # NOTE: while the broker is down, aiokafka's getmany retries inside and returns no
        # records, so no SOURCE_DOWN observation is sent. The signals become unknown once
        # their last event is older than stale_after_seconds, and the workload keeps its count from then.
        failures = 0
        while True:
            consumer = self._consumer()
            try:
                await consumer.start()
                await self._wait_assigned(consumer)
                if failures:
                    log.info("lag events consumer reconnected", topic=self.config.topic, group_id=self.config.group_id, failed_attempts=failures)
                    failures = 0
                while True:
                    batches = await consumer.getmany(timeout_ms=200, max_records=self.max_batch_records)
                    records = [record for partition_records in batches.values() for record in partition_records]
                    if not records:
                        continue
                    self.process_batch(records, sink)
                    await consumer.commit()
            except BROKER_ERRORS as exc:
                failures += 1
                self.reconnects += 1
                if failures == 1:
                    log.warning(
                        "lag events consumer failed; reconnecting and resuming from the committed offsets",
                        topic=self.config.topic, group_id=self.config.group_id, error=str(exc), error_type=type(exc).__name__,
                    )
                self.ready.clear()
                await asyncio.sleep(min(0.5 * 2 ** (failures - 1), 30.0))
            finally:
                await consumer.stop()
