"""The processor end to end, on the real broker, with real events and a few malformed ones."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from itertools import islice
from pathlib import Path

import jsonschema
import pytest
from confluent_kafka import Consumer, TopicPartition

from processor.pipeline.worker import Models
from processor.reader import read_topic
from processor.replay import replay
from processor.sources import open_source
from tests.conftest import FILINGS, RECEIPTS_TEST, ROOT, SPARKOV_STREAM
from tests.pipeline_helpers import fresh_topics, settings_for, start_processor

pytestmark = [pytest.mark.broker, pytest.mark.slow]

SCHEMAS = ROOT / "schemas" / "json"
MALFORMED = [
    (b"k1", b"{not json", "not_json"),
    (b"k2", b"\xc3\x28 invalid utf-8", "not_utf8"),
    (b"k3", b"", "empty_payload"),
    (
        b"k4",
        b'{"event_id":"x","occurred_at":"2020-06-21T12:00:00Z","account_id":"1",'
        b'"amount":"1.00","currency":"ABC","merchant":{"name":"m"}}',
        "schema_invalid",
    ),
    (
        b"k5",
        b'{"event_id":"y","occurred_at":"2020-06-21 12:00:00","account_id":"1",'
        b'"amount":"1.00","currency":"USD","merchant":{"name":"m"}}',
        "schema_invalid",
    ),
    (b"k6", b'{"type":"transaction","version":9}', "unknown_type"),
    (None, b'{"amount": NaN}', "not_json"),
]


def schema(name: str) -> dict:
    return json.loads((SCHEMAS / f"{name}.schema.json").read_text())


@pytest.fixture(scope="module")
def run(broker: str, model_dir: Path, bundle, embedder, device) -> dict:
    """One processor run over 400 real transactions, 30 real documents and malformed input."""
    topics = fresh_topics()
    settings = settings_for(broker, topics, model_dir)
    running = start_processor(settings, Models(embedder, bundle, device))
    transactions = list(islice(open_source("sparkov", SPARKOV_STREAM), 400))
    documents = list(islice(open_source("sroie", RECEIPTS_TEST), 25))
    documents += list(islice(open_source("sec", FILINGS), 5))
    config = {"bootstrap.servers": broker}
    bad = [(k, v) for k, v, _ in MALFORMED] + [(b"tomb", None)]
    replay(transactions, topics.transactions, config, progress=False, extra_records=bad)
    replay(documents, topics.documents, config, progress=False)
    total = len(transactions) + len(documents) + len(bad)
    running.wait_done(total)
    stats = running.stop().as_dict()
    outputs = {
        name: [json.loads(r.value) for r in read_topic(broker, getattr(topics, name))]
        for name in ("transactions_enriched", "documents_enriched", "alerts", "dead_letters")
    }
    return {
        "topics": topics,
        "settings": settings,
        "stats": stats,
        "outputs": outputs,
        "total": total,
        "transactions": transactions,
        "documents": documents,
    }


def test_every_consumed_record_is_enriched_dead_lettered_or_skipped(run: dict) -> None:
    stats, out = run["stats"], run["outputs"]
    assert stats["consumed"] == run["total"]
    enriched = len(out["transactions_enriched"]) + len(out["documents_enriched"])
    assert enriched + len(out["dead_letters"]) + stats["skipped"] == run["total"]
    assert stats["skipped"] == 1  # the tombstone

    sent_tx = {e.event["event_id"] for e in run["transactions"]}
    sent_docs = {e.event["event_id"] for e in run["documents"]}
    assert Counter(r["event_id"] for r in out["transactions_enriched"]) == Counter(sent_tx)
    assert Counter(r["event_id"] for r in out["documents_enriched"]) == Counter(sent_docs)


def test_malformed_records_reach_the_dead_letter_topic_with_reason_and_bytes(run: dict) -> None:
    import base64

    dead = run["outputs"]["dead_letters"]
    by_value = {base64.b64decode(d["value_b64"]): d for d in dead if d["value_b64"] is not None}
    for key, value, reason in MALFORMED:
        record = by_value[value]
        assert record["reason"] == reason, record["detail"]
        assert record["source"]["topic"] == run["topics"].transactions
        assert record["detail"]
        expected_key = base64.b64encode(key).decode() if key is not None else None
        assert record["key_b64"] == expected_key


def test_offsets_are_committed_to_the_end_of_every_input_partition(run: dict, broker: str) -> None:
    topics, settings = run["topics"], run["settings"]
    consumer = Consumer({"bootstrap.servers": broker, "group.id": settings.group_id})
    try:
        committed = 0
        for topic in topics.inputs():
            parts = [TopicPartition(topic, p) for p in range(3)]
            for tp in consumer.committed(parts, timeout=10):
                committed += max(tp.offset, 0)
    finally:
        consumer.close()
    assert committed == run["total"]  # offsets are 0-based and dense here


def test_outputs_validate_against_the_exported_json_schemas(run: dict) -> None:
    out = run["outputs"]
    checks = {
        "transactions_enriched": "transaction.enriched.v1",
        "documents_enriched": "document.enriched.v1",
        "alerts": "alert.v1",
        "dead_letters": "dead_letter.v1",
    }
    for name, schema_name in checks.items():
        validator = jsonschema.Draft202012Validator(schema(schema_name))
        for record in out[name]:
            validator.validate(record)


def test_enriched_transactions_carry_score_embedding_and_explanation(run: dict, bundle) -> None:
    for record in run["outputs"]["transactions_enriched"]:
        anomaly = record["anomaly"]
        assert 0.0 <= anomaly["score"] <= 1.0
        assert anomaly["is_anomaly"] == (anomaly["score"] >= anomaly["threshold"])
        assert len(anomaly["top_features"]) == 3
        assert record["embedding"]["dim"] == 384 and len(record["embedding"]["values"]) == 384
        assert record["model"]["anomaly_model"] == bundle.version
    alerts = {a["event_id"] for a in run["outputs"]["alerts"]}
    flagged = {
        r["event_id"]
        for r in run["outputs"]["transactions_enriched"]
        if r["anomaly"]["is_anomaly"]
    }
    assert alerts == flagged


def test_amounts_survive_the_pipeline_exactly(run: dict) -> None:
    sent = {e.event["event_id"]: e.event["amount"] for e in run["transactions"]}
    for record in run["outputs"]["transactions_enriched"]:
        assert record["event"]["amount"] == sent[record["event_id"]]


def test_long_documents_are_chunked_not_cut(run: dict) -> None:
    docs = run["outputs"]["documents_enriched"]
    long_docs = [d for d in docs if d["tokens"] > 254]
    assert long_docs, "the sample should contain a filing longer than the model window"
    for d in long_docs:
        assert d["chunks"] > 1 and not d["truncated"]
    for d in docs:
        assert 0.0 <= d["novelty"]["score"] <= 1.0


def test_a_downstream_aiokafka_consumer_reads_and_validates_enriched_topics(
    run: dict, broker: str
) -> None:
    from aiokafka import AIOKafkaConsumer

    topics = run["topics"]
    validators = {
        topics.transactions_enriched: jsonschema.Draft202012Validator(
            schema("transaction.enriched.v1")
        ),
        topics.documents_enriched: jsonschema.Draft202012Validator(schema("document.enriched.v1")),
    }
    expected = len(run["transactions"]) + len(run["documents"])

    async def consume() -> int:
        consumer = AIOKafkaConsumer(
            *validators,
            bootstrap_servers=broker,
            group_id="downstream-aiokafka",
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            isolation_level="read_committed",
        )
        await consumer.start()
        seen = 0
        try:
            while seen < expected:
                batches = await asyncio.wait_for(consumer.getmany(timeout_ms=1000), 60)
                for tp, messages in batches.items():
                    for message in messages:
                        validators[tp.topic].validate(json.loads(message.value))
                        seen += 1
        finally:
            await consumer.stop()
        return seen

    assert asyncio.run(asyncio.wait_for(consume(), 120)) == expected
