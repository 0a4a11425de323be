"""Launchers for real Prometheus, Kafka and Kubernetes API servers on 127.0.0.1.

Each launcher is a context manager that starts the server as a child process
on free loopback ports, waits until it is ready, yields a handle and stops the
server by its PID on exit. The handles have ``stop()`` and ``start()`` so tests
can simulate an outage and a restart on the same ports and data directories.

The binaries come from ``scripts/realstack/setup_all.sh``: Prometheus from
Debian's packages, the Kafka jars and the kube-apiserver and etcd binaries from
the cache directory ``$AUTOSCALER_CACHE`` (default ``~/.cache/agent-autoscaler``).
The ``find_*`` functions return None when a component is missing, and
``require()`` turns that into a skip, or into a failure when ``CI`` is set.

This module does not depend on pytest, so benchmark scripts can import it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Callable, Iterator, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
REALSTACK_DIR = REPO_ROOT / "scripts" / "realstack"
SETUP_COMMAND = "scripts/realstack/setup_all.sh"

LOG_TAIL_CHARS = 4000
POLL_INTERVAL_S = 0.1

# urllib honours http_proxy and related variables, but loopback requests must not use a proxy.
_DIRECT_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# ---------------------------------------------------------------------------
# Locating the binaries
# ---------------------------------------------------------------------------


def read_versions() -> dict[str, str]:
    """Parse the NAME=value lines of scripts/realstack/versions.env."""
    versions = {}
    for line in (REALSTACK_DIR / "versions.env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            name, value = line.split("=", 1)
            versions[name.strip()] = value.strip()
    return versions


def cache_dir() -> Path:
    """Return the directory where the setup scripts put downloads and builds."""
    configured = os.environ.get("AUTOSCALER_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "agent-autoscaler"


def running_in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def find_prometheus() -> tuple[str, str] | None:
    """Return the paths of ``prometheus`` and ``promtool``, or None if either is missing."""
    prometheus = shutil.which("prometheus")
    promtool = shutil.which("promtool")
    if prometheus is None or promtool is None:
        return None
    return prometheus, promtool


def find_java() -> str | None:
    """Return the java binary from JAVA_HOME, else from PATH. Kafka 4.x needs Java 17+."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home:
        candidate = Path(java_home) / "bin" / "java"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("java")


def find_kafka_classpath() -> str | None:
    """Return the broker classpath (``<libs>/*``), or None if the jars or java are missing."""
    kafka_home = cache_dir() / f"kafka-{read_versions()['KAFKA_VERSION']}"
    if not (kafka_home / ".complete").is_file() or find_java() is None:
        return None
    return str(kafka_home / "libs" / "*")


def find_kube_binaries() -> tuple[Path, Path] | None:
    """Return the paths of ``kube-apiserver`` and ``etcd``, or None if either is missing."""
    bin_dir = cache_dir() / f"kube-{read_versions()['KUBE_VERSION']}" / "bin"
    apiserver = bin_dir / "kube-apiserver"
    etcd = bin_dir / "etcd"
    if not (os.access(apiserver, os.X_OK) and os.access(etcd, os.X_OK)):
        return None
    return apiserver, etcd


def require(found: object, component: str) -> None:
    """Skip the calling test when ``found`` is None, or fail it when CI is set.

    CI always runs the setup script, so a missing server there is a broken
    setup and must not pass silently as a skip.
    """
    if found is not None:
        return
    import pytest

    message = f"{component} not found. Run {SETUP_COMMAND} to install it"
    if running_in_ci():
        pytest.fail(message + " (CI is set, so a missing server fails the test)")
    pytest.skip(message)


# ---------------------------------------------------------------------------
# Process handling shared by the launchers
# ---------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when this function ran."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_ok(url: str, ssl_context: ssl.SSLContext | None = None) -> bool:
    """Return True if a GET of ``url`` returns status 200."""
    try:
        if ssl_context is None:
            response = _DIRECT_OPENER.open(url, timeout=2)
        else:
            https = urllib.request.HTTPSHandler(context=ssl_context)
            opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), https)
            response = opener.open(url, timeout=2)
        with response:
            return response.status == 200
    except (OSError, urllib.error.URLError):
        return False


def get_json(url: str, timeout_s: float = 10) -> object:
    """Send a GET request to a loopback HTTP server, bypassing proxies, and decode the JSON body."""
    with _DIRECT_OPENER.open(url, timeout=timeout_s) as response:
        return json.load(response)


def read_rss_bytes(pid: int) -> int | None:
    """Return the resident set size of a running process from /proc, or None."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return None


class ServerProcess:
    """One server child process with its log file, started and stopped by PID.

    ``start()`` appends to the same log file on every start, and readiness
    checks only read the part written since the latest start.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path,
        is_ready: Callable[[], bool],
        startup_timeout_s: float,
        stop_timeout_s: float,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.is_ready = is_ready
        self.startup_timeout_s = startup_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self.env = env
        self.startup_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_since_start(self) -> str:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(self._log_offset)
                return log.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_tail(self) -> str:
        return self.log_since_start()[-LOG_TAIL_CHARS:]

    def start(self) -> None:
        """Start the process and wait until ``is_ready`` returns True.

        Raises RuntimeError with the end of the log if the process exits or is
        not ready within ``startup_timeout_s``. On a timeout the process is
        stopped before the error is raised.
        """
        if self.running():
            raise RuntimeError(f"{self.name} is already running with PID {self.pid}")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0

        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            # A new process session (setsid) keeps a Ctrl-C in the terminal from reaching the
            # server, so the launcher's own stop() runs and shuts it down cleanly.
            self._process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )

        deadline = began + self.startup_timeout_s
        while True:
            exit_code = self._process.poll()
            if exit_code is not None:
                self._process = None
                raise RuntimeError(
                    f"{self.name} exited with code {exit_code} during startup. "
                    f"End of {self.log_path}:\n{self.log_tail()}"
                )
            if self.is_ready():
                self.startup_s = time.monotonic() - began
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"{self.name} was not ready after {self.startup_timeout_s:.0f} s. "
                    f"End of {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(POLL_INTERVAL_S)

    def stop(self) -> None:
        """Send SIGTERM to the process, then SIGKILL after ``stop_timeout_s``."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def rss_bytes(self) -> int | None:
        return None if self.pid is None else read_rss_bytes(self.pid)


def run_checked(argv: Sequence[str], description: str, timeout_s: float = 120) -> str:
    """Run a short setup command and return its output. Raise RuntimeError if it fails."""
    result = subprocess.run(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        timeout=timeout_s,
        check=False,
    )
    output = result.stdout.decode("utf-8", "replace")
    if result.returncode != 0:
        raise RuntimeError(
            f"{description} failed with exit code {result.returncode}: {' '.join(map(str, argv))}\n"
            f"{output[-LOG_TAIL_CHARS:]}"
        )
    return output


# ---------------------------------------------------------------------------
# Prometheus
# ---------------------------------------------------------------------------

PROMETHEUS_CONFIG = """\
# Written by tests/realstack.py: no scrape targets, no alerting, no rules.
global:
  scrape_interval: 15s
  evaluation_interval: 15s
scrape_configs: []
"""


class PrometheusServer:
    """Handle of a running Prometheus: ``url``, ``pid``, ``stop()`` and ``start()``."""

    def __init__(self, process: ServerProcess, port: int, data_dir: Path) -> None:
        self.process = process
        self.port = port
        self.data_dir = data_dir
        self.url = f"http://127.0.0.1:{port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()


def backfill_openmetrics(promtool: str, openmetrics_file: Path, data_dir: Path) -> None:
    """Write TSDB blocks for an OpenMetrics file into ``data_dir``.

    The file needs ``# TYPE`` lines, timestamps in seconds, samples of each
    series in ascending time order and a final ``# EOF`` line. promtool 2.42
    drops out-of-order samples without an error.
    """
    run_checked(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", "-q", str(openmetrics_file), str(data_dir)],
        "promtool backfill",
    )


@contextlib.contextmanager
def prometheus_server(
    workdir: Path | str,
    openmetrics_text: str | os.PathLike[str] | None = None,
    startup_timeout_s: float = 30,
) -> Iterator[PrometheusServer]:
    """Start Prometheus on a free 127.0.0.1 port with its data under ``workdir``.

    ``openmetrics_text`` is either OpenMetrics text (a ``str``) or the path of
    a file with it (a ``Path``). Its samples are backfilled into the data
    directory before the first start, so range queries see them at once.
    Retention is 3650 days because Prometheus counts retention back from the
    newest block, and a shorter one would delete old backfilled history.
    """
    binaries = find_prometheus()
    if binaries is None:
        raise RuntimeError(f"prometheus or promtool not found on PATH. Run {SETUP_COMMAND}")
    prometheus, promtool = binaries

    workdir = Path(workdir)
    data_dir = workdir / "prometheus-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config_file = workdir / "prometheus.yml"
    config_file.write_text(PROMETHEUS_CONFIG)

    if openmetrics_text is not None:
        if isinstance(openmetrics_text, str):
            openmetrics_file = workdir / "history.om"
            openmetrics_file.write_text(openmetrics_text)
        else:
            openmetrics_file = Path(openmetrics_text)
        backfill_openmetrics(promtool, openmetrics_file, data_dir)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        prometheus,
        f"--config.file={config_file}",
        f"--storage.tsdb.path={data_dir}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--storage.tsdb.retention.time=3650d",
        # Debian's 2.42 build locks the data directory only with this flag.
        "--storage.tsdb.use-lockfile",
        "--web.enable-lifecycle",
        "--web.enable-admin-api",
    ]
    process = ServerProcess(
        "prometheus",
        argv,
        workdir / "prometheus.log",
        is_ready=lambda: http_ok(url + "/-/ready"),
        startup_timeout_s=startup_timeout_s,
        stop_timeout_s=20,
    )
    server = PrometheusServer(process, port, data_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()


# ---------------------------------------------------------------------------
# Kafka
# ---------------------------------------------------------------------------

KAFKA_JVM_OPTIONS = [
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
]
KAFKA_STARTED_MESSAGE = "Kafka Server started"


def kafka_server_properties(broker_port: int, controller_port: int, log_dir: Path) -> str:
    """Return server.properties for one combined broker and controller node.

    The controller quorum is static (``controller.quorum.voters``), so the
    storage format step needs no ``--standalone`` flag. Internal topics ask for
    one replica because there is only one broker, otherwise consumer groups
    never find a coordinator.
    """
    return f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller_port}
listeners=PLAINTEXT://127.0.0.1:{broker_port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{broker_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dir}
num.partitions=1
auto.create.topics.enable=false
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
"""


class KafkaBroker:
    """Handle of a running broker: ``bootstrap``, ``pid``, ``stop()`` and ``start()``."""

    def __init__(self, process: ServerProcess, port: int, controller_port: int, cluster_id: str) -> None:
        self.process = process
        self.port = port
        self.controller_port = controller_port
        self.cluster_id = cluster_id
        self.bootstrap = f"127.0.0.1:{port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()


def new_kafka_cluster_id() -> str:
    """Return a random cluster id: a UUID in unpadded base64url, 22 characters."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


@contextlib.contextmanager
def kafka_broker(workdir: Path | str, startup_timeout_s: float = 90) -> Iterator[KafkaBroker]:
    """Start a single-node KRaft Kafka broker on free 127.0.0.1 ports.

    Formats new storage under ``workdir`` and starts ``kafka.Kafka``. The
    broker counts as ready when its port accepts connections and the log
    contains the "Kafka Server started" line written after that start.
    """
    classpath = find_kafka_classpath()
    java = find_java()
    if classpath is None or java is None:
        raise RuntimeError(f"Kafka jars in {cache_dir()} or java not found. Run {SETUP_COMMAND}")

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    broker_port = free_port()
    controller_port = free_port()
    while controller_port == broker_port:
        controller_port = free_port()

    properties_file = workdir / "server.properties"
    properties_file.write_text(kafka_server_properties(broker_port, controller_port, workdir / "kraft-logs"))
    jvm_options = KAFKA_JVM_OPTIONS + [
        f"-Dlog4j2.configurationFile={REALSTACK_DIR / 'kafka' / 'log4j2.yaml'}",
        f"-Dkafka.logs.dir={workdir / 'logs'}",
    ]

    cluster_id = new_kafka_cluster_id()
    run_checked(
        [java, *jvm_options, "-cp", classpath, "kafka.tools.StorageTool", "format",
         "-t", cluster_id, "-c", str(properties_file)],
        "Kafka storage format",
    )

    process = ServerProcess(
        "kafka",
        [java, *jvm_options, "-cp", classpath, "kafka.Kafka", str(properties_file)],
        workdir / "kafka.log",
        is_ready=lambda: port_accepts(broker_port) and KAFKA_STARTED_MESSAGE in process.log_since_start(),
        startup_timeout_s=startup_timeout_s,
        # A controlled shutdown on SIGTERM can take several seconds.
        stop_timeout_s=30,
    )
    broker = KafkaBroker(process, broker_port, controller_port, cluster_id)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


# ---------------------------------------------------------------------------
# Kubernetes API server
# ---------------------------------------------------------------------------

KUBE_USERS = ("scaler", "scaler-b")


def write_kube_certificates(cert_dir: Path) -> None:
    """Create a throwaway CA, a serving certificate for 127.0.0.1 and a service-account key pair."""
    cert_dir.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        run_checked(["openssl", *args], "openssl " + args[0])

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-keyout", str(cert_dir / "ca.key"), "-out", str(cert_dir / "ca.crt"),
            "-subj", "/CN=autoscaler-test-ca")
    openssl("req", "-newkey", "rsa:2048", "-nodes",
            "-keyout", str(cert_dir / "apiserver.key"), "-out", str(cert_dir / "apiserver.csr"),
            "-subj", "/CN=kube-apiserver")
    extensions = cert_dir / "apiserver.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes.default.svc\n"
        "extendedKeyUsage=serverAuth\n"
    )
    openssl("x509", "-req", "-days", "2", "-in", str(cert_dir / "apiserver.csr"),
            "-CA", str(cert_dir / "ca.crt"), "-CAkey", str(cert_dir / "ca.key"), "-CAcreateserial",
            "-extfile", str(extensions), "-out", str(cert_dir / "apiserver.crt"))
    openssl("genrsa", "-out", str(cert_dir / "sa.key"), "2048")
    openssl("rsa", "-in", str(cert_dir / "sa.key"), "-pubout", "-out", str(cert_dir / "sa.pub"))


def write_token_file(path: Path, admin_token: str, user_tokens: dict[str, str]) -> None:
    """Write a static token file: ``token,user,uid[,"group,..."]`` per line.

    Users without groups get no fourth column, because an empty one would put
    them in a group named "".
    """
    lines = [f'{admin_token},admin,uid-admin,"system:masters"']
    lines += [f"{token},{user},uid-{user}" for user, token in user_tokens.items()]
    path.write_text("\n".join(lines) + "\n")


class KubeApiServer:
    """Handle of a running kube-apiserver and its etcd.

    ``url``, ``ca_file``, ``admin_token`` (group system:masters, which bypasses
    RBAC) and ``user_tokens`` (user name to token, no permissions until a test
    binds a Role) describe how to connect.
    """

    def __init__(
        self,
        apiserver: ServerProcess,
        etcd: ServerProcess,
        port: int,
        ca_file: Path,
        admin_token: str,
        user_tokens: dict[str, str],
    ) -> None:
        self.apiserver = apiserver
        self.etcd = etcd
        self.port = port
        self.url = f"https://127.0.0.1:{port}"
        self.ca_file = ca_file
        self.admin_token = admin_token
        self.user_tokens = user_tokens

    @property
    def pid(self) -> int | None:
        return self.apiserver.pid

    @property
    def etcd_pid(self) -> int | None:
        return self.etcd.pid

    @property
    def pids(self) -> list[int]:
        return [pid for pid in (self.apiserver.pid, self.etcd.pid) if pid is not None]

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def request(self, method: str, path: str, body: object = None, token: str | None = None,
                content_type: str = "application/json") -> tuple[int, dict]:
        """Send one API request and return the status and the decoded JSON body.

        Uses the admin token unless ``token`` is given. HTTP errors are
        returned, not raised, so tests can assert on 403 or 409.
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Authorization", f"Bearer {token or self.admin_token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", content_type)
        opener = urllib.request.build_opener(
            urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=self.ssl_context())
        )
        try:
            with opener.open(request, timeout=30) as response:
                return response.status, json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            payload = error.read()
            try:
                return error.code, json.loads(payload or b"{}")
            except json.JSONDecodeError:
                return error.code, {"message": payload.decode("utf-8", "replace")}

    def start(self) -> None:
        """Start etcd, then kube-apiserver, on the same ports and data as before."""
        if not self.etcd.running():
            self.etcd.start()
        self.apiserver.start()

    def stop(self) -> None:
        """Stop kube-apiserver, then etcd."""
        try:
            self.apiserver.stop()
        finally:
            self.etcd.stop()


@contextlib.contextmanager
def kube_apiserver(workdir: Path | str, startup_timeout_s: float = 90) -> Iterator[KubeApiServer]:
    """Start etcd and kube-apiserver on free 127.0.0.1 ports, with RBAC and token auth.

    No controller-manager runs, so nothing reacts to writes: Deployments get
    no ReplicaSets or Pods, and deleted namespaces stay Terminating.
    """
    binaries = find_kube_binaries()
    if binaries is None:
        raise RuntimeError(f"kube-apiserver or etcd not found in {cache_dir()}. Run {SETUP_COMMAND}")
    apiserver_binary, etcd_binary = binaries

    workdir = Path(workdir)
    cert_dir = workdir / "certs"
    write_kube_certificates(cert_dir)
    admin_token = secrets.token_hex(16)
    user_tokens = {user: secrets.token_hex(16) for user in KUBE_USERS}
    token_file = workdir / "tokens.csv"
    write_token_file(token_file, admin_token, user_tokens)

    etcd_client_port = free_port()
    etcd_peer_port = free_port()
    apiserver_port = free_port()
    etcd_client_url = f"http://127.0.0.1:{etcd_client_port}"
    etcd_peer_url = f"http://127.0.0.1:{etcd_peer_port}"

    etcd = ServerProcess(
        "etcd",
        [
            str(etcd_binary),
            "--name=test",
            f"--data-dir={workdir / 'etcd-data'}",
            f"--listen-client-urls={etcd_client_url}",
            f"--advertise-client-urls={etcd_client_url}",
            f"--listen-peer-urls={etcd_peer_url}",
            f"--initial-advertise-peer-urls={etcd_peer_url}",
            f"--initial-cluster=test={etcd_peer_url}",
            # Test data is thrown away, so skipping fsync is safe and much faster.
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        workdir / "etcd.log",
        is_ready=lambda: http_ok(etcd_client_url + "/health"),
        startup_timeout_s=30,
        stop_timeout_s=20,
    )

    server_ssl = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
    apiserver_url = f"https://127.0.0.1:{apiserver_port}"
    apiserver = ServerProcess(
        "kube-apiserver",
        [
            str(apiserver_binary),
            f"--etcd-servers={etcd_client_url}",
            "--bind-address=127.0.0.1",
            # Without a default route the server cannot pick an address on its own.
            "--advertise-address=127.0.0.1",
            f"--secure-port={apiserver_port}",
            f"--cert-dir={cert_dir}",
            f"--tls-cert-file={cert_dir / 'apiserver.crt'}",
            f"--tls-private-key-file={cert_dir / 'apiserver.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--service-account-key-file={cert_dir / 'sa.pub'}",
            f"--service-account-signing-key-file={cert_dir / 'sa.key'}",
            "--service-cluster-ip-range=10.0.0.0/24",
            f"--token-auth-file={token_file}",
            "--authorization-mode=RBAC",
            # Nothing creates the default ServiceAccount without a controller-manager.
            "--disable-admission-plugins=ServiceAccount",
            "--profiling=false",
        ],
        workdir / "kube-apiserver.log",
        is_ready=lambda: http_ok(apiserver_url + "/readyz", server_ssl),
        startup_timeout_s=startup_timeout_s,
        stop_timeout_s=20,
    )

    server = KubeApiServer(apiserver, etcd, apiserver_port, cert_dir / "ca.crt", admin_token, user_tokens)
    try:
        server.start()
        yield server
    finally:
        server.stop()
