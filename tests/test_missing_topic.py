"""An input topic that does not exist when the processor starts: the processor waits for it
(not ready, a warning in the log) and consumes it once it is created."""

from __future__ import annotations

import json
import threading
import time
from itertools import islice
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

from processor.broker import ensure_topics
from processor.metrics import Health, Metrics
from processor.pipeline.service import StreamProcessor
from processor.pipeline.worker import Models
from processor.reader import read_topic
from processor.replay import replay
from processor.sources import open_source
from tests.conftest import SPARKOV_STREAM
from tests.pipeline_helpers import Running, fresh_topics, settings_for

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_input_topic_created_after_start_is_consumed(
    broker: str, model_dir: Path, bundle, embedder, device
) -> None:
    topics = fresh_topics()
    ensure_topics(broker, topics.outputs(), partitions=3)  # the inputs do not exist yet
    settings = settings_for(broker, topics, model_dir)
    health = Health()
    processor = StreamProcessor(
        settings, broker, Models(embedder, bundle, device), Metrics(gpu=False), health
    )
    result: dict = {}

    def target() -> None:
        try:
            processor.run()
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    running = Running(processor, thread, result)
    time.sleep(5)
    assert thread.is_alive() and "error" not in result  # it waits for its inputs
    assert health.broker_reachable and not health.assignment_held and not health.ready()
    admin = AdminClient({"bootstrap.servers": broker})
    existing = admin.list_topics(timeout=10).topics
    assert topics.transactions not in existing  # the waiting processor did not auto-create it
    ensure_topics(broker, topics.inputs(), partitions=3)
    events = list(islice(open_source("sparkov", SPARKOV_STREAM), 50))
    replay(events, topics.transactions, {"bootstrap.servers": broker}, progress=False)
    running.wait_done(len(events), timeout=60)  # seen within the metadata refresh (10 s)
    assert health.ready()
    running.stop()
    ids = {
        json.loads(r.value)["event_id"] for r in read_topic(broker, topics.transactions_enriched)
    }
    assert ids == {e.event["event_id"] for e in events}
