"""Output size limits: what a topic would refuse is dead-lettered before it is sent, and limits
that leave no room for dead letters are refused at start."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from processor.config import ConfigError, Settings
from processor.metrics import Health, Metrics
from processor.pipeline import limits, records
from processor.pipeline.records import Origin
from processor.pipeline.service import StreamProcessor, _dead_key
from processor.pipeline.worker import Models
from processor.reader import read_topic
from processor.replay import replay
from processor.sources import open_source
from schemas import DeadLetterReason
from tests.conftest import DATA
from tests.pipeline_helpers import committed_total, fresh_topics, settings_for, start_processor

FRAUD_HEAVY = DATA / "sparkov" / "fraudTest_1072fraud_1072normal.csv.gz"


@pytest.mark.parametrize("value_bytes", [0, 1, 1024, 300_000, records.MAX_DEAD_LETTER_VALUE + 1])
@pytest.mark.parametrize("key_bytes", [0, 100, records.MAX_DEAD_LETTER_KEY * 3])
def test_the_largest_dead_letter_bounds_every_real_one(value_bytes: int, key_bytes: int) -> None:
    value = bytes(i % 256 for i in range(value_bytes))
    origin = Origin("t" * 249, 7, 10**15, 1, b"\xff" * key_bytes, records.now(), value, 3)
    detail = "\ud800 \U0001f600 \x00" * 2000  # escaped, 4-byte and control characters
    record = records.dead_letter(origin, value, DeadLetterReason.OUTPUT_REJECTED, detail)
    size = len(record.model_dump_json().encode()) + len(_dead_key(origin) or b"")
    assert size <= limits.largest_dead_letter(max(value_bytes, 1024))


def _settings(**values) -> Settings:
    return Settings(bootstrap_servers="kafka:9092", **values)


def test_defaults_leave_every_output_to_the_producer_limit() -> None:
    planned = limits.plan(_settings(), {})
    assert planned.default == limits.LIBRDKAFKA_MESSAGE_MAX_BYTES
    assert planned.producer_overrides == {}
    assert planned.fits("transactions.enriched", b"k", b"x" * 999_999)
    assert not planned.fits("transactions.enriched", b"k", b"x" * 1_000_000)


def test_a_topic_limit_applies_to_that_topic_and_bounds_batches() -> None:
    planned = limits.plan(_settings(), {"alerts": 5000, "events.dlq": 2_000_000})
    assert planned.limit("alerts") == 5000 - limits.RECORD_OVERHEAD
    assert planned.limit("events.dlq") == limits.LIBRDKAFKA_MESSAGE_MAX_BYTES  # producer's
    assert planned.limit("transactions.enriched") == limits.LIBRDKAFKA_MESSAGE_MAX_BYTES
    assert planned.producer_overrides == {"batch.size": 5000 - limits.RECORD_OVERHEAD}
    assert planned.fits("alerts", b"1234", b"x" * (planned.limit("alerts") - 4))
    assert not planned.fits("alerts", b"1234", b"x" * (planned.limit("alerts") - 3))


def test_a_producer_limit_too_small_for_dead_letters_is_refused_with_the_fix() -> None:
    settings = _settings(producer_kafka={"message.max.bytes": 200_000})
    with pytest.raises(ConfigError) as caught:
        limits.plan(settings, {})
    message = str(caught.value)
    assert "message.max.bytes is 200000" in message
    assert "PROCESSOR_MAX_MESSAGE_BYTES=1000000" in message
    needed = limits.largest_dead_letter(1_000_000)
    assert f"message.max.bytes in PROCESSOR_PRODUCER_KAFKA to at least {needed}" in message
    # the suggested input limit is the largest that works
    largest = int(message.rsplit("at most ", 1)[1])
    limits.plan(
        _settings(producer_kafka={"message.max.bytes": 200_000}, max_message_bytes=largest), {}
    )
    with pytest.raises(ConfigError):
        limits.plan(
            _settings(
                producer_kafka={"message.max.bytes": 200_000}, max_message_bytes=largest + 1
            ),
            {},
        )
    # and the suggested producer limit is enough
    limits.plan(_settings(producer_kafka={"message.max.bytes": needed}), {})


def test_a_dead_letter_topic_too_small_is_refused_naming_the_topic() -> None:
    with pytest.raises(ConfigError) as caught:
        limits.plan(_settings(), {"events.dlq": 100_000})
    message = str(caught.value)
    assert "events.dlq takes records up to 100000 bytes (its max.message.bytes)" in message
    assert "producer" not in message.split("Fix:")[1]
    needed = limits.largest_dead_letter(1_000_000) + limits.RECORD_OVERHEAD
    assert f"raise max.message.bytes of events.dlq to at least {needed}" in message
    limits.plan(_settings(), {"events.dlq": needed})


def test_a_size_setting_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(ConfigError, match="batch.size='lots'"):
        limits.plan(_settings(producer_kafka={"batch.size": "lots"}), {})


# -- against the real broker -----------------------------------------------------------------


def _create(broker: str, topics: dict[str, dict[str, str]], partitions: int = 3) -> None:
    admin = AdminClient({"bootstrap.servers": broker})
    futures = admin.create_topics(
        [NewTopic(name, partitions, 1, config=config) for name, config in topics.items()]
    )
    for future in futures.values():
        future.result(15)


@pytest.mark.broker
def test_topic_limits_are_read_from_the_broker(broker: str) -> None:
    topics = fresh_topics()
    _create(
        broker,
        {topics.alerts: {"max.message.bytes": "5000"}, topics.transactions_enriched: {}},
    )
    found = limits.read_topic_limits(
        broker, [topics.alerts, topics.transactions_enriched, topics.dead_letters], {}
    )
    # Tansu reports the settings made on a topic; Apache Kafka reports its defaults too
    assert found.get(topics.alerts) == 5000
    assert topics.dead_letters not in found  # it does not exist


@pytest.mark.broker
def test_a_dead_letter_topic_too_small_stops_the_start(
    broker: str, model_dir: Path, bundle, embedder, device
) -> None:
    topics = fresh_topics()
    _create(broker, {topics.dead_letters: {"max.message.bytes": "100000"}})
    settings = settings_for(broker, topics, model_dir)
    with pytest.raises(ConfigError, match="size limits cannot work together"):
        StreamProcessor(
            settings, broker, Models(embedder, bundle, device), Metrics(gpu=False), Health()
        )


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.parametrize("delivery", ["at-least-once", "exactly-once"])
def test_alerts_too_large_for_their_topic_dead_letter_their_events_and_the_rest_go_on(
    broker: str, model_dir: Path, bundle, embedder, device, delivery: str
) -> None:
    """An anomalous transaction has two outputs; its alert does not fit the alerts topic, so
    the event goes to the dead-letter topic (without its enriched record), while normal events
    of the same partitions are enriched, in exactly-once mode without aborting a transaction."""
    topics = fresh_topics()
    _create(broker, {topics.alerts: {"max.message.bytes": "600"}})
    settings = settings_for(
        broker, topics, model_dir, delivery=delivery, batch_size=16, embedding_encoding="none"
    )
    sample = list(open_source("sparkov", FRAUD_HEAVY))
    frauds = [e for e in sample if e.label == 1][:40]  # recall is about 0.4 at the threshold
    normal = [e for e in sample if e.label == 0][:40]
    events = [e for pair in zip(frauds, normal, strict=True) for e in pair]
    replay(events, topics.transactions, {"bootstrap.servers": broker}, progress=False)

    running = start_processor(settings, Models(embedder, bundle, device))
    running.wait_done(len(events), timeout=120)
    deadline = time.monotonic() + 20  # exactly-once: the last transaction commits the offsets
    while committed_total(broker, settings.group_id, topics.transactions) < len(events):
        assert time.monotonic() < deadline, "offsets of the dead-lettered events never committed"
        time.sleep(0.5)
    stats = running.stop().as_dict()  # raises if the processor failed

    enriched = [json.loads(r.value) for r in read_topic(broker, topics.transactions_enriched)]
    dead = [json.loads(r.value) for r in read_topic(broker, topics.dead_letters)]
    assert enriched and dead, "the sample must hold both normal and anomalous events"
    assert not any(e["anomaly"]["is_anomaly"] for e in enriched)
    assert {d["reason"] for d in dead} == {"output_rejected"}
    assert all(f"output to {topics.alerts}" in d["detail"] for d in dead)
    dead_ids = [json.loads(base64.b64decode(d["value_b64"]))["event_id"] for d in dead]
    enriched_ids = [e["event"]["event_id"] for e in enriched]
    assert sorted(dead_ids + enriched_ids) == sorted(e.event["event_id"] for e in events)
    assert list(read_topic(broker, topics.alerts)) == []
    assert stats["enriched"] == len(enriched) and stats["dead_lettered"] == len(dead)
    assert stats["alerts"] == 0
