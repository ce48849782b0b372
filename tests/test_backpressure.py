"""Backpressure: a slow model pauses the partitions instead of buffering or leaving the group."""

from __future__ import annotations

import json
import threading
import time
from itertools import islice
from pathlib import Path

import pytest

from processor.pipeline.worker import Models
from processor.reader import read_topic
from processor.replay import replay
from processor.sources import open_source
from tests.conftest import SPARKOV_STREAM
from tests.pipeline_helpers import committed_total, fresh_topics, settings_for, start_processor

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_slow_model_pauses_partitions_and_keeps_group_membership(
    broker: str, model_dir: Path, bundle, embedder, device
) -> None:
    topics = fresh_topics()
    settings = settings_for(
        broker,
        topics,
        model_dir,
        max_in_flight=40,
        batch_size=8,
        test_batch_delay_ms=250,
        consumer_kafka={"session.timeout.ms": 6000, "max.poll.interval.ms": 6500},
    )
    events = list(islice(open_source("sparkov", SPARKOV_STREAM), 240))
    replay(events, topics.transactions, {"bootstrap.servers": broker}, progress=False)

    running = start_processor(settings, Models(embedder, bundle, device))
    seen = {"in_flight": 0, "paused": 0}
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen["in_flight"] = max(seen["in_flight"], running.processor.tracker.in_flight())
            seen["paused"] = max(
                seen["paused"], int(running.processor.metrics.paused._value.get())
            )
            time.sleep(0.01)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.monotonic()
    try:
        running.wait_done(len(events), timeout=120)
    finally:
        stop.set()
        watcher.join()
    elapsed = time.monotonic() - started
    stats = running.stop().as_dict()

    assert elapsed > 6.5, "the slow model should have taken longer than max.poll.interval.ms"
    assert stats["enriched"] == len(events)
    assert stats["revocations"] == 0, "the consumer left the group (max.poll.interval.ms)"
    assert seen["paused"] > 0, "partitions were never paused"
    assert seen["in_flight"] <= settings.max_in_flight


def test_stop_with_unfinished_work_keeps_its_budget_and_loses_nothing(
    broker: str, model_dir: Path, bundle, embedder, device
) -> None:
    from processor.broker import ensure_topics
    from processor.reader import read_topic

    topics = fresh_topics()
    ensure_topics(broker, topics.all(), partitions=3)
    slow = settings_for(
        broker,
        topics,
        model_dir,
        group_id="test-stop-budget",
        batch_size=2,
        test_batch_delay_ms=1500,
        shutdown_timeout_s=3.0,
    )
    events = list(islice(open_source("sparkov", SPARKOV_STREAM), 40))
    replay(events, topics.transactions, {"bootstrap.servers": broker}, progress=False)

    running = start_processor(slow, Models(embedder, bundle, device))
    deadline = time.monotonic() + 60
    while running.processor.stats.as_dict()["enriched"] < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    started = time.monotonic()
    first = running.stop().as_dict()
    assert time.monotonic() - started < slow.shutdown_timeout_s + 5
    assert first["enriched"] < len(events)

    fast = settings_for(broker, topics, model_dir, group_id="test-stop-budget")
    second = start_processor(fast, Models(embedder, bundle, device))
    second.wait_done(len(events) - first["enriched"], timeout=120)
    second.stop()
    ids = {
        json.loads(r.value)["event_id"] for r in read_topic(broker, topics.transactions_enriched)
    }
    assert ids == {e.event["event_id"] for e in events}  # at least once: nothing lost


def test_a_full_producer_queue_waits_for_room_and_loses_nothing(
    broker: str, model_dir: Path, bundle, embedder, device
) -> None:
    topics = fresh_topics()
    settings = settings_for(
        broker,
        topics,
        model_dir,
        batch_size=64,  # a batch's outputs overflow a 10-record producer queue
        producer_kafka={"queue.buffering.max.messages": 10},
    )
    events = list(islice(open_source("sparkov", SPARKOV_STREAM), 300))
    replay(events, topics.transactions, {"bootstrap.servers": broker}, progress=False)

    running = start_processor(settings, Models(embedder, bundle, device))
    running.wait_done(len(events), timeout=120)
    waits = running.processor.metrics.queue_full._value.get()
    stats = running.stop().as_dict()

    assert waits > 0, "the producer queue never filled: the test did not test anything"
    assert stats["enriched"] == len(events) and stats["dead_lettered"] == 0
    out = read_topic(broker, topics.transactions_enriched)
    ids = [json.loads(r.value)["event_id"] for r in out]
    assert sorted(ids) == sorted(e.event["event_id"] for e in events)
    assert committed_total(broker, settings.group_id, topics.transactions) == len(events)
