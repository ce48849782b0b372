"""Records that once crashed or stalled the processor: each must end up accounted for."""

from __future__ import annotations

import base64
import json
from itertools import islice
from pathlib import Path

import pytest

from processor.broker import ensure_topics
from processor.pipeline.worker import Models
from processor.reader import read_topic
from processor.replay import replay
from processor.sources import open_source
from tests.conftest import SPARKOV_STREAM
from tests.pipeline_helpers import committed_total, fresh_topics, settings_for, start_processor

pytestmark = [pytest.mark.broker, pytest.mark.slow]


def test_poison_records_are_dead_lettered_and_the_partition_moves_on(
    broker: str, model_dir: Path, bundle, embedder, device
) -> None:
    topics = fresh_topics()
    settings = settings_for(broker, topics, model_dir)
    ensure_topics(broker, topics.all(), partitions=3)
    good = list(islice(open_source("sparkov", SPARKOV_STREAM), 30))
    poison = [
        (b"k" * 900_000, b"not json"),  # a key too large to copy whole into a dead letter
        (b"big-int", b'{"amount": ' + b"9" * 5000 + b"}"),  # more digits than Python converts
        (
            b"exp",
            json.dumps({**good[0].event, "event_id": "exp-1"})
            .replace('"amount": "2.86"', '"amount": 1E+2000000')
            .encode(),
        ),
    ]
    replay(
        good[:15],
        topics.transactions,
        {"bootstrap.servers": broker},
        progress=False,
        extra_records=poison,
    )
    replay(good[15:], topics.transactions, {"bootstrap.servers": broker}, progress=False)

    running = start_processor(settings, Models(embedder, bundle, device))
    running.wait_done(len(good) + len(poison), timeout=120)
    stats = running.stop().as_dict()

    assert stats["enriched"] == len(good)
    assert stats["dead_lettered"] == len(poison)
    dead = [json.loads(r.value) for r in read_topic(broker, topics.dead_letters)]
    truncated = [d for d in dead if d["key_truncated"]]
    assert len(truncated) == 1
    assert base64.b64decode(truncated[0]["key_b64"]) == b"k" * len(
        base64.b64decode(truncated[0]["key_b64"])
    )
    assert sorted(d["reason"] for d in dead) == ["not_json", "not_json", "schema_invalid"]
    assert committed_total(broker, settings.group_id, topics.transactions) == 33
