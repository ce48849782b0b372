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


def test_a_kill_inside_a_transaction_costs_no_loss_no_stall_and_at_most_one_batch(
    broker: str, model_dir: Path, tmp_path: Path
) -> None:
    """SIGKILL while a transaction holds acknowledged outputs but has not committed.

    The restarted process takes over the killed one's transactional.id (the default slot), so
    its first commit ends the dead transaction: on Apache Kafka by aborting it, on the embedded
    Tansu, which does not hide aborted records (tests/test_brokercheck.py), by showing them.
    No input may be lost and the partitions may not stall; duplicates are bounded by that one
    batch, and only on a broker that shows aborted records."""
    topics = fresh_topics()
    ensure_topics(broker, topics.all(), partitions=3)
    events = list(islice(open_source("sparkov", SPARKOV_STREAM), 400))
    replay(events, topics.transactions, {"bootstrap.servers": broker}, progress=False)
    group = f"test-eos-window-{os.getpid()}"
    env = {
        **os.environ,
        "PROCESSOR_BOOTSTRAP_SERVERS": broker,
        "PROCESSOR_GROUP_ID": group,
        "PROCESSOR_MODEL_DIR": str(model_dir),
        "PROCESSOR_METRICS_PORT": "0",
        "PROCESSOR_DELIVERY": "exactly-once",
        "PROCESSOR_BATCH_SIZE": "32",
        "PROCESSOR_EMBEDDING_ENCODING": "none",
        "PROCESSOR_LOG_LEVEL": "INFO",
        "PROCESSOR_CONSUMER_KAFKA": '{"session.timeout.ms": 6000}',
        **{f"PROCESSOR_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()},
    }

    def start(number: int, **extra: str) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "processor", "run"],
            env={**env, **extra},
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"run-{number}.log").open("w"),
        )

    def progress() -> int:
        return committed_total(broker, group, topics.transactions)

    # 3 s inside every transaction after its outputs are acknowledged: a kill 1 s after a
    # commit lands there
    proc = start(1, PROCESSOR_TEST_COMMIT_DELAY_MS="3000")
    deadline = time.monotonic() + 120
    while progress() < 1:
        assert time.monotonic() < deadline and proc.poll() is None, "no first commit"
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = progress()
    assert killed_at < len(events)

    proc = start(2)
    try:
        deadline = time.monotonic() + 120
        while progress() < len(events):
            assert proc.poll() is None, (tmp_path / "run-2.log").read_text()[-2000:]
            assert time.monotonic() < deadline, f"stalled at {progress()} of {len(events)}"
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    ids = [
        line.split("transactional.id ")[1].split()[0]
        for n in (1, 2)
        for line in (tmp_path / f"run-{n}.log").read_text().splitlines()
        if "exactly-once: transactional.id " in line
    ]
    assert len(ids) == 2 and ids[0] == ids[1], ids  # the successor took over the id
    seen = Counter(
        json.loads(r.value)["event_id"] for r in read_topic(broker, topics.transactions_enriched)
    )
    assert set(seen) == {e.event["event_id"] for e in events}  # no loss
    duplicated = sum(n - 1 for n in seen.values())
    # At most the killed transaction's batch. On Tansu exactly that batch shows (32 when this
    # was written): the kill landed inside the transaction, and the broker shows what Apache
    # Kafka would abort and hide (0 there). Seeing 0 here means the embedded broker changed.
    assert 0 < duplicated <= 32, duplicated


def test_two_replicas_with_one_transactional_id_stop_the_fenced_one_with_the_fix(
    broker: str, model_dir: Path, tmp_path: Path
) -> None:
    topics = fresh_topics()
    ensure_topics(broker, topics.all(), partitions=3)
    events = list(islice(open_source("sparkov", SPARKOV_STREAM), 3000))
    env = {
        **os.environ,
        "PROCESSOR_BOOTSTRAP_SERVERS": broker,
        "PROCESSOR_GROUP_ID": f"test-eos-fenced-{os.getpid()}",
        "PROCESSOR_MODEL_DIR": str(model_dir),
        "PROCESSOR_METRICS_PORT": "0",
        "PROCESSOR_DELIVERY": "exactly-once",
        "PROCESSOR_TRANSACTIONAL_ID": "one-id-for-two",
        "PROCESSOR_BATCH_SIZE": "16",
        "PROCESSOR_TEST_BATCH_DELAY_MS": "20",
        "PROCESSOR_EMBEDDING_ENCODING": "none",
        "PROCESSOR_CONSUMER_KAFKA": '{"session.timeout.ms": 6000}',
        **{f"PROCESSOR_TOPICS__{k.upper()}": v for k, v in topics.model_dump().items()},
    }

    def start(number: int) -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-m", "processor", "run"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=(tmp_path / f"run-{number}.log").open("w"),
        )

    replay(events, topics.transactions, {"bootstrap.servers": broker}, progress=False)
    first = start(1)
    second = None
    try:
        deadline = time.monotonic() + 120
        while committed_total(broker, env["PROCESSOR_GROUP_ID"], topics.transactions) < 50:
            assert time.monotonic() < deadline and first.poll() is None, "no progress"
            time.sleep(0.2)
        second = start(2)  # its init_transactions fences the first
        assert first.wait(timeout=90) == 2
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=60)
    log = (tmp_path / "run-1.log").read_text()
    last = log.strip().splitlines()[-1]
    assert last.startswith("error: another producer took over"), log[-3000:]
    assert "PROCESSOR_TRANSACTIONAL_ID" in last and "one-id-for-two" in last
    assert "Traceback" not in log, log[-3000:]
