"""How large an output record may be: the producer's limit and each output topic's own.

A broker refuses a record batch larger than the topic's ``max.message.bytes``. Left to the
broker, that refusal comes back in a delivery report for the whole batch sent, innocent records
included, and in exactly-once mode it makes librdkafka abort the open transaction. So the
processor reads every output topic's limit once at start (DescribeConfigs) and checks each record
before it is sent: one that cannot fit is refused locally, and its input goes to the dead-letter
topic as ``output_rejected`` without touching the transaction or its neighbours. The producer's
``batch.size`` is lowered to fit the smallest topic, so batching never builds a batch the broker
would refuse.

The dead-letter topic must hold the largest dead letter the processor can write (the prefix of
an input of ``PROCESSOR_MAX_MESSAGE_BYTES``, in base64, with its key and detail): otherwise a bad
record would stop the processor instead of being set aside, and the start is refused.

What this cannot see: a limit the broker does not report (the call is refused, or a broker
that reports only the settings made on the topic, as Tansu does), and compression (the broker
compares the compressed batch; the check here counts uncompressed bytes, so it errs on the side
of refusing).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from processor.config import ConfigError, Settings
from processor.logs import ClientLog
from processor.pipeline import records
from schemas import DeadLetterReason
from schemas.outputs import DeadLetterV1, SourceRef

log = logging.getLogger(__name__)

# A record batch's header (61 bytes in format v2), one record's framing (attributes, varint
# lengths and deltas, at most about 32 bytes) and the 12-byte log overhead, rounded up.
RECORD_OVERHEAD = 128
LIBRDKAFKA_MESSAGE_MAX_BYTES = 1_000_000  # librdkafka's default message.max.bytes
LIBRDKAFKA_BATCH_SIZE = 1_000_000  # and batch.size


@dataclass(frozen=True)
class OutputLimits:
    """The largest key + value (bytes) each output topic takes; ``default`` for the others."""

    default: int
    topics: dict[str, int]
    producer_overrides: dict[str, int]

    def limit(self, topic: str) -> int:
        return self.topics.get(topic, self.default)

    def fits(self, topic: str, key: bytes | None, value: bytes) -> bool:
        return len(value) + (len(key) if key else 0) <= self.limit(topic)


def _bytes_setting(conf: dict, name: str, default: int) -> int:
    raw = conf.get(name, default)
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{name}={raw!r} in PROCESSOR_KAFKA or PROCESSOR_PRODUCER_KAFKA is not a number of "
            "bytes"
        ) from None
    if value <= 0:
        raise ConfigError(
            f"{name}={value} in PROCESSOR_KAFKA or PROCESSOR_PRODUCER_KAFKA must be > 0"
        )
    return value


def largest_dead_letter(max_message_bytes: int) -> int:
    """Bytes of the largest dead letter (value + key) for inputs up to ``max_message_bytes``.

    Built from the real record model, with every variable field at its largest: the kept value
    prefix, the kept key prefix, a detail of 4-byte characters and the longest topic name Kafka
    allows.
    """
    kept = min(max_message_bytes, records.MAX_DEAD_LETTER_VALUE)
    longest = "t" * 249
    record = DeadLetterV1(
        reason=DeadLetterReason.OUTPUT_REJECTED,
        detail="\U0010fffd" * 4096,
        source=SourceRef(topic=longest, partition=2**31 - 1, offset=2**63 - 1),
        key_b64="A" * (4 * ((records.MAX_DEAD_LETTER_KEY + 2) // 3)),
        key_truncated=True,
        value_b64="A" * (4 * ((kept + 2) // 3)),
        value_bytes=2**63 - 1,
        value_truncated=True,
        processor_version="9" * 32,
        created_at=datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    )
    return len(record.model_dump_json().encode()) + records.MAX_DEAD_LETTER_KEY


def read_topic_limits(
    bootstrap: str, topics: list[str], client_conf: dict, timeout: float = 10.0
) -> dict[str, int]:
    """Each topic's ``max.message.bytes`` as the broker reports it; topics it does not report
    (missing, not authorised, not set on a broker that reports only what was set) are left out."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "logger": ClientLog(), **client_conf})
    resources = [ConfigResource(ResourceType.TOPIC, t) for t in dict.fromkeys(topics)]
    found: dict[str, int] = {}
    try:
        futures = admin.describe_configs(resources, request_timeout=timeout)
    except KafkaException as exc:
        log.warning("cannot read the output topics' size limits error=%r", str(exc))
        return found
    unanswered = []
    for resource, future in futures.items():
        try:
            entry = future.result(timeout=timeout).get("max.message.bytes")
        except Exception as exc:  # a missing topic or a refused call: the producer limit holds
            log.info("no size limit read topic=%s error=%r", resource.name, str(exc))
            if _no_answer(exc):  # not a refusal: the broker was not reached
                unanswered.append(resource.name)
            continue
        if entry is not None and entry.value is not None:
            try:
                found[resource.name] = int(entry.value)
            except ValueError:
                log.warning(
                    "size limit is not a number topic=%s value=%r", resource.name, entry.value
                )
    if unanswered:
        log.warning(
            "Kafka at %s did not answer for the size limits of %s within %.0f s: outputs are "
            "checked against the producer's message.max.bytes only, until a restart",
            bootstrap,
            ", ".join(unanswered),
            timeout,
        )
    return found


def _no_answer(exc: Exception) -> bool:
    err = exc.args[0] if exc.args else None
    if isinstance(err, KafkaError):
        return err.code() in (KafkaError._TIMED_OUT, KafkaError._TRANSPORT)
    return not str(exc)  # librdkafka gave up without a word: a timeout


def output_topics(settings: Settings) -> list[str]:
    t = settings.topics
    return [t.transactions_enriched, t.documents_enriched, t.alerts, t.dead_letters]


def plan(settings: Settings, reported: dict[str, int]) -> OutputLimits:
    """The output limits for this run, given the topics' ``max.message.bytes`` the broker
    reported; ConfigError when the dead letters could not fit."""
    producer_conf = {**settings.kafka, **settings.producer_kafka}
    message_max = _bytes_setting(producer_conf, "message.max.bytes", LIBRDKAFKA_MESSAGE_MAX_BYTES)
    batch_size = _bytes_setting(producer_conf, "batch.size", LIBRDKAFKA_BATCH_SIZE)
    topics = settings.topics
    per_topic = {t: min(message_max, n - RECORD_OVERHEAD) for t, n in reported.items()}
    for topic, limit in per_topic.items():
        if limit < message_max:
            log.info(
                "output size limit topic=%s max_record_bytes=%d (max.message.bytes)", topic, limit
            )

    dead_limit = per_topic.get(topics.dead_letters, message_max)
    needed = largest_dead_letter(settings.max_message_bytes)
    if needed > dead_limit:
        where, fixes = [], []
        if message_max < needed:
            where.append(f"the producer's message.max.bytes is {message_max}")
            fixes.append(
                f"raise message.max.bytes in PROCESSOR_PRODUCER_KAFKA to at least {needed}"
            )
        if per_topic.get(topics.dead_letters, needed) < needed:
            where.append(
                f"the dead-letter topic {topics.dead_letters} takes records up to "
                f"{reported[topics.dead_letters]} bytes (its max.message.bytes)"
            )
            fixes.append(
                f"raise max.message.bytes of {topics.dead_letters} to at least "
                f"{needed + RECORD_OVERHEAD}"
            )
        largest = _largest_input_for(dead_limit)
        lower = (
            f"; or lower PROCESSOR_MAX_MESSAGE_BYTES to at most {largest}" if largest > 0 else ""
        )
        raise ConfigError(
            f"size limits cannot work together: {' and '.join(where)}, but a dead letter of an "
            f"input of PROCESSOR_MAX_MESSAGE_BYTES={settings.max_message_bytes} can take "
            f"{needed} bytes, so bad input would stop the processor instead of being set aside. "
            f"Fix: {' and '.join(fixes)}{lower}"
        )

    overrides: dict[str, int] = {}
    smallest = min(per_topic.values(), default=batch_size)
    if smallest < batch_size:
        # a batch of many small records must not outgrow the smallest topic's limit either
        overrides["batch.size"] = smallest
    return OutputLimits(message_max, per_topic, overrides)


def _largest_input_for(dead_limit: int) -> int:
    """The largest PROCESSOR_MAX_MESSAGE_BYTES whose dead letters fit ``dead_limit``."""
    low, high = 0, records.MAX_DEAD_LETTER_VALUE
    while low < high:
        mid = (low + high + 1) // 2
        if largest_dead_letter(mid) <= dead_limit:
            low = mid
        else:
            high = mid - 1
    return low
