"""`processor run`: the consume -> validate -> infer -> produce -> commit loop.

Threads: the main thread polls the consumer (it never blocks on the model, so the group keeps
its heartbeat and ``max.poll.interval.ms`` is never exceeded), decodes and validates, serves
delivery reports and commits. One inference worker owns the device. When too many records are
in flight the consumer pauses its partitions and keeps polling; it resumes once half drained.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from processor.config import ConfigError, Settings
from processor.errors import ProcessorError
from processor.logs import ClientLog
from processor.metrics import Health, Metrics
from processor.pipeline import limits, records, txn_id
from processor.pipeline.decode import Decoded, decode
from processor.pipeline.offsets import OffsetTracker
from processor.pipeline.records import Origin
from processor.pipeline.worker import InferenceWorker, Models, Output, Topics, WorkItem
from schemas import DeadLetterReason

log = logging.getLogger(__name__)

LAG_CHECK_S = 5.0
MAX_POLL_BATCH = 500
METADATA_REFRESH_MS = 10_000
TXN_GRACE_S = 15.0  # past a transactional call's own timeout, the watchdog stops the process


# Delivery errors that belong to the record itself: retrying cannot help, so its input goes to
# the dead-letter topic as output_rejected. Any other failure (a timeout, an unreachable broker,
# a missing topic, no authorisation) is the pipeline's: the processor stops without committing.
RECORD_REFUSED = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,  # from the broker it applies to the whole batch sent
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_RECORD,
        KafkaError.RECORD_LIST_TOO_LARGE,
        KafkaError.POLICY_VIOLATION,
    }
)


class FatalError(ProcessorError):
    """The processor cannot go on without losing data; it stops without committing further."""


class _TransactionAbandoned(Exception):
    """A transactional call returned after the watchdog had given up on its transaction."""


@dataclass
class RunStats:
    """Counts of one run; in = enriched + dead_lettered + skipped once drained."""

    consumed: Counter = field(default_factory=Counter)
    enriched: Counter = field(default_factory=Counter)
    dead_lettered: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)
    alerts: int = 0
    revocations: int = 0  # rebalances that took partitions away while running
    started: float = field(default_factory=time.time)
    ended: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict:
        with self.lock:
            return {
                "consumed": sum(self.consumed.values()),
                "consumed_by_topic": dict(self.consumed),
                "enriched": sum(self.enriched.values()),
                "enriched_by_topic": dict(self.enriched),
                "dead_lettered": sum(self.dead_lettered.values()),
                "dead_lettered_by_reason": dict(self.dead_lettered),
                "skipped": sum(self.skipped.values()),
                "alerts": self.alerts,
                "revocations": self.revocations,
                "seconds": (self.ended or time.time()) - self.started,
            }


class StreamProcessor:
    def __init__(
        self,
        settings: Settings,
        bootstrap: str,
        models: Models,
        metrics: Metrics,
        health: Health,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.metrics = metrics
        self.health = health
        self.stats = RunStats()
        self.tracker = OffsetTracker()
        self._stop = threading.Event()
        self._fatal: str | None = None
        self._fatal_consequence = False
        self._paused = False
        self._closing = False
        self._rejected: set[tuple[str, int, int, int | None]] = set()
        self._last_message = time.monotonic()
        self.eos = settings.delivery == "exactly-once"
        self._txn_slot: txn_id.SlotClaim | None = None
        self._transactional_id = ""
        self._group_metadata = None
        self._txn_call: tuple[str, float] | None = None  # (name, started) while one blocks
        self._txn_abandoned = False
        self._lost_epoch = 0  # bumped when partitions are lost (exactly-once aborts then)
        self._txn_epoch = 0
        self._expected = {
            self.topics.transactions: "transaction",
            self.topics.documents: "document",
        }
        common = {
            "bootstrap.servers": bootstrap,
            "error_cb": self._on_kafka_error,
            "logger": ClientLog(self._on_client_fatal),
        }
        self.limits = limits.plan(
            settings,
            limits.read_topic_limits(bootstrap, limits.output_topics(settings), settings.kafka),
        )
        try:
            self.consumer = Consumer(
                {
                    "group.id": settings.group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "partition.assignment.strategy": "cooperative-sticky",
                    "max.poll.interval.ms": 300_000,
                    "isolation.level": "read_committed",
                    # an input topic created after the start (or partitions added) is seen
                    # within this time; librdkafka's default is five minutes
                    "topic.metadata.refresh.interval.ms": METADATA_REFRESH_MS,
                    **common,
                    **settings.kafka,
                    **settings.consumer_kafka,
                }
            )
            self.producer = Producer(
                {
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 5,
                    **self._transactional(settings),
                    **common,
                    **settings.kafka,
                    **settings.producer_kafka,
                    **self.limits.producer_overrides,
                }
            )
        except KafkaException as exc:
            raise ConfigError(
                "librdkafka refused the client settings (PROCESSOR_KAFKA, "
                f"PROCESSOR_CONSUMER_KAFKA, PROCESSOR_PRODUCER_KAFKA): {exc.args[0].str()}"
            ) from None
        self.worker = InferenceWorker(
            models,
            self,
            metrics,
            Topics(
                self.topics.transactions_enriched,
                self.topics.documents_enriched,
                self.topics.alerts,
            ),
            batch_size=settings.batch_size,
            max_wait_s=settings.batch_max_wait_ms / 1000,
            max_tokens=settings.batch_max_tokens,
            max_chunks=settings.max_document_chunks,
            delay_s=settings.test_batch_delay_ms / 1000,
            encoding=settings.embedding_encoding,
            is_live=lambda o: self.tracker.is_tracked(
                (o.topic, o.partition), o.offset, o.incarnation
            ),
        )
        self.health.model_loaded = True

    def _transactional(self, settings: Settings) -> dict:
        if settings.delivery != "exactly-once":
            return {}
        if settings.transactional_id:
            transactional_id = settings.transactional_id
        else:  # stable across restarts, unique among the replicas on this host
            self._txn_slot = txn_id.claim(settings.group_id)
            transactional_id = self._txn_slot.transactional_id
        log.info("exactly-once: transactional.id %s", transactional_id)
        self._transactional_id = transactional_id
        return {
            "transactional.id": transactional_id,
            "transaction.timeout.ms": int(settings.transaction_timeout_s * 1000),
            # After every broker was unreachable, librdkafka (2.16) re-bootstraps and drops the
            # cached coordinator; send_offsets_to_transaction then never returns, whatever its
            # timeout (confluentinc/librdkafka#5456, #5511; seen in tests/test_broker_outage.py).
            # Without re-bootstrap the producer reconnects to the brokers it knows and the
            # transaction completes. Set it back in PROCESSOR_PRODUCER_KAFKA if your brokers'
            # addresses all change at once; the watchdog in _check_failures then still stops a
            # call that hangs.
            "metadata.recovery.strategy": "none",
        }

    # -- lifecycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to drain and stop (safe from a signal handler)."""
        self._stop.set()

    def run(self) -> RunStats:
        self.consumer.subscribe(
            self.topics.inputs(),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "processor started group=%s inputs=%s", self.settings.group_id, self.topics.inputs()
        )
        if self.eos:
            self.producer.init_transactions(self.settings.transaction_timeout_s)
            log.info("exactly-once: transactional producer ready, one transaction per batch")
        self.worker.start()
        next_commit = next_lag = time.monotonic()
        try:
            while not self._stop.is_set():
                self._check_failures()
                room = self.settings.max_in_flight - self.tracker.in_flight()
                for msg in self.consumer.consume(max(1, min(MAX_POLL_BATCH, room)), 0.05):
                    self._on_message(msg)
                if self.eos:  # read here: the call blocks while another thread polls
                    self._group_metadata = self.consumer.consumer_group_metadata()
                self.producer.poll(0)
                self._backpressure()
                now = time.monotonic()
                if now >= next_commit:
                    self.commit()
                    next_commit = now + self.settings.commit_interval_ms / 1000
                if now >= next_lag:
                    drained = self._check_lag()
                    next_lag = now + (1.0 if self.settings.stop_when_drained else LAG_CHECK_S)
                    idle = now - self._last_message >= self.settings.idle_exit_s
                    if drained and idle and self.settings.stop_when_drained:
                        log.info("input drained; stopping")
                        break
        except FatalError as exc:
            if self._fatal is None:  # raised directly (a consumer error)
                self._fail(str(exc))
        except KafkaException as exc:  # a client's fatal error, raised by its poll
            self._fail(self._fatal_message(exc.args[0]))
        finally:
            self._shutdown()
        # the drain serves the error callback, which may name the cause of what stopped us
        if self._fatal is not None:
            raise FatalError(self._fatal)
        return self.stats

    def _producer_call(self, call, timeout: float) -> None:
        """poll or flush during the drain; a fatal producer error is recorded, not raised."""
        try:
            call(timeout)
        except KafkaException as exc:
            self._fail(self._fatal_message(exc.args[0]))
        except SystemError as exc:  # see _txn
            self._fail(f"the producer failed ({exc})", consequence=True)

    def _fail(self, message: str, consequence: bool = False) -> None:
        """Record why the processor must stop; the first cause is the one reported, except
        that a cause replaces a ``consequence`` (records purged after a fatal producer error
        are reported before the error itself)."""
        if self._fatal is None or (self._fatal_consequence and not consequence):
            self._fatal = message
            self._fatal_consequence = consequence

    @property
    def failed(self) -> bool:
        """A cause to stop is recorded (the worker's errors after it are its consequences)."""
        return self._fatal is not None

    def _check_failures(self) -> None:
        call = self._txn_call
        if call is not None and self._fatal is None:
            name, started = call
            waited = time.monotonic() - started
            if waited > self.settings.transaction_timeout_s + TXN_GRACE_S:
                self._txn_abandoned = True
                self._fail(
                    f"{name} has not returned after {waited:.0f} s although its timeout is "
                    f"{self.settings.transaction_timeout_s:.0f} s (librdkafka can block past it "
                    "when the coordinator went away: confluentinc/librdkafka#5456); stopping so "
                    "that a restart resumes from the last committed transaction"
                )
        if self._fatal is not None:
            raise FatalError(self._fatal)
        if self.worker.error is not None:
            self._fail(f"inference worker died: {self.worker.error!r}")
            raise FatalError(self._fatal)

    def _shutdown(self) -> None:
        log.info("draining in-flight work budget_s=%.0f", self.settings.shutdown_timeout_s)
        assignment = self.consumer.assignment()
        if assignment:
            self.consumer.pause(assignment)
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        while self.tracker.in_flight() and time.monotonic() < deadline and self._fatal is None:
            if self.worker.error is not None:
                break
            self.consumer.poll(0.05)
            self._producer_call(self.producer.poll, 0.05)
        self.worker.stop()
        # after a fatal error the worker may be stuck in a call that never returns
        self.worker.join(timeout=1.0 if self._fatal else max(1.0, deadline - time.monotonic()))
        self._producer_call(self.producer.flush, max(1.0, deadline - time.monotonic()))
        if self._fatal is None:
            self.commit()
        left = self.tracker.in_flight()
        if left:
            log.warning("stopping with unfinished records count=%d (not committed)", left)
        self._closing = True
        self.consumer.close()
        if self._txn_slot is not None:  # a successor on this host may take the id now
            self._txn_slot.release()
        self.stats.ended = time.time()
        self.health.assignment_held = False
        log.info("processor stopped stats=%s", json.dumps(self.stats.as_dict()))
        if self.settings.stats_file:
            Path(self.settings.stats_file).write_text(json.dumps(self.stats.as_dict(), indent=2))

    # -- input -------------------------------------------------------------------------------

    def _on_message(self, msg) -> None:
        if msg.error():
            err = msg.error()
            if err.code() == KafkaError._PARTITION_EOF:
                return
            if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                self.health.broker_reachable = True  # the broker said so
                log.warning("input topic missing error=%r (waiting for it)", err.str())
                return
            if err.fatal():
                raise FatalError(f"consumer error: {err.str()}")
            log.warning("consumer error error=%r", err.str())
            return
        self._last_message = time.monotonic()
        self.health.broker_reachable = True
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        ts_type, ts = msg.timestamp()
        abandoned = self.tracker.add((topic, partition), offset)
        origin = Origin(
            topic,
            partition,
            offset,
            ts if ts_type else None,
            msg.key(),
            records.now(),
            msg.value(),
            self.tracker.incarnation((topic, partition)),
        )
        if abandoned:
            log.warning(
                "offsets went back: log reset under the consumer topic=%s partition=%d "
                "offset=%d abandoned=%d",
                topic,
                partition,
                offset,
                abandoned,
            )
        with self.stats.lock:
            self.stats.consumed[topic] += 1
        self.metrics.consumed.labels(topic).inc()

        try:
            result = decode(msg.value(), self._expected[topic], self.settings.max_message_bytes)
        except Exception as exc:  # a decoder bug must not stop the partition: dead-letter it
            log.exception(
                "decoding failed topic=%s partition=%d offset=%d", topic, partition, offset
            )
            result = Decoded(
                reason=DeadLetterReason.SCHEMA_INVALID,
                detail=f"unexpected decoding error {type(exc).__name__}: {exc}",
            )
        if result.skipped:
            self.tracker.resolve((topic, partition), offset, 0, origin.incarnation)
            with self.stats.lock:
                self.stats.skipped[topic] += 1
            self.metrics.events.labels(topic, "skipped").inc()
        elif result.reason is not None and self.eos:  # written in the worker's transaction
            self.worker.queue.put(WorkItem(origin, None, dead=(result.reason, result.detail)))
        elif result.reason is not None:
            self.dead(origin, result.reason, result.detail)
        else:
            self.worker.queue.put(WorkItem(origin, result.event))

    # -- output (called by the worker) -------------------------------------------------------

    def batch_started(self) -> bool:
        """False when no batch may start: the worker stops, and the process follows."""
        if not self.eos:
            return True
        if self._fatal is not None or self._txn_abandoned:
            # after an abort the aborted batch's offsets still look done to the tracker: no
            # later transaction may commit them
            return False
        self._txn_epoch = self._lost_epoch
        self.producer.begin_transaction()
        return True

    def batch_finished(self) -> None:
        """Exactly-once: the batch's outputs and its input offsets commit atomically."""
        if not self.eos:
            return
        timeout = self.settings.transaction_timeout_s
        try:
            self._txn("flush", self.producer.flush, timeout)  # delivery reports -> acks
            if self.settings.test_commit_delay_ms:  # test hook: widen the window before commit
                time.sleep(self.settings.test_commit_delay_ms / 1000)
            if self._txn_epoch != self._lost_epoch:
                # the group took the partitions away while this transaction was open: its
                # outputs must not become visible (the new owner writes them again)
                self._abort_lost()
                return
            offsets = self.tracker.committable()
            if offsets:
                self._txn(
                    "send_offsets_to_transaction",
                    self.producer.send_offsets_to_transaction,
                    [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    self._group_metadata,
                    timeout,
                )
            self._txn("commit_transaction", self.producer.commit_transaction, timeout)
        except KafkaException as exc:
            self._abort(exc)
            return
        except _TransactionAbandoned:
            return  # left open: the broker aborts it after transaction.timeout.ms
        self.tracker.mark_committed(offsets)
        self.metrics.commits.inc()

    def _txn(self, name: str, call, *args):
        """Run one blocking transactional call where the main thread's watchdog can see it."""
        self._txn_call = (name, time.monotonic())
        try:
            result = call(*args)
        except SystemError as exc:
            # confluent-kafka 2.16 returns NULL without an exception from a producer that had a
            # fatal error; the error callback reports the cause
            self._fail(f"the producer failed in {name} ({exc})", consequence=True)
            raise _TransactionAbandoned(name) from None
        finally:
            self._txn_call = None
        if self._txn_abandoned:  # the watchdog gave up on this transaction: never commit it
            raise _TransactionAbandoned(name)
        return result

    def idle_tick(self) -> None:
        """Exactly-once, worker idle: commit offsets resolved without a batch (e.g. tombstones)
        in a transaction of their own."""
        if self.eos and self._fatal is None and self.tracker.committable():
            if self.batch_started():
                self.batch_finished()

    def _abort(self, exc: KafkaException) -> None:
        # Rewinding every partition under a running consumer is not built: stop, and let the
        # restart resume from the last committed transaction (nothing of this one is visible).
        # The cause is recorded first, so that no other transaction begins meanwhile.
        err = exc.args[0]
        if err.fatal() or err.code() in FENCED:
            self._fail(self._fatal_message(err))
        else:
            self._fail(
                f"transaction aborted ({err.str()}); restart to resume from the last "
                "committed transaction"
            )
        self.metrics.commit_failures.inc()
        self._abort_transaction()

    def _abort_transaction(self) -> None:
        try:
            self._txn(
                "abort_transaction",
                self.producer.abort_transaction,
                self.settings.transaction_timeout_s,
            )
        except (KafkaException, _TransactionAbandoned):
            pass  # the broker aborts it after transaction.timeout.ms

    def _abort_lost(self) -> None:
        """The open transaction held outputs of partitions the group has taken away."""
        self.metrics.commit_failures.inc()
        if self.tracker.committable():  # records of partitions still held were in it too
            self._fail(
                "partitions were lost while a transaction held records of others; restart to "
                "resume from the last committed transaction"
            )
        self._abort_transaction()
        log.warning("transaction aborted: its partitions were lost to the group")

    def emit(self, origin: Origin, outputs: list[Output]) -> None:
        for topic, key, value in outputs:
            if not self.limits.fits(topic, key, value):
                # the broker would refuse it (in exactly-once, aborting the whole transaction):
                # the input goes to the dead-letter topic instead, and none of its outputs
                size = len(value) + len(key or b"")
                detail = (
                    f"output to {topic} ({size} bytes) refused: larger than the "
                    f"{self.limits.limit(topic)} bytes the topic takes"
                )
                self.dead(origin, DeadLetterReason.OUTPUT_REJECTED, detail)
                return
        tp = (origin.topic, origin.partition)
        if not self.tracker.resolve(tp, origin.offset, len(outputs), origin.incarnation):
            return  # partition revoked meanwhile: its new owner processes the record
        alerts = sum(1 for topic, _, _ in outputs if topic == self.topics.alerts)
        with self.stats.lock:
            self.stats.enriched[origin.topic] += 1
            self.stats.alerts += alerts
        self.metrics.events.labels(origin.topic, "enriched").inc()
        if alerts:
            self.metrics.alerts.inc(alerts)
        for topic, key, value in outputs:
            self._produce(topic, key, value, origin)

    def dead(self, origin: Origin, reason: DeadLetterReason, detail: str) -> None:
        tp = (origin.topic, origin.partition)
        if not self.tracker.resolve(tp, origin.offset, 1, origin.incarnation):
            return
        self._count_dead(origin, reason)
        record = records.dead_letter(origin, origin.value, reason, detail)
        self._produce(self.topics.dead_letters, _dead_key(origin), _json(record), origin)

    def _count_dead(self, origin: Origin, reason: DeadLetterReason) -> None:
        with self.stats.lock:
            self.stats.dead_lettered[reason.value] += 1
        self.metrics.events.labels(origin.topic, "dead_letter").inc()
        self.metrics.dead_letters.labels(reason.value).inc()

    def _produce(self, topic: str, key: bytes | None, value: bytes, origin: Origin) -> None:
        def on_delivery(err: KafkaError | None, msg) -> None:
            self._on_delivery(err, topic, origin, value)

        while True:
            try:
                self.producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                return
            except BufferError:  # local queue full: serve delivery reports, then retry
                self.metrics.queue_full.inc()
                self.producer.poll(0.05)
            except KafkaException as exc:  # refused at once, e.g. larger than message.max.bytes
                self._on_delivery(exc.args[0], topic, origin, value)
                return

    def _on_delivery(
        self, err: KafkaError | None, topic: str, origin: Origin, value: bytes
    ) -> None:
        tp = (origin.topic, origin.partition)
        if err is None:
            self.tracker.ack(tp, origin.offset, origin.incarnation)
            self.metrics.produced.labels(topic).inc()
            if origin.timestamp_ms and topic != self.topics.dead_letters:
                kind = "transaction" if topic == self.topics.transactions_enriched else "document"
                if topic != self.topics.alerts:
                    latency = time.time() - origin.timestamp_ms / 1000
                    self.metrics.latency.labels(kind).observe(max(latency, 0.0))
            return
        self.metrics.delivery_failures.labels(topic).inc()
        if err.code() == KafkaError._PURGE_QUEUE:  # the producer failed; its error says why
            self._fail(f"outputs to {topic} were purged ({err.str()})", consequence=True)
            return  # one line per purged record would bury that error
        log.error(
            "delivery failed topic=%s source_offset=%d error=%r", topic, origin.offset, err.str()
        )
        if topic == self.topics.dead_letters:
            self._fail(f"the dead-letter topic refused a record: {err.str()}")
            return
        if err.code() not in RECORD_REFUSED:  # not this record's fault: stop, don't dead-letter
            self._fail(_undeliverable(topic, err))
            return
        # The output cannot be written: the input goes to the dead-letter topic instead (once,
        # however many of its outputs fail), and its offset stays uncommitted until that record
        # is acknowledged.
        source = (origin.topic, origin.partition, origin.offset, origin.incarnation)
        if source in self._rejected:
            self.tracker.ack(tp, origin.offset, origin.incarnation)
            return
        self._rejected.add(source)
        with self.stats.lock:  # its final outcome is the dead letter, even if a sibling arrived
            if self.stats.enriched[origin.topic] > 0:
                self.stats.enriched[origin.topic] -= 1
        self._count_dead(origin, DeadLetterReason.OUTPUT_REJECTED)
        record = records.dead_letter(
            origin,
            origin.value,
            DeadLetterReason.OUTPUT_REJECTED,
            f"output to {topic} ({len(value)} bytes) refused: {err.str()}",
        )
        self._produce(self.topics.dead_letters, _dead_key(origin), _json(record), origin)

    # -- offsets, backpressure, rebalance ----------------------------------------------------

    def commit(self, only: set[tuple[str, int]] | None = None) -> None:
        if self.eos:
            return  # offsets are committed inside each batch's transaction
        offsets = self.tracker.committable()
        if only is not None:
            offsets = {tp: o for tp, o in offsets.items() if tp in only}
        if not offsets:
            return
        try:
            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:
            self.metrics.commit_failures.inc()
            log.warning("commit failed error=%r (will retry)", str(exc))
            return
        self.tracker.mark_committed(offsets)
        self.metrics.commits.inc()

    def _backpressure(self) -> None:
        in_flight = self.tracker.in_flight()
        self.metrics.in_flight.set(in_flight)
        limit = self.settings.max_in_flight
        if not self._paused and in_flight >= limit:
            self._paused = True
            log.info("backpressure: pausing partitions in_flight=%d limit=%d", in_flight, limit)
        elif self._paused and in_flight <= limit // 2:
            self._paused = False
            assignment = self.consumer.assignment()
            self.consumer.resume(assignment)
            self.metrics.paused.set(0)
            log.info("backpressure: resumed in_flight=%d", in_flight)
        if self._paused:  # again each loop: partitions assigned meanwhile must pause too
            assignment = self.consumer.assignment()
            if assignment:
                self.consumer.pause(assignment)
            self.metrics.paused.set(len(assignment))

    def _check_lag(self) -> bool:
        """Export lag; True when every assigned partition is read to its end and all is done."""
        assignment = self.consumer.assignment()
        if not assignment:  # nothing to measure; still say whether the broker answers
            try:
                self.consumer.list_topics(self.topics.transactions, timeout=2)
                self.health.broker_reachable = True
            except KafkaException:
                self.health.broker_reachable = False
            return False
        lag: Counter = Counter()
        drained = self.worker.idle() and self.tracker.in_flight() == 0
        try:
            positions = self.consumer.position(assignment)
            for tp in positions:
                low, high = self.consumer.get_watermark_offsets(tp, timeout=2, cached=False)
                position = tp.offset if tp.offset >= 0 else low
                lag[tp.topic] += max(high - position, 0)
                if high > low and position < high:
                    drained = False
            self.health.broker_reachable = True
        except KafkaException as exc:
            log.warning("lag check failed error=%r", str(exc))
            return False
        for topic in self.topics.inputs():
            self.metrics.lag.labels(topic).set(lag.get(topic, 0))
        return drained

    def _on_assign(self, consumer, partitions: list[TopicPartition]) -> None:
        # cooperative: ``partitions`` are the ones added (maybe none) to what is already held
        self.health.assignment_held = bool(partitions) or bool(consumer.assignment())
        if self.eos:  # the new generation, before any record of it reaches the worker
            self._group_metadata = consumer.consumer_group_metadata()
        log.info("partitions assigned %s", _describe(partitions))

    def _on_revoke(self, consumer, partitions: list[TopicPartition]) -> None:
        if self.eos:  # the offsets still to be sent belong to the generation now current
            self._group_metadata = consumer.consumer_group_metadata()
        tps = {(p.topic, p.partition) for p in partitions}
        budget = 0.0 if self._closing else min(self.settings.shutdown_timeout_s, 30.0)
        deadline = time.monotonic() + budget  # at close, the drain has had its budget already
        while self._unsettled(tps) and time.monotonic() < deadline:
            if self.worker.error is not None or self._fatal is not None:
                break
            self.producer.poll(0.05)
        self.commit(only=tps)
        if self.eos and self._unsettled(tps) and not self._closing:
            # an open transaction holds outputs of these partitions without their offsets:
            # committing it would repeat them under the new owner
            self._txn_abandoned = True
            self._fail(
                "revoked partitions did not settle within the rebalance budget; restart to "
                "resume from the last committed transaction"
            )
        dropped = self.tracker.drop(list(tps))
        if not self._closing:
            with self.stats.lock:
                self.stats.revocations += 1
        self.health.assignment_held = bool(set(consumer.assignment()) - set(partitions))
        log.info("partitions revoked %s abandoned=%d", _describe(partitions), dropped)

    def _unsettled(self, tps: set[tuple[str, int]]) -> int:
        """Records of ``tps`` whose offsets the new owner would not see committed yet.

        Exactly-once: a record is settled only when the worker's transaction has committed its
        offset too; dropping the partition before would lose that offset from the transaction
        and the new owner would process the record again.
        """
        count = self.tracker.in_flight(tps)
        if self.eos:
            count += sum(1 for tp in self.tracker.committable() if tp in tps)
        return count

    def _on_lost(self, consumer, partitions: list[TopicPartition]) -> None:
        self._lost_epoch += 1  # exactly-once: the open transaction aborts instead of committing
        dropped = self.tracker.drop([(p.topic, p.partition) for p in partitions])
        with self.stats.lock:
            self.stats.revocations += 1
        self.health.assignment_held = bool(set(consumer.assignment()) - set(partitions))
        log.warning("partitions lost %s abandoned=%d", _describe(partitions), dropped)
        if self.eos:
            self._group_metadata = consumer.consumer_group_metadata()

    def _fatal_message(self, err: KafkaError) -> str:
        return self._fatal_text(err.str(), err.code() in FENCED)

    def _on_client_fatal(self, text: str) -> None:
        self._fail(self._fatal_text(text))

    def _fatal_text(self, text: str, fenced: bool = False) -> str:
        # a fatal error can arrive as _FATAL (or only as a log line); its text names the cause
        if self.eos and (fenced or "fenced" in text.lower()):
            return (
                f"another producer took over this processor's transactional.id "
                f"{self._transactional_id!r} ({text}): two replicas run with the same id. "
                "Give each replica its own PROCESSOR_TRANSACTIONAL_ID, or leave it unset so "
                "that each takes a free <group>-<host>-<slot> id; restarting this one as it is "
                "would fence the other in turn"
            )
        return f"fatal Kafka error: {text}"

    def _on_kafka_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT):
            if self.health.broker_reachable:
                log.warning("broker unreachable error=%r", err.str())
            self.health.broker_reachable = False
        elif err.fatal():
            self._fail(self._fatal_message(err))
        else:
            log.warning("kafka error error=%r", err.str())


FENCED = frozenset(
    {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}
)


def _undeliverable(topic: str, err: KafkaError) -> str:
    """The fatal message for an output that failed for a reason other than its own content."""
    if err.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
        return (
            f"output topic {topic} does not exist: create it, or set "
            "PROCESSOR_CREATE_TOPICS=true to create missing topics at start"
        )
    if err.code() == KafkaError._MSG_TIMED_OUT:
        return (
            f"outputs to {topic} were not acknowledged within message.timeout.ms ({err.str()}): "
            "the broker was unreachable too long. Stopping without committing them; a restart "
            "resumes from the committed offsets (PROCESSOR_PRODUCER_KAFKA can raise "
            "message.timeout.ms, 0 waits forever)"
        )
    return (
        f"outputs to {topic} failed ({err.str()}); stopping without committing them, a restart "
        "resumes from the committed offsets"
    )


def _dead_key(origin: Origin) -> bytes | None:
    """A dead letter's Kafka key: the original key's kept prefix (the key of a bad record is as
    unbounded as its value, and the dead letter must fit its topic)."""
    return origin.key[: records.MAX_DEAD_LETTER_KEY] if origin.key is not None else None


def _json(record) -> bytes:
    return record.model_dump_json().encode()


def _describe(partitions: list[TopicPartition]) -> str:
    return ",".join(f"{p.topic}[{p.partition}]" for p in partitions) or "(none)"
