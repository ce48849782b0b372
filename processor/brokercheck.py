"""Checks of what a broker does with transactions, which exactly-once relies on.

Two behaviours of Apache Kafka that a Kafka-compatible broker may lack:

- ``aborted_hidden``: records of an aborted transaction are not returned to a
  ``read_committed`` consumer;
- ``abandoned_expire``: a transaction whose producer vanished (SIGKILL) without ending it is
  aborted by the broker after ``transaction.timeout.ms``, so the partitions it wrote to become
  readable again past it.

Each check writes to a fresh topic of its own. Tansu 0.6 (the embedded
broker) fails both: see the README's Known limitations.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass

from confluent_kafka import Consumer, Producer, TopicPartition

from processor.broker import ensure_topics

TIMEOUT_MS = 2000  # the abandoned transaction's transaction.timeout.ms


@dataclass
class TransactionChecks:
    aborted_hidden: bool
    abandoned_expire: bool

    @property
    def ok(self) -> bool:
        return self.aborted_hidden and self.abandoned_expire

    def problems(self) -> list[str]:
        out = []
        if not self.aborted_hidden:
            out.append("records of an aborted transaction are visible to read_committed readers")
        if not self.abandoned_expire:
            out.append(
                "a transaction left open by a killed producer is never aborted: later records "
                "of its partitions stay unreadable and other producers' transactional offset "
                "commits for them are not applied"
            )
        return out

    def as_dict(self) -> dict:
        return {**asdict(self), "ok": self.ok, "problems": self.problems()}


def _producer(bootstrap: str, name: str) -> Producer:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "transactional.id": f"finstream-check-{name}-{uuid.uuid4().hex[:8]}",
            "transaction.timeout.ms": TIMEOUT_MS,
            "log.connection.close": False,
        }
    )
    producer.init_transactions(15)
    return producer


def _read_committed(bootstrap: str, topic: str, expect: int, wait_s: float) -> list[bytes]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"finstream-check-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline and len(values) < expect:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                values.append(msg.value())
    finally:
        consumer.close()
    return values


def check_transactions(bootstrap: str) -> TransactionChecks:
    """Run both checks against ``bootstrap`` (a few seconds; up to 25 s where a check fails)."""
    run = uuid.uuid4().hex[:8]
    aborted_topic = f"_finstream-check-abort-{run}"
    abandoned_topic = f"_finstream-check-open-{run}"
    ensure_topics(bootstrap, [aborted_topic, abandoned_topic], partitions=1)

    producer = _producer(bootstrap, "abort")
    producer.begin_transaction()
    producer.produce(aborted_topic, b"aborted")
    producer.flush(15)
    producer.abort_transaction(15)
    producer.begin_transaction()
    producer.produce(aborted_topic, b"committed")
    producer.commit_transaction(15)
    seen = _read_committed(bootstrap, aborted_topic, expect=2, wait_s=5)
    aborted_hidden = b"committed" in seen and b"aborted" not in seen

    # The abandoned producer: its records are sent, then it is dropped without EndTxn, as a
    # SIGKILL would leave it (librdkafka's destructor would otherwise abort it).
    abandoned = _producer(bootstrap, "open")
    abandoned.begin_transaction()
    abandoned.produce(abandoned_topic, b"abandoned")
    abandoned.flush(15)
    other = _producer(bootstrap, "after")
    other.begin_transaction()
    other.produce(abandoned_topic, b"after")
    other.commit_transaction(15)
    # Apache Kafka looks for expired transactions every 10 s
    # (transaction.abort.timed.out.transaction.cleanup.interval.ms)
    seen = _read_committed(bootstrap, abandoned_topic, expect=1, wait_s=TIMEOUT_MS / 1000 + 14)
    abandoned_expire = b"after" in seen
    del abandoned  # kept open until here
    return TransactionChecks(aborted_hidden, abandoned_expire)
