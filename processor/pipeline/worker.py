"""The inference worker: the one thread that owns the device and runs the models in batches.

It takes validated events from a bounded queue, groups them into batches (a count, a maximum
wait, and a token budget for documents), runs the models, and hands the output records to the
sink. When a batch fails in the model it is split in halves until the failing events are
isolated; those go to the dead-letter topic and the rest of the batch goes through.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from pydantic import BaseModel

from processor.device import DeviceChoice
from processor.metrics import Metrics
from processor.models.artifact import ModelBundle
from processor.models.embedder import TextEmbedder
from processor.models.features import merchant_text
from processor.pipeline import records
from processor.pipeline.records import Origin
from schemas import DeadLetterReason, DocumentV1, TransactionV1
from schemas.outputs import ModelInfo

log = logging.getLogger(__name__)

CHARS_PER_TOKEN = 4


@dataclass(frozen=True)
class WorkItem:
    """A validated event to run through the models, or (exactly-once mode) a record already
    judged a dead letter, which must be written inside the worker's transaction."""

    origin: Origin  # carries the record's original bytes
    event: TransactionV1 | DocumentV1 | None
    dead: tuple[DeadLetterReason, str] | None = None


Output = tuple[str, bytes | None, bytes]
"""(topic, key, serialized record)"""
Emission = tuple[Origin, list[Output]]


class Sink(Protocol):
    def batch_started(self) -> bool: ...

    def batch_finished(self) -> None: ...

    def idle_tick(self) -> None: ...

    def emit(self, origin: Origin, outputs: list[Output]) -> None: ...

    def dead(self, origin: Origin, reason: DeadLetterReason, detail: str) -> None: ...


@dataclass
class Models:
    embedder: TextEmbedder
    bundle: ModelBundle
    device: DeviceChoice

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(
            anomaly_model=self.bundle.version,
            embedding_model=self.embedder.name,
            device=str(self.device.device),
        )


@dataclass(frozen=True)
class Topics:
    transactions_enriched: str
    documents_enriched: str
    alerts: str


class InferenceWorker(threading.Thread):
    def __init__(
        self,
        models: Models,
        sink: Sink,
        metrics: Metrics,
        topics: Topics,
        batch_size: int,
        max_wait_s: float,
        max_tokens: int,
        max_chunks: int,
        encoding: str,
        is_live: Callable[[Origin], bool],
        delay_s: float = 0.0,
    ) -> None:
        super().__init__(name="inference-worker", daemon=True)
        self.models = models
        self.sink = sink
        self.metrics = metrics
        self.topics = topics
        self.batch_size = batch_size
        self.max_wait_s = max_wait_s
        self.max_tokens = max_tokens
        self.max_chunks = max_chunks
        self.encoding = encoding
        self.is_live = is_live
        self.delay_s = delay_s  # test hook: a deliberately slow model
        self.queue: queue.Queue[WorkItem] = queue.Queue()
        self._stop_event = threading.Event()
        self._busy = threading.Event()
        self._pending_tx: list[WorkItem] = []
        self._pending_docs: list[WorkItem] = []
        self._pending_doc_tokens = 0
        self.error: BaseException | None = None

    def stop(self) -> None:
        """Stop after the batch in hand; what is still queued is abandoned (not committed)."""
        self._stop_event.set()

    def idle(self) -> bool:
        return self.queue.empty() and not self._waiting() and not self._busy.is_set()

    def run(self) -> None:
        try:
            while not self._stop_event.is_set():
                batch = self._next_batch()
                if not batch:
                    self.sink.idle_tick()
                    continue
                if not self.sink.batch_started():
                    log.warning("inference worker stopping: the processor has failed")
                    break
                self._busy.set()
                try:
                    self._handle(batch)
                    self.sink.batch_finished()
                finally:
                    self._busy.clear()
            self.sink.idle_tick()  # a last chance for offsets resolved without a batch
        except BaseException as exc:  # the service sees this and stops
            if getattr(self.sink, "failed", False):  # a consequence of the recorded cause
                log.warning("inference worker stopped after the failure error=%r", exc)
            else:
                log.exception("inference worker died")
            self.error = exc

    def _next_batch(self) -> list[WorkItem]:
        """The next batch: transactions first (they are cheap), else documents by token budget.

        Waits up to ``max_wait_s`` after the first item for the batch to fill.
        """
        if not self._waiting():
            try:
                self._sort(self.queue.get(timeout=0.1))
            except queue.Empty:
                return []
        deadline = time.monotonic() + self.max_wait_s
        while not self._full():
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
                )
            except queue.Empty:
                break
            self._sort(item)
        if self._pending_tx:
            batch = self._pending_tx[: self.batch_size]
            del self._pending_tx[: self.batch_size]
            return batch
        batch, tokens = [], 0
        while self._pending_docs and len(batch) < self.batch_size:
            cost = self._tokens(self._pending_docs[0])
            if batch and tokens + cost > self.max_tokens:
                break
            batch.append(self._pending_docs.pop(0))
            self._pending_doc_tokens -= cost
            tokens += cost
        return batch

    def _waiting(self) -> int:
        return len(self._pending_tx) + len(self._pending_docs)

    def _full(self) -> bool:
        docs_tokens = self._pending_doc_tokens
        return len(self._pending_tx) >= self.batch_size or docs_tokens >= self.max_tokens

    def _sort(self, item: WorkItem) -> None:
        if isinstance(item.event, DocumentV1):
            self._pending_docs.append(item)
            self._pending_doc_tokens += self._tokens(item)
        else:
            self._pending_tx.append(item)

    @staticmethod
    def _tokens(item: WorkItem) -> int:
        if isinstance(item.event, DocumentV1):
            return len(item.event.text) // CHARS_PER_TOKEN + 1
        return 0

    def _handle(self, batch: list[WorkItem]) -> None:
        if self.delay_s:
            time.sleep(self.delay_s)
        live = [item for item in batch if self.is_live(item.origin)]
        for item in live:
            if item.dead is not None:
                self.sink.dead(item.origin, *item.dead)
        transactions = [i for i in live if isinstance(i.event, TransactionV1)]
        documents = [i for i in live if isinstance(i.event, DocumentV1)]
        if transactions:
            self._isolating(transactions, self._transactions)
        if documents:
            self._isolating(documents, self._documents)

    def _isolating(self, items: list[WorkItem], run: Callable[[list[WorkItem]], list]) -> None:
        """Run a batch; on failure split it until the failing events are found.

        ``run`` builds every output of the batch before anything is emitted, so a failure never
        leaves part of a batch sent: a retried half is never sent twice.
        """
        try:
            emissions = run(items)
        except Exception as exc:
            if len(items) == 1:
                item = items[0]
                log.warning(
                    "inference failed topic=%s partition=%d offset=%d error=%r",
                    item.origin.topic,
                    item.origin.partition,
                    item.origin.offset,
                    str(exc),
                )
                detail = f"{type(exc).__name__}: {exc}"
                self.sink.dead(item.origin, DeadLetterReason.INFERENCE_FAILED, detail)
                return
            half = len(items) // 2
            self._isolating(items[:half], run)
            self._isolating(items[half:], run)
            return
        for origin, outputs in emissions:
            self.sink.emit(origin, outputs)

    def _transactions(self, items: list[WorkItem]) -> list[Emission]:
        started = time.perf_counter()
        events = [i.event for i in items]
        bundle = self.models.bundle
        need_text = bundle.scorer.spec.text_dims > 0 or self.encoding != "none"
        vectors = (
            self.models.embedder.embed_short([merchant_text(e) for e in events])
            if (need_text)
            else None
        )
        scores = bundle.scorer.score(events, vectors if bundle.scorer.spec.text_dims else None)
        elapsed = time.perf_counter() - started
        self.metrics.batch_size.labels("transaction").observe(len(items))
        self.metrics.inference.labels("transaction").observe(elapsed)

        info = self.models.info
        emissions: list[Emission] = []
        for row, item in enumerate(items):
            record = records.enriched_transaction(
                item.event,
                item.origin,
                scores,
                row,
                vectors[row] if vectors is not None else None,
                bundle.threshold,
                info,
                self.encoding,
                elapsed * 1000,
            )
            key = item.event.account_id.encode()
            outputs = [(self.topics.transactions_enriched, key, _json(record))]
            if record.anomaly.is_anomaly:
                outputs.append((self.topics.alerts, key, _json(records.alert(record))))
            emissions.append((item.origin, outputs))
        return emissions

    def _documents(self, items: list[WorkItem]) -> list[Emission]:
        started = time.perf_counter()
        texts = [i.event.text for i in items]
        vectors = self.models.embedder.embed_documents(texts, max_chunks=self.max_chunks)
        references = self.models.bundle.references
        novelty = references.novelty(np.stack([v.vector for v in vectors])) if references else None
        elapsed = time.perf_counter() - started
        self.metrics.batch_size.labels("document").observe(len(items))
        self.metrics.inference.labels("document").observe(elapsed)

        info = self.models.info
        emissions: list[Emission] = []
        for row, item in enumerate(items):
            record = records.enriched_document(
                item.event,
                item.origin,
                vectors[row],
                novelty[row] if novelty else None,
                info,
                self.encoding,
                len(items),
                elapsed * 1000,
            )
            key = (item.event.entity_id or item.event.event_id).encode()
            emissions.append((item.origin, [(self.topics.documents_enriched, key, _json(record))]))
        return emissions


def _json(record: BaseModel) -> bytes:
    return record.model_dump_json().encode()
