"""Measure lag-event ingestion and burst-to-decision latency against a real Kafka broker.

Run: python benchmarks/lag_events.py [--events 200000] [--bursts 100] [--debounce-seconds 0.2] [--pin-cpu 1]

Starts a single-node broker with tests/realstack.py, then reports:
- ingestion: events per second that KafkaEventsSource reads, validates, routes and
  submits to a Daemon, consuming a backlog of pre-produced events from offset 0.
  The daemon side runs on one asyncio thread; --pin-cpu confines it to one CPU.
- latency: time from the first send of a burst of 20 events until the daemon's
  decision listener runs (right after the decision is logged), with the simulated
  actuator and the given debounce, as p50 and p99 over the bursts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import structlog  # noqa: E402
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: E402
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: E402
from aiokafka.structs import OffsetAndMetadata  # noqa: E402

from runtime.config import parse_config  # noqa: E402
from runtime.daemon import Daemon  # noqa: E402
from runtime.kafka_sources import KafkaEventsSource  # noqa: E402
from tests import realstack  # noqa: E402

WORKLOADS = 10
BURST_EVENTS = 20


def app_config(bootstrap: str, topic: str, group: str, debounce_seconds: float) -> object:
    source = {"kind": "kafka_events", "bootstrap_servers": bootstrap, "topic": topic, "group_id": group, "max_age_seconds": 3600}
    workloads = []
    for index in range(WORKLOADS):
        workloads.append({
            "name": f"consumers-{index}", "target": {"namespace": "bench", "name": f"consumers-{index}"},
            "min_replicas": 1, "max_replicas": 200, "capacity_per_replica": 1000.0, "startup_lead_seconds": 0,
            "forecaster": {"model": "none"},
            "behavior": {"scale_up": {"stabilization_window_seconds": 0, "policies": [{"type": "Pods", "value": 200, "period_seconds": 15}]},
                         "scale_down": {"stabilization_window_seconds": 0, "policies": [{"type": "Percent", "value": 100, "period_seconds": 15}]}},
            "signals": [{"name": "lag", "role": "load", "stale_after_seconds": 3600, "source": source}],
        })
    return parse_config({
        "daemon": {"actuator": "simulated", "event_debounce_seconds": debounce_seconds, "tick_seconds": 3600},
        "budgets": {"default": {"max_hourly_cost": 10_000, "on_demand_price_per_replica_hour": 0.1, "spot_price_per_replica_hour": 0.03}},
        "workloads": workloads,
    })


def encode_event(workload: str, lag: int) -> bytes:
    return json.dumps({"version": 1, "workload": workload, "timestamp": time.time(), "total_lag": lag}).encode()


async def setup_topic(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
        deadline = time.monotonic() + 60
        while True:
            try:
                await admin.find_coordinator("warm-up")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def measure_ingestion(bootstrap: str, events: int) -> dict[str, float]:
    topic, group = "bench-ingest", "bench-ingest-daemon"
    await setup_topic(bootstrap, topic, 1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    produce_started = time.perf_counter()
    try:
        pending = []
        for index in range(events):
            pending.append(await producer.send(topic, encode_event(f"consumers-{index % WORKLOADS}", index)))
        await producer.flush()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    produce_seconds = time.perf_counter() - produce_started

    # Start the daemon's group at offset 0 so that it reads the whole backlog.
    committer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    try:
        partition = TopicPartition(topic, 0)
        committer.assign([partition])
        await committer.commit({partition: OffsetAndMetadata(0, "")})
    finally:
        await committer.stop()

    config = app_config(bootstrap, topic, group, 0.2)
    daemon = Daemon(config)
    source = daemon.sources[0]
    assert isinstance(source, KafkaEventsSource)
    started = time.perf_counter()
    task = asyncio.create_task(source.run(daemon.submit_observation))
    await asyncio.wait_for(source.ready.wait(), 60)
    ready = time.perf_counter()
    while source.accepted < events:
        await asyncio.sleep(0.01)
    finished = time.perf_counter()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    return {
        "events": events,
        "produce_seconds": produce_seconds,
        "join_seconds": ready - started,
        "consume_seconds": finished - ready,
        "events_per_second": events / (finished - ready),
        "rejected": sum(source.rejections.counts.values()),
    }


async def measure_latency(bootstrap: str, bursts: int, debounce_seconds: float) -> dict[str, float]:
    topic, group = "bench-latency", "bench-latency-daemon"
    await setup_topic(bootstrap, topic, 1)
    config = app_config(bootstrap, topic, group, debounce_seconds)
    daemon = Daemon(config)
    source = daemon.sources[0]
    decided = asyncio.Event()
    decided_at: list[float] = []

    def on_decision(decision) -> None:
        if decision.workload == "consumers-0":
            decided_at.append(time.perf_counter())
            decided.set()

    daemon.decision_listeners.append(on_decision)
    daemon.triggers["consumers-0"] = asyncio.Event()
    tasks = [asyncio.create_task(daemon.trigger_loop("consumers-0")), asyncio.create_task(source.run(daemon.submit_observation))]
    await asyncio.wait_for(source.ready.wait(), 60)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    latencies = []
    try:
        for burst in range(bursts):
            decided.clear()
            # Alternate between two lag levels so each burst changes the decision.
            lag = 50_000 if burst % 2 == 0 else 5_000
            sent = time.perf_counter()
            for _ in range(BURST_EVENTS):
                await producer.send(topic, encode_event("consumers-0", lag))
            await producer.flush()
            await asyncio.wait_for(decided.wait(), 30)
            latencies.append(decided_at[-1] - sent)
            # Let the debounce window close so bursts do not merge.
            await asyncio.sleep(debounce_seconds + 0.1)
    finally:
        await producer.stop()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    latencies.sort()
    return {
        "bursts": bursts,
        "debounce_seconds": debounce_seconds,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "max_ms": 1000 * latencies[-1],
    }


async def main_async(args: argparse.Namespace, bootstrap: str) -> None:
    ingestion = await measure_ingestion(bootstrap, args.events)
    print("ingestion:", json.dumps({key: round(value, 3) for key, value in ingestion.items()}))
    latency = await measure_latency(bootstrap, args.bursts, args.debounce_seconds)
    print("latency:", json.dumps({key: round(value, 3) for key, value in latency.items()}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000, help="Events produced for the ingestion measurement.")
    parser.add_argument("--bursts", type=int, default=100, help="Bursts for the latency measurement.")
    parser.add_argument("--debounce-seconds", type=float, default=0.2, help="daemon.event_debounce_seconds (default 0.2, the config default).")
    parser.add_argument("--pin-cpu", type=int, default=None, help="Pin this process, not the broker, to one CPU after the broker has started.")
    args = parser.parse_args()
    if realstack.find_kafka_classpath() is None:
        sys.exit(f"Kafka not found; run {realstack.SETUP_COMMAND}")
    # Decision logs would dominate the measurement; keep warnings and errors only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    print(f"machine: {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as workdir, realstack.kafka_broker(workdir) as broker:
        if args.pin_cpu is not None:
            # The broker was started before this call, so it keeps every CPU.
            os.sched_setaffinity(0, {args.pin_cpu})
            print(f"this process pinned to CPU {args.pin_cpu}")
        asyncio.run(main_async(args, broker.bootstrap))


if __name__ == "__main__":
    main()
