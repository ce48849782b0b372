"""Property-based: mutated real events never crash the decoder, and a stream of them through
the real processor is fully accounted for."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from processor.broker import ensure_topics
from processor.pipeline.decode import decode
from processor.pipeline.records import Origin, dead_letter
from processor.pipeline.worker import Models
from processor.reader import read_topic
from processor.replay import replay
from processor.sources import open_source
from tests.conftest import SPARKOV_STREAM
from tests.pipeline_helpers import fresh_topics, settings_for, start_processor

VALID = [e.event for e in islice(open_source("sparkov", SPARKOV_STREAM), 50)]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=40),
    st.sampled_from(["", " ", "\x00", "\ud800", "1e400", "NaN", "2020-01-01", "USD", "usd"]),
)
KEYS = st.text(min_size=1, max_size=8) | st.text(  # lone surrogates too
    st.characters(categories=["Cs"]), min_size=1, max_size=2
)
NUMBERS = ["1E+999999999999999999999", "1E-2000000", "1" * 5000, "-0.0", "1e400"]
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real event with fields dropped, replaced or added, then maybe damaged as bytes."""
    event = json.loads(json.dumps(draw(st.sampled_from(VALID))))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "replace", "add", "nested"]))
        key = draw(st.sampled_from(sorted(event)))
        if action == "drop":
            event.pop(key, None)
        elif action == "replace":
            event[key] = draw(VALUES)
        elif action == "add":
            event[draw(KEYS)] = draw(VALUES)
        elif isinstance(event.get("merchant"), dict):
            event["merchant"][draw(st.sampled_from(["name", "lat", "category"]))] = draw(VALUES)
    raw = json.dumps(event, ensure_ascii=draw(st.booleans())).encode("utf-8", "surrogatepass")
    if draw(st.booleans()) and b'"amount": "' in raw:  # a raw JSON number no dumps writes
        amount = raw.index(b'"amount": "') + len(b'"amount": ')
        end = raw.index(b'"', amount + 1) + 1
        raw = raw[:amount] + draw(st.sampled_from(NUMBERS)).encode() + raw[end:]
    cut = draw(st.sampled_from([None, "truncate", "flip"]))
    if cut == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif cut == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1 :]
    return raw


@given(mutated())
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_decoding_a_mutated_event_gives_exactly_one_outcome(value: bytes) -> None:
    result = decode(value, "transaction", 1_000_000)
    outcomes = [result.event is not None, result.reason is not None, result.skipped]
    assert sum(outcomes) == 1
    if result.event is not None:
        json.loads(result.event.model_dump_json())  # a valid event always serialises
    if result.reason is not None:
        assert result.detail
        origin = Origin("tx", 0, 0, None, b"k", datetime.now(UTC), value)
        letter = dead_letter(origin, value, result.reason, result.detail)
        json.loads(letter.model_dump_json())  # and so does every dead letter


@pytest.fixture(scope="module")
def live(broker: str, model_dir: Path, bundle, embedder, device):
    """One processor for every example: each example's records must all come out."""
    topics = fresh_topics()
    ensure_topics(broker, topics.all(), partitions=3)
    running = start_processor(
        settings_for(broker, topics, model_dir), Models(embedder, bundle, device)
    )
    yield {"running": running, "topics": topics, "broker": broker, "sent": 0}
    running.stop()


@pytest.mark.broker
@pytest.mark.slow
@given(st.lists(mutated(), min_size=1, max_size=25))
@settings(
    max_examples=30,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
def test_every_mutated_event_streamed_through_the_processor_is_accounted_for(
    live: dict, records: list[bytes]
) -> None:
    running, topics = live["running"], live["topics"]
    replay(
        [],
        topics.transactions,
        {"bootstrap.servers": live["broker"]},
        progress=False,
        extra_records=[(str(i).encode(), v) for i, v in enumerate(records)],
    )
    live["sent"] += len(records)
    stats = running.wait_done(live["sent"], timeout=60).as_dict()
    assert stats["consumed"] == live["sent"]
    assert stats["enriched"] + stats["dead_lettered"] + stats["skipped"] == live["sent"]


@pytest.mark.broker
@pytest.mark.slow
def test_the_outputs_of_the_mutated_stream_match_the_counts(live: dict) -> None:
    # runs after the property test in this module: the topics hold what its examples sent
    if not live["sent"]:
        pytest.skip("the property test did not run")
    running, topics = live["running"], live["topics"]
    stats = running.processor.stats.as_dict()
    enriched = sum(1 for _ in read_topic(live["broker"], topics.transactions_enriched))
    dead = sum(1 for _ in read_topic(live["broker"], topics.dead_letters))
    assert enriched == stats["enriched"] and dead == stats["dead_lettered"]
    assert enriched + dead + stats["skipped"] == live["sent"]
    assert enriched > 0 and dead > 0, "the examples should hold valid and broken events"
