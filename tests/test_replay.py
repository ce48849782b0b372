"""Replay: events go to Kafka as compact JSON and come back unchanged."""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
from confluent_kafka import Consumer

import processor.replay as replay_module
from processor.broker import free_port
from processor.replay import (
    BrokerUnavailableError,
    _Pacer,
    configure_parser,
    default_topic,
    encode_event,
    replay,
)
from processor.sources import read_sparkov
from schemas.events import TransactionV1

SPARKOV_TEST = Path(__file__).parents[1] / "data" / "sparkov" / "fraudTest_first5116rows.csv.gz"
CONSUME_TIMEOUT_S = 60.0


def consume(bootstrap: str, topic: str, count: int) -> list[tuple[bytes | None, bytes | None]]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-replay-{time.monotonic_ns()}",
            "session.timeout.ms": 6000,
            "auto.offset.reset": "earliest",
        }
    )
    records: list[tuple[bytes | None, bytes | None]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + CONSUME_TIMEOUT_S
        while len(records) < count and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            assert message.error() is None, message.error()
            records.append((message.key(), message.value()))
    finally:
        consumer.close()
    return records


@pytest.mark.broker
def test_replayed_sparkov_events_come_back_as_the_same_events(broker: str) -> None:
    events = list(read_sparkov(SPARKOV_TEST, limit=200))
    stats = replay(events, "test.sparkov", {"bootstrap.servers": broker}, progress=False)
    assert (stats.sent, stats.failed) == (200, 0)
    records = consume(broker, "test.sparkov", 200)
    assert len(records) == 200
    sent = {item.event["event_id"]: item for item in events}
    per_key: dict[bytes | None, list[str]] = defaultdict(list)
    for key, value in records:
        decoded = json.loads(value.decode("utf-8"))
        original = sent[decoded["event_id"]]
        assert decoded == original.event
        assert value == encode_event(original.event)
        assert key == original.key.encode("utf-8")
        TransactionV1.model_validate_json(value)
        per_key[key].append(decoded["event_id"])
    expected_order: dict[bytes | None, list[str]] = defaultdict(list)
    for item in events:
        expected_order[item.key.encode("utf-8")].append(item.event["event_id"])
    assert per_key == expected_order  # one key, one partition: order is kept


def test_replay_names_the_bootstrap_servers_when_no_broker_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(replay_module, "CONNECT_TIMEOUT_S", 1.0)
    bootstrap = f"127.0.0.1:{free_port()}"
    with pytest.raises(BrokerUnavailableError, match=bootstrap) as caught:
        replay([], "t", {"bootstrap.servers": bootstrap}, progress=False)
    assert "processor broker" in str(caught.value)
    assert "PROCESSOR_BOOTSTRAP_SERVERS" in str(caught.value)


def test_events_are_encoded_as_compact_utf8_json() -> None:
    assert encode_event({"a": "é", "b": [1, 2]}) == '{"a":"é","b":[1,2]}'.encode()


class _FakeProducer:
    def poll(self, timeout: float) -> int:
        time.sleep(timeout)
        return 0


def test_pacer_holds_the_rate() -> None:
    pacer = _Pacer(100.0)
    started = time.monotonic()
    for _ in range(21):
        pacer.wait(_FakeProducer())
    assert time.monotonic() - started >= 0.19
    with pytest.raises(ValueError):
        _Pacer(0)


def test_cli_defaults_the_topic_by_event_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCESSOR_BOOTSTRAP_SERVERS", "kafka:9093")
    parser = configure_parser(argparse.ArgumentParser(prog="processor replay"))
    args = parser.parse_args(["sroie", "data/sroie", "--rate", "50", "--limit", "10"])
    assert (args.bootstrap_servers, args.rate, args.limit) == ("kafka:9093", 50, 10)
    assert args.topic is None
    assert default_topic("sroie") == "documents.raw"
    assert default_topic("fdh") == "transactions.raw"
