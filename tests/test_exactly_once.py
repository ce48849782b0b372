"""Exactly-once mode: one Kafka transaction per batch, input offsets committed inside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest

from processor.broker import ensure_topics
from processor.pipeline.worker import Models
from processor.reader import read_topic
from processor.replay import replay
from processor.sources import open_source
from tests.conftest import ROOT, SPARKOV_STREAM
from tests.pipeline_helpers import committed_total, fresh_topics, settings_for, start_processor

pytestmark = [pytest.mark.broker, pytest.mark.slow]

MALFORMED = [(b"bad-1", b"{nope"), (b"bad-2", b"\xff"), (b"tomb", None)]


def test_each_output_is_written_once_with_its_offsets_in_the_same_transaction(
    broker: str, model_dir: Path, bundle, embedder, device
) -> None:
    topics = fresh_topics()
    ensure_topics(broker, topics.all(), partitions=3)
    settings = settings_for(broker, topics, model_dir, delivery="exactly-once", batch_size=32)
    events = list(islice(open_source("sparkov", SPARKOV_STREAM), 300))
    replay(
        events,
        topics.transactions,
        {"bootstrap.servers": broker},
        progress=False,
        extra_records=MALFORMED,
    )

    running = start_processor(settings, Models(embedder, bundle, device))
    running.wait_done(len(events) + len(MALFORMED), timeout=120)
    # every offset, the tombstone's too (resolved without a batch), commits in a transaction
    deadline = time.monotonic() + 20
    while committed_total(broker, settings.group_id, topics.transactions) < len(events) + len(
        MALFORMED
    ):
        assert time.monotonic() < deadline, "offsets never committed in a transaction"
        time.sleep(0.5)
    stats = running.stop().as_dict()

    enriched = Counter(
        json.loads(r.value)["event_id"] for r in read_topic(broker, topics.transactions_enriched)
    )
    assert enriched == Counter(e.event["event_id"] for e in events)
    dead = [json.loads(r.value)["reason"] for r in read_topic(broker, topics.dead_letters)]
    assert sorted(dead) == ["not_json", "not_utf8"]
    assert stats["skipped"] == 1


def test_sigkill_mid_run_neither_loses_nor_duplicates(broker: str, model_dir: Path) -> None:
    topics = fresh_topics()
    ensure_topics(broker, topics.all(), partitions=3)
    events = list(islice(open_source("sparkov", SPARKOV_STREAM), 1500))
    replay(events, topics.transactions, {"bootstrap.servers": broker}, progress=False)
    env = {
        **os.environ,
        "PROCESSOR_BOOTSTRAP_SERVERS": broker,
        "PROCESSOR_GROUP_ID": "test-eos-kill",
        "PROCESSOR_MODEL_DIR": str(model_dir),
        "PROCESSOR_METRICS_PORT": "0",
        "PROCESSOR_DELIVERY": "exactly-once",
        "PROCESSOR_BATCH_SIZE": "16",
        "PROCESSOR_TEST_BATCH_DELAY_MS": "20",
        "PROCESSOR_EMBEDDING_ENCODING": "none",
        "PROCESSOR_CONSUMER_KAFKA": '{"session.timeout.ms": 6000}',
        **{f"PROCESSOR_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()},
    }

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "processor", "run"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def progress() -> int:
        return committed_total(broker, "test-eos-kill", topics.transactions)

    proc = start()
    deadline = time.monotonic() + 120
    while progress() < 200:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = progress()
    assert killed_at < len(events), "the kill came too late to test anything"

    proc = start()
    try:
        deadline = time.monotonic() + 180
        while progress() < len(events):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    seen = Counter(
        json.loads(r.value)["event_id"] for r in read_topic(broker, topics.transactions_enriched)
    )
    assert set(seen) == {e.event["event_id"] for e in events}  # no loss
    assert max(seen.values()) == 1  # no duplicate, although the first run died mid-batch
