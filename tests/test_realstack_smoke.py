"""Smoke tests for the launchers in tests/realstack.py: one real operation per server."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
import uuid

try:
    from tests import realstack
except ImportError:
    # Plain `pytest` puts only tests/ on sys.path when tests/ has no __init__.py.
    import realstack


def test_prometheus_backfill_range_query(tmp_path):
    realstack.require(realstack.find_prometheus(), "Prometheus")
    end = int(time.time()) // 60 * 60
    start = end - 10 * 60
    timestamps = range(start, end + 1, 60)
    history = "# TYPE smoke_queue_depth gauge\n"
    history += "".join(f'smoke_queue_depth{{topic="orders"}} {100 + i} {t}\n' for i, t in enumerate(timestamps))
    history += "# EOF\n"

    with realstack.prometheus_server(tmp_path, openmetrics_text=history) as prometheus:
        query = urllib.parse.urlencode(
            {"query": "smoke_queue_depth", "start": start, "end": end, "step": "60s"}
        )
        body = realstack.get_json(f"{prometheus.url}/api/v1/query_range?{query}")

    assert body["status"] == "success"
    series = body["data"]["result"]
    assert len(series) == 1
    assert series[0]["metric"] == {"__name__": "smoke_queue_depth", "topic": "orders"}
    assert [float(value) for _, value in series[0]["values"]] == [100.0 + i for i in range(11)]


def test_kafka_produce_consume_one_message(tmp_path):
    realstack.require(realstack.find_kafka_classpath(), "Kafka")
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def round_trip(bootstrap: str) -> bytes:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic("smoke", num_partitions=1, replication_factor=1)])
        finally:
            await admin.close()

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait("smoke", b"hello")
        finally:
            await producer.stop()

        consumer = AIOKafkaConsumer(
            "smoke", bootstrap_servers=bootstrap, group_id="smoke-group", auto_offset_reset="earliest"
        )
        await consumer.start()
        try:
            message = await asyncio.wait_for(consumer.getone(), timeout=30)
            return message.value
        finally:
            await consumer.stop()

    with realstack.kafka_broker(tmp_path) as broker:
        assert broker.bootstrap == f"127.0.0.1:{broker.port}"
        assert asyncio.run(round_trip(broker.bootstrap)) == b"hello"


def test_kube_apiserver_version_and_namespace(tmp_path):
    realstack.require(realstack.find_kube_binaries(), "kube-apiserver and etcd")
    namespace = f"smoke-{uuid.uuid4().hex[:8]}"

    with realstack.kube_apiserver(tmp_path) as kube:
        status, version = kube.request("GET", "/version")
        assert status == 200
        assert version["gitVersion"] == realstack.read_versions()["KUBE_VERSION"]

        status, created = kube.request(
            "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
        )
        assert status == 201, created
        assert created["metadata"]["name"] == namespace

        # A user without RoleBindings is authenticated but gets no access.
        status, denied = kube.request("GET", f"/api/v1/namespaces/{namespace}", token=kube.user_tokens["scaler"])
        assert status == 403, denied
