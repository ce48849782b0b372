"""The broker goes away mid-run and comes back: the processor survives, /readyz turns false
then true, work resumes and nothing is lost.

The outage is made by a TCP proxy the broker advertises (tests/tcp_proxy.py): every client
connection drops and new ones are refused for longer than the session timeout, while the broker
keeps its state, as a Kafka broker restarted with its logs on disk does. (The embedded Tansu keeps
everything in memory, so restarting its process would be a different event: a new, empty
cluster.)
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
import uuid
from itertools import islice
from pathlib import Path

import pytest

from processor.broker import EmbeddedBroker, ensure_topics, free_port
from processor.chaos import Feeder, GroupOffsets, transaction_record
from processor.checker import compare, read_outputs
from processor.metrics import Health, Metrics, MetricsServer
from processor.pipeline.service import TXN_GRACE_S, StreamProcessor
from processor.pipeline.worker import Models
from processor.sources import open_source
from tests.conftest import SPARKOV_STREAM
from tests.pipeline_helpers import fresh_topics, settings_for
from tests.tcp_proxy import TcpProxy

pytestmark = [pytest.mark.broker, pytest.mark.slow]

EVENTS = 1500
RATE = 60.0
OUTAGE_S = 10.0  # longer than session.timeout.ms (6 s): the group drops the member meanwhile


class Replica:
    """One in-process processor with its /readyz served on a free port."""

    def __init__(self, settings, models: Models) -> None:
        self.metrics, self.health = Metrics(gpu=False), Health()
        self.server = MetricsServer(self.metrics, self.health, "127.0.0.1", 0).start()
        self.processor = StreamProcessor(
            settings, settings.bootstrap_servers, models, self.metrics, self.health
        )
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.processor.run()
        except BaseException as exc:  # reported by the test
            self.failure = exc

    def readyz(self) -> int:
        try:
            url = f"http://127.0.0.1:{self.server.port}/readyz"
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def stop(self) -> None:
        self.processor.stop()
        self.thread.join(60)
        self.server.stop()


def wait_for(condition, timeout: float, what: str, replica: Replica) -> None:
    started = time.monotonic()
    while not condition():
        assert replica.thread.is_alive(), f"the processor stopped ({replica.failure!r}): {what}"
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.2)


class Outage:
    """A broker behind a proxy, fresh topics, a paced feed and one processor replica."""

    def __init__(self, tmp_path: Path, models: Models, model_dir: Path, **settings) -> None:
        self.proxy = TcpProxy(free_port(), broker_port := free_port()).start()
        self.broker = EmbeddedBroker(
            broker_port, log_file=tmp_path / "tansu.log", advertised_port=self.proxy.listen_port
        ).start()
        self.bootstrap = self.broker.bootstrap_servers  # the proxy
        self.topics = fresh_topics()
        ensure_topics(self.bootstrap, self.topics.all(), partitions=3)
        group = f"test-outage-{uuid.uuid4().hex[:8]}"
        self.settings = settings_for(
            self.bootstrap, self.topics, model_dir, group_id=group, **settings
        )
        self.events = list(islice(open_source("sparkov", SPARKOV_STREAM), EVENTS))
        self.feeder = Feeder(self.bootstrap, {"transactions": self.topics.transactions})
        self.offsets = GroupOffsets(self.bootstrap, group, [self.topics.transactions], 3)
        self.replica = Replica(self.settings, models)
        self.feeder.start([transaction_record(e) for e in self.events], rate=RATE)

    def committed(self) -> int:
        return sum(self.offsets.committed().values())

    def cut_while_running(self) -> None:
        """Wait for progress, cut the broker off for OUTAGE_S, check /readyz, restore it."""
        replica = self.replica
        wait_for(lambda: replica.readyz() == 200, 60, "readiness", replica)
        wait_for(lambda: self.committed() >= 200, 60, "progress", replica)
        self.proxy.cut()
        cut_at = time.monotonic()
        wait_for(lambda: replica.readyz() == 503, OUTAGE_S, "/readyz to turn false", replica)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
        assert replica.thread.is_alive(), replica.failure
        self.proxy.restore()

    def close(self):
        self.replica.stop()
        self.offsets.close()
        result = compare(
            [e.event["event_id"] for e in self.events], read_outputs(self.bootstrap, self.topics)
        )
        self.proxy.cut()
        self.broker.stop()
        return result


@pytest.mark.parametrize("mode", ["at-least-once", "exactly-once"])
def test_processor_survives_a_broker_outage_and_resumes(
    model_dir: Path, bundle, embedder, device, tmp_path: Path, mode: str
) -> None:
    outage = Outage(tmp_path, Models(embedder, bundle, device), model_dir, delivery=mode)
    replica = outage.replica
    try:
        outage.cut_while_running()
        before = outage.committed()
        wait_for(lambda: replica.readyz() == 200, 90, "/readyz to turn true again", replica)
        wait_for(lambda: outage.committed() >= before + 100, 90, "work to resume", replica)
        outage.feeder.done.wait(120)
        assert outage.feeder.error is None and not outage.feeder.failed, outage.feeder.failed

        def all_committed() -> bool:
            _, ends = outage.feeder.snapshot()
            committed = outage.offsets.committed()
            return all(committed.get(p, 0) >= end for p, end in ends.items())

        wait_for(all_committed, 120, "every offset to be committed", replica)
        if outage.feeder.unplaced:  # their offsets are unknown: wait for their outputs instead
            ids = [e.event["event_id"] for e in outage.events]

            def all_out() -> bool:
                return compare(ids, read_outputs(outage.bootstrap, outage.topics)).losses == 0

            wait_for(all_out, 120, "the outputs of records delivered without an offset", replica)
        replica.stop()
        assert replica.failure is None, replica.failure
    finally:
        result = outage.close()
    assert result.losses == 0, result.lost_ids
    assert result.unexpected == 0
    if mode == "exactly-once":
        assert result.duplicates == 0 and result.alert_duplicates == 0, result.duplicate_ids


def test_a_transactional_call_that_hangs_stops_the_processor_within_its_bound(
    model_dir: Path, bundle, embedder, device, tmp_path: Path
) -> None:
    """With librdkafka's default re-bootstrap, send_offsets_to_transaction can hang for good
    after the outage (the processor turns that off by default; this test turns it back on).
    The watchdog must then stop the processor, naming the call, instead of stalling."""
    timeout_s = 20  # longer than the outage: the flush during it must not abort the batch
    outage = Outage(
        tmp_path,
        Models(embedder, bundle, device),
        model_dir,
        delivery="exactly-once",
        transaction_timeout_s=timeout_s,
        producer_kafka={"metadata.recovery.strategy": "rebootstrap"},
    )
    replica = outage.replica
    try:
        outage.cut_while_running()
        before = outage.committed()
        deadline = time.monotonic() + timeout_s + TXN_GRACE_S + 30
        while replica.thread.is_alive() and outage.committed() < before + 100:
            assert time.monotonic() < deadline, "the processor neither resumed nor stopped"
            time.sleep(0.2)
        if replica.thread.is_alive():
            pytest.skip("the transaction completed after the outage: librdkafka did not hang")
        assert "send_offsets_to_transaction has not returned" in str(replica.failure)
    finally:
        outage.close()


def test_outputs_unacknowledged_past_message_timeout_stop_the_processor_not_the_dlq(
    model_dir: Path, bundle, embedder, device, tmp_path: Path
) -> None:
    """An outage longer than message.timeout.ms is the pipeline's failure, not the events':
    the processor stops without committing them, and nothing goes to the dead-letter topic."""
    outage = Outage(
        tmp_path,
        Models(embedder, bundle, device),
        model_dir,
        producer_kafka={"message.timeout.ms": 3000},
        test_batch_delay_ms=500,  # a batch is always in the worker when the broker goes
    )
    replica = outage.replica
    try:
        wait_for(lambda: outage.committed() >= 200, 60, "progress", replica)
        outage.proxy.cut()
        replica.thread.join(OUTAGE_S + 30)
        outage.proxy.restore()
        assert not replica.thread.is_alive(), "still running after its outputs timed out"
        assert "message.timeout.ms" in str(replica.failure), replica.failure
        committed_at_stop = outage.committed()
    finally:
        outage.proxy.restore()
        result = outage.close()
    assert result.dead_letter_records == 0
    # every committed input has its output: the committed offsets cover delivered events only
    assert result.delivered >= committed_at_stop
