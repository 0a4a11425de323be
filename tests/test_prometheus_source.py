"""Tests of the Prometheus signal source against a real Prometheus on 127.0.0.1.

One server per module, backfilled with promtool from the NASA trace (14 days) and a
few small gauges that return NaN, +Inf, negative and several series. The outage test
stops and restarts that server, so it runs last.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import requests
import structlog

from runtime.config import PrometheusSourceConfig, parse_config
from runtime.daemon import Daemon, run_daemon
from runtime.model import Reason, Validity
from runtime.credentials import SecretError
from runtime import prometheus_source
from runtime.prometheus_source import MAX_POINTS_PER_SERIES, PrometheusSource, build_client, history_chunks

try:
    from tests import promdata, realstack
except ImportError:
    import promdata
    import realstack

DAY = 86400
HISTORY_SECONDS = 14 * DAY


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory):
    realstack.require(realstack.find_prometheus(), "Prometheus")
    end = int(time.time()) // 60 * 60 - 60
    recent = range(end - 600, end + 1, 60)
    document = promdata.openmetrics_document(
        promdata.trace_openmetrics_lines("nasa_requests_per_second", end, HISTORY_SECONDS),
        promdata.gauge_lines("pst_good", [({}, 42, t) for t in recent]),
        promdata.gauge_lines("pst_nan", [({}, "NaN", t) for t in recent]),
        promdata.gauge_lines("pst_inf", [({}, "+Inf", t) for t in recent]),
        promdata.gauge_lines("pst_negative", [({}, -5, t) for t in recent]),
        promdata.gauge_lines("pst_two", [({"shard": shard}, 1, t) for t in recent for shard in ("a", "b")]),
    )
    with realstack.prometheus_server(tmp_path_factory.mktemp("prometheus"), openmetrics_text=document) as server:
        yield server


def source_config(url: str, query: str, **overrides) -> PrometheusSourceConfig:
    values = {"kind": "prometheus", "url": url, "query": query, "poll_interval_seconds": 0.2,
              "timeout_seconds": 2, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 0.5}
    values.update(overrides)
    return PrometheusSourceConfig(**values)


def app_config(url: str, query: str) -> object:
    return parse_config({
        "daemon": {"actuator": "simulated", "event_debounce_seconds": 0},
        "budgets": {"default": {"max_hourly_cost": 100, "on_demand_price_per_replica_hour": 0.1, "spot_price_per_replica_hour": 0.03}},
        "workloads": [{
            "name": "web", "target": {"namespace": "ns", "name": "web"}, "min_replicas": 1, "max_replicas": 50,
            "capacity_per_replica": 1.0, "startup_lead_seconds": 0, "forecaster": {"model": "none"},
            "signals": [{"name": "requests", "role": "load", "stale_after_seconds": 30, "source": {
                "kind": "prometheus", "url": url, "query": query, "poll_interval_seconds": 0.2,
                "timeout_seconds": 2, "backoff_initial_seconds": 0.2, "backoff_max_seconds": 0.5,
                "history_window_seconds": 0,
            }}],
        }],
    })


def test_history_chunks_respect_point_limit():
    chunks = history_chunks(0, HISTORY_SECONDS, 60)
    assert len(chunks) == 2
    for start, end in chunks:
        assert (end - start) / 60 + 1 <= MAX_POINTS_PER_SERIES
    # Consecutive chunks neither overlap nor leave a gap of more than one step.
    assert chunks[1][0] == chunks[0][1] + 60
    assert chunks[-1][1] == HISTORY_SECONDS


async def test_history_backfill_fourteen_days(prometheus):
    config = source_config(prometheus.url, "nasa_requests_per_second", history_window_seconds=HISTORY_SECONDS)
    source = PrometheusSource("web", "requests", config, stale_after_seconds=120, is_load_signal=True)
    received = []
    await source.load_history(lambda workload, timestamps, values: received.append((workload, timestamps, values)))
    assert len(received) == 1
    workload, timestamps, values = received[0]
    assert workload == "web"
    # 14 days at 60 s steps; the trace has small gaps that Prometheus' 5-minute lookback fills.
    assert len(values) > 0.95 * HISTORY_SECONDS / 60
    assert np.all(np.diff(timestamps) > 0)
    assert np.all(values >= 0)


async def test_history_skipped_for_backlog_signal(prometheus):
    config = source_config(prometheus.url, "nasa_requests_per_second")
    source = PrometheusSource("web", "lag", config, stale_after_seconds=120, is_load_signal=False)
    received = []
    await source.load_history(lambda *args: received.append(args))
    assert received == []


@pytest.mark.parametrize(
    ("query", "validity"),
    [
        ("pst_good", Validity.OK),
        ("pst_nan", Validity.NOT_FINITE),
        ("pst_inf", Validity.NOT_FINITE),
        ("pst_negative", Validity.NEGATIVE),
        ("pst_two", Validity.AMBIGUOUS),
        ("pst_absent_metric", Validity.MISSING),
    ],
)
async def test_instant_query_validity(prometheus, query, validity):
    source = PrometheusSource("web", "requests", source_config(prometheus.url, query), stale_after_seconds=600, is_load_signal=True)
    observation = await source.poll_once()
    assert observation.validity is validity, observation.detail
    if validity is Validity.OK:
        assert observation.value == 42.0
    else:
        assert np.isnan(observation.value)
        assert "web/requests" in observation.detail


async def test_stale_sample_is_unknown(prometheus):
    # Prometheus stamps an instant result with the evaluation time, so the source's
    # clock is moved an hour ahead to make the sample older than the limit.
    source = PrometheusSource("web", "requests", source_config(prometheus.url, "pst_good"), stale_after_seconds=600, is_load_signal=True)
    source.clock = lambda: time.time() + 3600
    observation = await source.poll_once()
    assert observation.validity is Validity.STALE


def test_secret_from_missing_env_names_variable(monkeypatch):
    monkeypatch.delenv("AUTOSCALER_TEST_TOKEN", raising=False)
    config = source_config("http://127.0.0.1:9", "up", bearer_token_env="AUTOSCALER_TEST_TOKEN")
    with pytest.raises(SecretError, match="AUTOSCALER_TEST_TOKEN"):
        build_client(config)


def use_fresh_logger(monkeypatch) -> None:
    """Give the source module a new logger proxy, so capture_logs records its events.

    configure_logging caches loggers on first use, so a proxy used by an earlier test
    keeps writing to that test's stream and bypasses capture_logs.
    """
    monkeypatch.setattr(prometheus_source, "log", structlog.get_logger("agent_autoscaler.prometheus"))


async def test_bearer_token_never_logged(monkeypatch, tmp_path):
    token = "s3cret-token-value"
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    port = realstack.free_port()
    config = source_config(f"http://127.0.0.1:{port}", "up", bearer_token_file=token_file)
    source = PrometheusSource("web", "requests", config, stale_after_seconds=60, is_load_signal=True)
    assert source.client.headers["Authorization"] == f"Bearer {token}"
    seen = []
    with structlog.testing.capture_logs() as logs:
        use_fresh_logger(monkeypatch)
        task = asyncio.create_task(source.run(lambda *args: seen.append(args)))
        while source.failures < 2:
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert all(token not in repr(entry) for entry in logs)
    assert all(token not in repr(item) for item in seen)
    # Only the first failure of a streak is logged; repeats are counted.
    failures_logged = [entry for entry in logs if entry["event"].startswith("prometheus query failed")]
    assert len(failures_logged) == 1
    assert seen[-1][2].validity is Validity.SOURCE_DOWN


async def wait_for(predicate, timeout_seconds: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


async def test_outage_holds_then_recovers(prometheus):
    # Load 42 units/s at 1 unit/s per replica and 0.8 utilization needs 53 replicas, capped at 50.
    config = app_config(prometheus.url, "pst_good")
    daemon = Daemon(config)
    daemon.sources = [PrometheusSource("web", "requests", config.workloads[0].signals[0].source, 30, True)]
    task = asyncio.create_task(daemon.sources[0].run(daemon.submit_observation))
    try:
        runtime = daemon.runtimes["web"]
        await wait_for(lambda: "requests" in runtime.latest and runtime.latest["requests"].validity is Validity.OK)
        before = await daemon.evaluate("web")
        assert before.invalid_signals == ()
        assert before.final_replicas > 1

        prometheus.stop()
        await wait_for(lambda: runtime.latest["requests"].validity is Validity.SOURCE_DOWN)
        during = await daemon.evaluate("web")
        assert during.invalid_signals == ("requests",)
        assert during.reason is Reason.HOLDING_LAST_SAFE_STATE
        assert during.final_replicas >= before.final_replicas

        prometheus.start()
        await wait_for(lambda: runtime.latest["requests"].validity is Validity.OK)
        after = await daemon.evaluate("web")
        assert after.invalid_signals == ()
        assert daemon.sources[0].failures >= 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if not prometheus.process.running():
            prometheus.start()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"bearer_token_env": "TOKEN", "bearer_token_file": "/run/token"}, "set at most one of"),
        ({"bearer_token_env": "TOKEN", "basic_auth_username": "u", "basic_auth_password_env": "PASSWORD"}, "either a bearer token or basic auth"),
        ({"basic_auth_username": "u"}, "basic auth needs"),
        ({"headers": {"authorization": "Bearer x"}}, "must not contain Authorization"),
        ({"backoff_initial_seconds": 90, "backoff_max_seconds": 60}, "exceeds backoff_max_seconds"),
        ({"url": "prometheus:9090"}, "should match pattern"),
    ],
)
def test_config_rejects_invalid_settings(overrides, message):
    from runtime.config import ConfigError

    source = {"kind": "prometheus", "url": "http://127.0.0.1:9090", "query": "up", **overrides}
    with pytest.raises(ConfigError) as caught:
        app_config_with_source(source)
    assert message in str(caught.value)


def app_config_with_source(source: dict) -> object:
    return parse_config({
        "budgets": {"default": {"max_hourly_cost": 100, "on_demand_price_per_replica_hour": 0.1, "spot_price_per_replica_hour": 0.03}},
        "workloads": [{
            "name": "web", "target": {"namespace": "ns", "name": "web"}, "max_replicas": 5, "capacity_per_replica": 1.0,
            "signals": [{"name": "requests", "role": "load", "source": source}],
        }],
    })


async def test_run_daemon_rejects_unreadable_secret(monkeypatch):
    monkeypatch.delenv("AUTOSCALER_TEST_TOKEN", raising=False)
    config = app_config_with_source({"kind": "prometheus", "url": "http://127.0.0.1:9", "query": "up", "bearer_token_env": "AUTOSCALER_TEST_TOKEN"})
    assert await run_daemon(config, duration_seconds=1, serve_metrics=False) == 3


@pytest.fixture(scope="module")
def secured_prometheus(tmp_path_factory):
    """A second Prometheus that serves HTTPS with a throwaway CA and requires basic auth."""
    binaries = realstack.find_prometheus()
    realstack.require(binaries, "Prometheus")
    bcrypt = pytest.importorskip("bcrypt")

    workdir = tmp_path_factory.mktemp("prometheus-tls")
    cert_dir = workdir / "certs"
    realstack.write_kube_certificates(cert_dir)
    password = "correct-horse-battery"
    password_hash = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()
    web_config = workdir / "web.yml"
    web_config.write_text(
        "tls_server_config:\n"
        f"  cert_file: {cert_dir / 'apiserver.crt'}\n"
        f"  key_file: {cert_dir / 'apiserver.key'}\n"
        "basic_auth_users:\n"
        f"  scaler: '{password_hash}'\n"
    )

    config_file = workdir / "prometheus.yml"
    config_file.write_text(realstack.PROMETHEUS_CONFIG)
    port = realstack.free_port()
    process = realstack.ServerProcess(
        "prometheus-tls",
        [binaries[0], f"--config.file={config_file}", f"--storage.tsdb.path={workdir / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web_config}"],
        workdir / "prometheus.log",
        # /-/ready needs credentials here, so an open port is the readiness signal.
        is_ready=lambda: realstack.port_accepts(port),
        startup_timeout_s=30,
        stop_timeout_s=20,
    )
    process.start()
    try:
        yield {"url": f"https://127.0.0.1:{port}", "ca_file": cert_dir / "ca.crt", "password": password, "workdir": workdir}
    finally:
        process.stop()


async def poll_until_answer(source: PrometheusSource, timeout_seconds: float = 20.0):
    """Poll until the server responds (it may still be starting); return the observation or the last error."""
    deadline = time.monotonic() + timeout_seconds
    while True:
        try:
            return await source.poll_once()
        except Exception as exc:  # noqa: BLE001 - the caller asserts on the type
            if time.monotonic() > deadline or not isinstance(exc, OSError) or "Connection refused" not in str(exc):
                return exc
            await asyncio.sleep(0.2)


async def test_tls_and_basic_auth_accepted(secured_prometheus):
    password_file = secured_prometheus["workdir"] / "password"
    password_file.write_text(secured_prometheus["password"] + "\n")
    config = source_config(
        secured_prometheus["url"], "vector(7)", tls_ca_file=secured_prometheus["ca_file"],
        basic_auth_username="scaler", basic_auth_password_file=password_file,
    )
    source = PrometheusSource("web", "requests", config, stale_after_seconds=60, is_load_signal=True)
    result = await poll_until_answer(source)
    assert not isinstance(result, Exception), result
    assert result.validity is Validity.OK
    assert result.value == 7.0


async def test_wrong_password_marks_source_down(secured_prometheus, monkeypatch):
    monkeypatch.setenv("AUTOSCALER_TEST_PROMETHEUS_PASSWORD", "wrong-password-value")
    config = source_config(
        secured_prometheus["url"], "vector(7)", tls_ca_file=secured_prometheus["ca_file"],
        basic_auth_username="scaler", basic_auth_password_env="AUTOSCALER_TEST_PROMETHEUS_PASSWORD",
    )
    source = PrometheusSource("web", "requests", config, stale_after_seconds=60, is_load_signal=True)
    seen = []
    with structlog.testing.capture_logs() as logs:
        use_fresh_logger(monkeypatch)
        task = asyncio.create_task(source.run(lambda *args: seen.append(args)))
        await wait_for(lambda: source.failures >= 1)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert seen[-1][2].validity is Validity.SOURCE_DOWN
    failures_logged = [entry for entry in logs if entry["event"].startswith("prometheus query failed")]
    assert len(failures_logged) == 1, logs
    assert "401" in failures_logged[0]["error"], failures_logged
    assert all("wrong-password-value" not in repr(entry) for entry in logs)


async def test_unknown_ca_marks_source_down(secured_prometheus):
    # Without tls_ca_file the system store is used, which does not know the test CA.
    config = source_config(secured_prometheus["url"], "vector(7)")
    source = PrometheusSource("web", "requests", config, stale_after_seconds=60, is_load_signal=True)
    result = await poll_until_answer(source)
    assert isinstance(result, requests.exceptions.SSLError)


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (Exception("HTTP Status Code 404 (b'404 page not found')"), "does not answer like a Prometheus server"),
        (ValueError("Expecting value: line 1 column 1 (char 0)"), "does not answer like a Prometheus server"),
        (Exception("HTTP Status Code 401 (b'Unauthorized')"), "refused the credentials"),
        (Exception("HTTP Status Code 400 (b'parse error')"), "check its PromQL syntax"),
        (ConnectionError("Connection refused"), "reachable from the daemon"),
    ],
    ids=["not-found", "not-json", "unauthorized", "bad-query", "refused"],
)
def test_failure_hint_names_fix(error, expected):
    from runtime.prometheus_source import _failure_hint

    assert expected in _failure_hint(error)
