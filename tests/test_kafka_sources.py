"""Tests of the Kafka lag sources against a real single-node Kafka broker on 127.0.0.1.

One broker per module. Each test uses its own topics and groups. The broker restart
test stops and restarts that broker, so it runs last.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.errors import KafkaError
from aiokafka.structs import OffsetAndMetadata

from runtime.config import KafkaEventsSourceConfig, KafkaLagSourceConfig, parse_config
from runtime.daemon import Daemon, build_sources
from runtime.kafka_sources import KafkaEventsSource, KafkaLagSource
from runtime.lag_events import EventRoute
from runtime.model import Decision, Reason, Validity

try:
    from tests import promdata, realstack
except ImportError:
    import promdata
    import realstack


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    realstack.require(realstack.find_kafka_classpath(), "Kafka")
    with realstack.kafka_broker(tmp_path_factory.mktemp("kafka")) as server:
        asyncio.run(wait_for_group_coordinator(server.bootstrap))
        yield server


async def wait_for_group_coordinator(bootstrap: str, timeout_seconds: float = 60.0) -> None:
    """Wait until the new broker has created its offsets topic and serves group requests."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    deadline = time.monotonic() + timeout_seconds
    try:
        while True:
            try:
                await admin.find_coordinator("warm-up")
                return
            except KafkaError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()


async def produce(bootstrap: str, topic: str, counts: dict[int, int], value: bytes = b"x") -> None:
    """Append counts[partition] records to each partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, value, partition=partition) for partition, count in counts.items() for _ in range(count)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def commit(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit offsets for a group without joining it, as a stopped consumer's last commit would."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = {TopicPartition(topic, partition): OffsetAndMetadata(offset, "") for partition, offset in offsets.items()}
        consumer.assign(list(partitions))
        await consumer.commit(partitions)
    finally:
        await consumer.stop()


def lag_config(bootstrap: str, group: str, topic: str, **overrides) -> KafkaLagSourceConfig:
    values = {"kind": "kafka_lag", "bootstrap_servers": bootstrap, "group_id": group, "topics": [topic],
              "poll_interval_seconds": 0.2, "request_timeout_seconds": 5, "backoff_max_seconds": 1}
    values.update(overrides)
    return KafkaLagSourceConfig(**values)


async def poll(source: KafkaLagSource, now: float | None = None) -> dict:
    try:
        offsets = await source.fetch_offsets()
        return dict(source.observe(offsets, now if now is not None else time.time()))
    finally:
        await source.close()


async def test_no_commits_follow_reset_policy(broker):
    topic = unique("nocommit")
    await create_topic(broker.bootstrap, topic, 3)
    await produce(broker.bootstrap, topic, {0: 100, 1: 50})
    # Retention-style deletion moves partition 0's log-start offset to 40.
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.delete_records({TopicPartition(topic, 0): RecordsToDelete(40)})
    finally:
        await admin.close()

    signals = [("lag", "backlog")]
    latest = await poll(KafkaLagSource("w", lag_config(broker.bootstrap, unique("g"), topic, offset_reset_policy="latest"), signals))
    assert latest["lag"].validity is Validity.OK
    assert latest["lag"].value == 0.0
    # Zero by the reset policy, but a mistyped group_id looks the same, so the detail reports it.
    assert "no committed offset on any partition" in latest["lag"].detail
    earliest = await poll(KafkaLagSource("w", lag_config(broker.bootstrap, unique("g"), topic, offset_reset_policy="earliest"), signals))
    # 60 records left on partition 0 after deletion, 50 on partition 1, none on partition 2.
    assert earliest["lag"].value == 110.0
    assert earliest["lag"].max_replicas == 3


async def test_skewed_lag_capped_exactly(broker):
    topic = unique("skew")
    group = unique("g")
    await create_topic(broker.bootstrap, topic, 4)
    await produce(broker.bootstrap, topic, {0: 4500, 1: 10, 2: 10, 3: 10})
    await commit(broker.bootstrap, group, topic, {0: 0, 1: 10, 2: 10, 3: 10})

    default = KafkaLagSource("w", lag_config(broker.bootstrap, group, topic), [("lag", "backlog")])
    observation = (await poll(default))["lag"]
    assert observation.value == 4500.0
    assert observation.max_replicas == 4
    assert default.last.uncapped_replicas == 5
    assert default.last.desired_replicas == 4

    limited = KafkaLagSource("w", lag_config(broker.bootstrap, group, topic, limit_to_partitions_with_lag=True), [("lag", "backlog")])
    observation = (await poll(limited))["lag"]
    assert observation.max_replicas == 1
    assert limited.last.desired_replicas == 1

    idle = KafkaLagSource("w", lag_config(broker.bootstrap, group, topic, allow_idle_consumers=True), [("lag", "backlog")])
    observation = (await poll(idle))["lag"]
    assert observation.max_replicas is None
    assert idle.last.desired_replicas == 5


async def test_activation_threshold_zero_to_one(broker):
    topic = unique("activation")
    group = unique("g")
    await create_topic(broker.bootstrap, topic, 2)
    await commit(broker.bootstrap, group, topic, {0: 0, 1: 0})
    await produce(broker.bootstrap, topic, {0: 50})
    config = lag_config(broker.bootstrap, group, topic, activation_lag_threshold=100)
    below = (await poll(KafkaLagSource("w", config, [("lag", "backlog")])))["lag"]
    assert below.validity is Validity.OK
    assert below.value == 0.0

    await produce(broker.bootstrap, topic, {1: 60})
    source = KafkaLagSource("w", config, [("lag", "backlog")])
    above = (await poll(source))["lag"]
    assert above.value == 110.0
    assert source.last.desired_replicas == 1


async def test_stuck_partition_excluded(broker):
    topic = unique("stuck")
    group = unique("g")
    await create_topic(broker.bootstrap, topic, 2)
    await produce(broker.bootstrap, topic, {0: 3000, 1: 3000})
    await commit(broker.bootstrap, group, topic, {0: 100, 1: 100})
    source = KafkaLagSource("w", lag_config(broker.bootstrap, group, topic, stuck_partition_after_seconds=60), [("lag", "backlog")])
    try:
        first = dict(source.observe(await source.fetch_offsets(), now=1000.0))
        assert first["lag"].value == 5800.0
        # Partition 1 makes progress, partition 0 does not, for longer than the stuck limit.
        await commit(broker.bootstrap, group, topic, {1: 1100})
        second = dict(source.observe(await source.fetch_offsets(), now=1061.0))
    finally:
        await source.close()
    assert source.last.stuck_partitions == ((topic, 0),)
    assert second["lag"].value == 1900.0
    assert "stuck partitions" in second["lag"].detail


async def test_arrival_rate_and_lag_seconds(broker):
    topic = unique("rate")
    group = unique("g")
    await create_topic(broker.bootstrap, topic, 1)
    await commit(broker.bootstrap, group, topic, {0: 0})
    source = KafkaLagSource("w", lag_config(broker.bootstrap, group, topic), [("arrivals", "load"), ("lag", "backlog")])
    try:
        first = dict(source.observe(await source.fetch_offsets(), now=2000.0))
        assert first["arrivals"].validity is Validity.MISSING
        await produce(broker.bootstrap, topic, {0: 500})
        await commit(broker.bootstrap, group, topic, {0: 100})
        second = dict(source.observe(await source.fetch_offsets(), now=2010.0))
    finally:
        await source.close()
    assert second["arrivals"].validity is Validity.OK
    assert second["arrivals"].value == pytest.approx(50.0)
    # 400 records of lag at 10 records/s consumed: 40 s.
    assert "lag_seconds 40.0" in second["lag"].detail


def events_app(bootstrap: str, topic: str, group: str, max_replicas: int = 40) -> object:
    source = {"kind": "kafka_events", "bootstrap_servers": bootstrap, "topic": topic, "group_id": group}
    return parse_config({
        "daemon": {"actuator": "simulated", "event_debounce_seconds": 0.05, "tick_seconds": 3600},
        "budgets": {"default": {"max_hourly_cost": 100, "on_demand_price_per_replica_hour": 0.1, "spot_price_per_replica_hour": 0.03}},
        "workloads": [{
            "name": "consumers", "target": {"namespace": "ns", "name": "consumers"}, "min_replicas": 1, "max_replicas": max_replicas,
            "capacity_per_replica": 1000.0, "startup_lead_seconds": 0, "forecaster": {"model": "none"},
            "behavior": {"scale_up": {"stabilization_window_seconds": 0, "policies": [{"type": "Pods", "value": 10, "period_seconds": 30}]}},
            "signals": [
                # The trace source is never started, so the load signal stays unknown. The
                # planner then keeps the last safe count and may only scale up on the lag signal.
                {"name": "requests", "role": "load", "source": {"kind": "trace", "path": str(promdata.NASA_TRACE)}},
                {"name": "lag", "role": "backlog", "stale_after_seconds": 600, "source": source},
            ],
        }],
    })


def event(workload: str = "consumers", total_lag: int = 0, timestamp: float | None = None) -> bytes:
    return json.dumps({"version": 1, "workload": workload, "timestamp": time.time() if timestamp is None else timestamp, "total_lag": total_lag}).encode()


async def wait_for(predicate, timeout_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def test_build_sources_shares_event_consumer(broker):
    config = events_app(broker.bootstrap, "events", "daemon")
    config = config.model_copy(update={"workloads": (config.workloads[0], config.workloads[0].model_copy(update={"name": "second"}))})
    sources = [source for source in build_sources(config) if isinstance(source, KafkaEventsSource)]
    # Two workloads reading one topic in one group share a consumer, so they never split its partitions.
    assert len(sources) == 1
    assert sorted(sources[0].router.by_workload) == ["consumers", "second"]


async def test_malformed_events_counted_and_skipped(broker):
    topic = unique("events")
    await create_topic(broker.bootstrap, topic, 1)
    config = KafkaEventsSourceConfig(kind="kafka_events", bootstrap_servers=broker.bootstrap, topic=topic, group_id=unique("daemon"), max_event_bytes=2048)
    source = KafkaEventsSource(config, [EventRoute("consumers", "lag")])
    received = []
    task = asyncio.create_task(source.run(lambda *args: received.append(args)))
    try:
        await asyncio.wait_for(source.ready.wait(), 30)
        bad = [b"not json", b"[]", b"{" + b" " * 4096 + b"}", event(workload="nobody"), event(timestamp=time.time() + 3600),
               event(timestamp=time.time() - 3600), json.dumps({"version": 1, "workload": "consumers", "timestamp": time.time(), "total_lag": "many"}).encode()]
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            for value in bad:
                await producer.send_and_wait(topic, value)
            await producer.send_and_wait(topic, event(total_lag=777))
        finally:
            await producer.stop()
        await wait_for(lambda: len(received) == 1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    workload, signal, observation, urgent = received[0]
    assert (workload, signal, urgent) == ("consumers", "lag", True)
    assert observation.value == 777.0
    assert dict(source.rejections.counts) == {
        "not_json": 1, "not_object": 1, "oversize": 1, "unknown_workload": 1,
        "future_timestamp": 1, "old_timestamp": 1, "wrong_type": 1,
    }


async def test_burst_event_scales_up_simulated_cluster(broker):
    topic = unique("events")
    await create_topic(broker.bootstrap, topic, 1)
    config = events_app(broker.bootstrap, topic, unique("daemon"))
    daemon = Daemon(config)
    source = next(item for item in daemon.sources if isinstance(item, KafkaEventsSource))
    decisions: list[Decision] = []
    daemon.decision_listeners.append(decisions.append)
    daemon.triggers["consumers"] = asyncio.Event()
    tasks = [asyncio.create_task(daemon.trigger_loop("consumers")), asyncio.create_task(source.run(daemon.submit_observation))]

    try:
        await asyncio.wait_for(source.ready.wait(), 30)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        try:
            # A baseline, then a burst of 20,000 records of lag: 20 replicas at 1000 per replica.
            await producer.send_and_wait(topic, event(total_lag=0))
            await wait_for(lambda: len(decisions) >= 1)
            for _ in range(50):
                await producer.send(topic, event(total_lag=20_000))
            await producer.flush()
        finally:
            await producer.stop()
        await wait_for(lambda: decisions[-1].reactive_replicas == 20)

    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    final = decisions[-1]
    # The simulated cluster starts at min_replicas (1) and the policy allows 10 pods per
    # 30 s, so the burst is rate-limited to 1 + 10 = 11.
    assert final.final_replicas == 11
    assert final.reason is Reason.SCALE_UP_LIMITED
    assert final.invalid_signals == ("requests",)
    # 51 events in a few batches become far fewer decisions thanks to the debounce.
    assert len(decisions) < 51
    status = await daemon.actuator.status("consumers", time.time())
    assert status.requested == final.final_replicas


async def test_daemon_decision_capped_at_partitions(broker):
    topic = unique("daemon-lag")
    group = unique("g")
    await create_topic(broker.bootstrap, topic, 3)
    await commit(broker.bootstrap, group, topic, {0: 0, 1: 0, 2: 0})
    # 9,000 records on one partition want 9 replicas at 1000 each; the group has 3 partitions.
    await produce(broker.bootstrap, topic, {0: 9000})
    source = {"kind": "kafka_lag", "bootstrap_servers": broker.bootstrap, "group_id": group, "topics": [topic], "poll_interval_seconds": 0.2}
    config = parse_config({
        "daemon": {"actuator": "simulated"},
        "budgets": {"default": {"max_hourly_cost": 100, "on_demand_price_per_replica_hour": 0.1, "spot_price_per_replica_hour": 0.03}},
        "workloads": [{
            "name": "consumers", "target": {"namespace": "ns", "name": "consumers"}, "min_replicas": 1, "max_replicas": 40,
            "capacity_per_replica": 1000.0, "startup_lead_seconds": 0, "forecaster": {"model": "none"},
            "behavior": {"scale_up": {"stabilization_window_seconds": 0, "policies": [{"type": "Pods", "value": 40, "period_seconds": 15}]}},
            "signals": [
                {"name": "arrivals", "role": "load", "source": source},
                {"name": "lag", "role": "backlog", "source": source},
            ],
        }],
    })
    daemon = Daemon(config)
    # The load and backlog signals share one connection to the broker.
    assert len(daemon.sources) == 1
    runtime = daemon.runtimes["consumers"]
    task = asyncio.create_task(daemon.sources[0].run(daemon.submit_observation))
    try:
        # Two polls: the arrival rate needs a second sample.
        await wait_for(lambda: "arrivals" in runtime.latest and runtime.latest["arrivals"].validity is Validity.OK)
        decision = await daemon.evaluate("consumers")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert decision.invalid_signals == ()
    assert decision.reactive_replicas == 3
    assert decision.final_replicas == 3


async def test_broker_restart_reconnects(broker):
    lag_topic = unique("restart-lag")
    events_topic = unique("restart-events")
    group = unique("g")
    await create_topic(broker.bootstrap, lag_topic, 1)
    await create_topic(broker.bootstrap, events_topic, 1)
    await commit(broker.bootstrap, group, lag_topic, {0: 0})
    await produce(broker.bootstrap, lag_topic, {0: 10})

    lag_source = KafkaLagSource("w", lag_config(broker.bootstrap, group, lag_topic), [("lag", "backlog")])
    events_config = KafkaEventsSourceConfig(kind="kafka_events", bootstrap_servers=broker.bootstrap, topic=events_topic,
                                            group_id=unique("daemon"), request_timeout_seconds=3)
    events_source = KafkaEventsSource(events_config, [EventRoute("w", "events")])
    latest: dict[str, object] = {}
    received: list[float] = []

    def sink(workload, signal, observation, urgent):
        latest[signal] = observation
        if signal == "events":
            received.append(observation.value)

    tasks = [asyncio.create_task(lag_source.run(sink)), asyncio.create_task(events_source.run(sink))]
    try:
        await asyncio.wait_for(events_source.ready.wait(), 30)
        await wait_for(lambda: "lag" in latest and latest["lag"].validity is Validity.OK)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        await producer.send_and_wait(events_topic, event(workload="w", total_lag=1))
        await producer.stop()
        await wait_for(lambda: received == [1.0])

        await asyncio.to_thread(broker.stop)
        await wait_for(lambda: latest["lag"].validity is Validity.SOURCE_DOWN, 60)
        await asyncio.to_thread(broker.start)
        await wait_for(lambda: latest["lag"].validity is Validity.OK, 90)
        assert latest["lag"].value == 10.0

        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        await producer.send_and_wait(events_topic, event(workload="w", total_lag=2))
        await producer.stop()
        # The event before the restart was committed, so only the new one arrives.
        await wait_for(lambda: received[-1] == 2.0, 90)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert received.count(1.0) == 1
    assert lag_source.failures >= 1


def test_unreadable_sasl_password_fails_at_start(monkeypatch):
    from runtime.credentials import SecretError

    monkeypatch.delenv("AUTOSCALER_TEST_KAFKA_PASSWORD", raising=False)
    config = lag_config("127.0.0.1:9", "g", "orders", security_protocol="SASL_PLAINTEXT", sasl_username="scaler",
                        sasl_password_env="AUTOSCALER_TEST_KAFKA_PASSWORD")
    with pytest.raises(SecretError, match="AUTOSCALER_TEST_KAFKA_PASSWORD"):
        KafkaLagSource("w", config, [("lag", "backlog")])
