"""Reading a whole topic back (for the demo's summary, the checkers and the tests)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

QUIET_S = 1.0
"""Every partition must stay at its end this long: some brokers' high watermarks lag (Tansu)."""


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


def read_topic(
    bootstrap: str, topic: str, timeout: float = 30.0, extra: dict | None = None
) -> Iterator[Record]:
    """Every record now in ``topic``, from the start of each partition to its end."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": "finstream-reader",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "isolation.level": "read_committed",
            **(extra or {}),
        }
    )
    try:
        meta = consumer.list_topics(topic, timeout=timeout).topics[topic]
        if meta.error is not None:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        at_end: set[int] = set()
        deadline = time.monotonic() + timeout
        quiet_until = None
        while time.monotonic() < deadline:
            messages = consumer.consume(1000, 0.2)
            for msg in messages:
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition())
                        continue
                    raise RuntimeError(f"reading {topic}: {msg.error().str()}")
                at_end.discard(msg.partition())
                yield Record(
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    msg.timestamp()[1],
                )
            if len(at_end) < len(meta.partitions) or any(not m.error() for m in messages):
                quiet_until = None
            elif quiet_until is None:
                quiet_until = time.monotonic() + QUIET_S
            elif time.monotonic() >= quiet_until:
                return
        raise TimeoutError(f"reading {topic} did not reach the end within {timeout:.0f} s")
    finally:
        consumer.close()
