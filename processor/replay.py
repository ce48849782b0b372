"""Replay a data set into Kafka: read events with a source adapter and produce them to a topic.

Used by the ``processor replay`` subcommand and by tests. Events are JSON (compact, UTF-8) keyed
by account or entity, produced by an idempotent producer, optionally paced to a fixed rate.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from tqdm import tqdm

from processor.errors import ProcessorError
from processor.sources import EVENT_TYPES, SOURCES, SourceEvent, open_source

logger = logging.getLogger(__name__)

BOOTSTRAP_ENV = "PROCESSOR_BOOTSTRAP_SERVERS"
DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_TOPICS = {"transaction": "transactions.raw", "document": "documents.raw"}
PRODUCER_DEFAULTS = {"enable.idempotence": "true", "linger.ms": "5"}
CONNECT_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 60.0
MAX_BURST_S = 1.0
"""The pacer lets a late producer catch up by at most this much time's worth of events."""


class ReplayError(ProcessorError):
    """A replay could not run; the message says why."""


class BrokerUnavailableError(ReplayError):
    """The Kafka bootstrap servers did not answer."""


@dataclass
class ReplayStats:
    """Outcome of a replay: messages acknowledged by the broker, failed, and wall time."""

    sent: int
    failed: int
    seconds: float


@dataclass
class _Deliveries:
    sent: int = 0
    failed: int = 0
    first_errors: list[str] = field(default_factory=list)

    def __call__(self, error: KafkaError | None, message: Message) -> None:
        if error is None:
            self.sent += 1
            return
        self.failed += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(f"{message.topic()}: {error}")


class _Pacer:
    """Sleep so that event ``n`` leaves no earlier than ``start + n / rate`` seconds."""

    def __init__(self, rate: float | None) -> None:
        if rate is not None and rate <= 0:
            raise ValueError("rate must be a positive number of events per second")
        self.rate = rate
        self.start = time.monotonic()
        self.count = 0

    def wait(self, producer: Producer) -> None:
        if self.rate is None:
            return
        due = self.start + self.count / self.rate
        now = time.monotonic()
        if now - due > MAX_BURST_S:  # far behind: do not burst to catch up, restart the clock
            self.start, self.count = now, 0
        while (remaining := due - time.monotonic()) > 0:
            producer.poll(min(remaining, 0.1))
        self.count += 1


def encode_event(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of an event dict."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def replay(
    events: Iterable[SourceEvent],
    topic: str,
    producer_config: dict[str, str],
    rate: float | None = None,
    total: int | None = None,
    progress: bool = True,
    extra_records: Iterable[tuple[bytes | None, bytes | None]] = (),
) -> ReplayStats:
    """Produce ``events`` to ``topic``, then the raw ``(key, value)`` ``extra_records``.

    ``producer_config`` is librdkafka configuration (at least ``bootstrap.servers``); it is laid
    over ``enable.idempotence=true`` and ``linger.ms=5``. ``rate`` is in events per second
    (``None``: as fast as possible); ``total`` only sizes the progress bar. Waits for every
    delivery report. Raises :class:`BrokerUnavailableError` when the broker does not answer.
    """
    config = {**PRODUCER_DEFAULTS, **producer_config}
    producer = Producer({**config, "logger": logger, "error_cb": _log_client_error})
    _check_broker(producer, str(config.get("bootstrap.servers", "")))
    deliveries = _Deliveries()
    pacer = _Pacer(rate)
    started = time.monotonic()
    disable = None if progress else True  # None: tqdm shows the bar only when stderr is a TTY
    with tqdm(total=total, unit="ev", desc=f"replay -> {topic}", disable=disable) as bar:
        try:
            for item in events:
                pacer.wait(producer)
                value = encode_event(item.event)
                _produce(producer, topic, item.key.encode("utf-8"), value, deliveries)
                bar.update()
            for key, value in extra_records:
                pacer.wait(producer)
                _produce(producer, topic, key, value, deliveries)
        finally:
            undelivered = producer.flush(FLUSH_TIMEOUT_S)
    stats = ReplayStats(
        sent=deliveries.sent,
        failed=deliveries.failed + undelivered,
        seconds=time.monotonic() - started,
    )
    _report(stats, topic, deliveries.first_errors, undelivered)
    return stats


def _check_broker(producer: Producer, bootstrap: str) -> None:
    try:
        producer.list_topics(timeout=CONNECT_TIMEOUT_S)
    except KafkaException as exc:
        error = exc.args[0] if exc.args else None
        detail = error.str() if isinstance(error, KafkaError) else str(exc)
        raise BrokerUnavailableError(
            f"no Kafka broker answered at {bootstrap or '(no bootstrap.servers)'} within "
            f"{CONNECT_TIMEOUT_S:.0f} s ({detail}). Start one with "
            f"`processor broker`, or point {BOOTSTRAP_ENV} / --bootstrap-servers at yours."
        ) from None


def _produce(
    producer: Producer,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    on_delivery: _Deliveries,
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
            break
        except BufferError:  # local queue full: serve delivery reports, then retry
            producer.poll(0.5)
    producer.poll(0)


def _log_client_error(error: KafkaError) -> None:
    logger.warning("kafka client: %s", error)


def _report(stats: ReplayStats, topic: str, errors: Sequence[str], undelivered: int) -> None:
    logger.info(
        "replayed %d events to %s in %.1f s (%d failed)",
        stats.sent,
        topic,
        stats.seconds,
        stats.failed,
    )
    for error in errors:
        logger.error("delivery failed: %s", error)
    if undelivered:
        logger.error("%d messages still undelivered after %.0f s", undelivered, FLUSH_TIMEOUT_S)


def default_topic(source: str) -> str:
    """``transactions.raw`` for transaction sources, ``documents.raw`` for document sources."""
    return DEFAULT_TOPICS[EVENT_TYPES[source]]


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``replay`` arguments to ``parser`` (a subcommand parser or a standalone one)."""
    parser.description = (
        "Read a public data set with a source adapter and produce its events to Kafka as JSON. "
        "Sources: sparkov (card transactions, csv/csv.gz), fdh (Fraud Detection Handbook weekly "
        "csv.gz files), sroie (receipts, jsonl.gz), sec (SEC filing items, jsonl.gz). "
        "Progress goes to stderr when it is a terminal."
    )
    parser.epilog = (
        "Examples: "
        "processor replay sparkov data/sparkov/fraudTest_first5116rows.csv.gz --rate 200; "
        "processor replay fdh ../shared/data/fdh-simulated-transactions --limit 10000; "
        "processor replay sec data/sec --topic documents.raw"
    )
    parser.add_argument("source", choices=sorted(SOURCES), help="data set kind")
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="data files, or directories of them (in order)"
    )
    parser.add_argument(
        "--topic",
        help="topic to produce to (default: transactions.raw for sparkov/fdh, "
        "documents.raw for sroie/sec)",
    )
    parser.add_argument(
        "--bootstrap-servers",
        default=os.environ.get(BOOTSTRAP_ENV, DEFAULT_BOOTSTRAP),
        metavar="HOST:PORT",
        help=f"Kafka bootstrap servers (default: ${BOOTSTRAP_ENV}, else {DEFAULT_BOOTSTRAP})",
    )
    parser.add_argument(
        "--rate", type=_positive_float, metavar="N", help="events per second (default: no limit)"
    )
    parser.add_argument(
        "--limit", type=_positive_int, metavar="N", help="stop after N events (default: all)"
    )
    parser.add_argument(
        "-X",
        dest="producer_options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra librdkafka producer setting, repeatable (e.g. -X compression.type=zstd)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(args: argparse.Namespace) -> int:
    """Run the replay subcommand; 0 when every event was delivered, 1 on failures, 2 on errors."""
    topic = args.topic or default_topic(args.source)
    try:
        config = {"bootstrap.servers": args.bootstrap_servers, **_options(args.producer_options)}
        events = open_source(args.source, args.paths, limit=args.limit)
        stats = replay(
            events,
            topic,
            config,
            rate=args.rate,
            total=args.limit,
            progress=not args.no_progress,
        )
    except (ReplayError, FileNotFoundError, ValueError) as exc:
        print(f"processor replay: error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{stats.sent} events sent to {topic} in {stats.seconds:.1f} s, {stats.failed} failed",
        file=sys.stderr,
    )
    return 0 if stats.failed == 0 else 1


def _options(pairs: Sequence[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise ValueError(f"-X expects KEY=VALUE, got {pair!r}")
        options[name.strip()] = value.strip()
    return options


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(main(configure_parser(argparse.ArgumentParser(prog="processor replay")).parse_args()))
