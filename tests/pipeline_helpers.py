"""Helpers for tests that run the real processor against the real embedded broker."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass

from confluent_kafka import Consumer, TopicPartition

from processor.broker import ensure_topics
from processor.config import Settings, Topics
from processor.metrics import Health, Metrics
from processor.pipeline.service import RunStats, StreamProcessor
from processor.pipeline.worker import Models


def fresh_topics() -> Topics:
    """Topic names no other test uses."""
    tag = uuid.uuid4().hex[:8]
    return Topics(
        transactions=f"tx.raw.{tag}",
        documents=f"docs.raw.{tag}",
        transactions_enriched=f"tx.enriched.{tag}",
        documents_enriched=f"docs.enriched.{tag}",
        alerts=f"alerts.{tag}",
        dead_letters=f"dlq.{tag}",
    )


def settings_for(broker: str, topics: Topics, model_dir, **extra) -> Settings:
    return Settings(
        bootstrap_servers=broker,
        group_id=extra.pop("group_id", f"test-{uuid.uuid4().hex[:8]}"),
        topics=topics,
        model_dir=model_dir,
        metrics_port=0,
        batch_max_wait_ms=20,
        consumer_kafka={"session.timeout.ms": 6000, **extra.pop("consumer_kafka", {})},
        **extra,
    )


@dataclass
class Running:
    processor: StreamProcessor
    thread: threading.Thread
    result: dict

    def wait_done(self, expected: int, timeout: float = 180.0) -> RunStats:
        """Wait until ``expected`` records reached a final outcome and all is acknowledged."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "error" in self.result:
                raise self.result["error"]
            s = self.processor.stats.as_dict()
            done = s["enriched"] + s["dead_lettered"] + s["skipped"]
            if done >= expected and self.processor.tracker.in_flight() == 0:
                return self.processor.stats
            time.sleep(0.2)
        raise TimeoutError(f"processor did not finish {expected} records: {s}")

    def stop(self) -> RunStats:
        self.processor.stop()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive(), "processor did not stop within 60 s"
        if "error" in self.result:
            raise self.result["error"]
        return self.processor.stats


def start_processor(settings: Settings, models: Models) -> Running:
    ensure_topics(settings.bootstrap_servers, settings.topics.all(), partitions=3)
    processor = StreamProcessor(
        settings, settings.bootstrap_servers, models, Metrics(gpu=False), Health()
    )
    result: dict = {}

    def target() -> None:
        try:
            processor.run()
        except BaseException as exc:  # surfaced by wait_done/stop
            result["error"] = exc

    thread = threading.Thread(target=target, name="processor-under-test", daemon=True)
    thread.start()
    return Running(processor, thread, result)


def committed_total(broker: str, group: str, topic: str) -> int:
    """Sum over the topic's partitions of the group's committed offsets (dense 0-based logs)."""
    consumer = Consumer({"bootstrap.servers": broker, "group.id": group})
    try:
        count = len(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
        parts = consumer.committed([TopicPartition(topic, p) for p in range(count)], timeout=10)
        return sum(max(tp.offset, 0) for tp in parts)
    finally:
        consumer.close()
