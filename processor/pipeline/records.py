"""Building output records: enriched events, alerts and dead letters."""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from processor import __version__
from processor.models.anomaly import Scores
from processor.models.embedder import DocumentVector
from processor.models.novelty import NoveltyResult
from processor.pipeline.decode import printable
from schemas import (
    AlertV1,
    DeadLetterReason,
    DeadLetterV1,
    DocumentV1,
    EnrichedDocumentV1,
    EnrichedTransactionV1,
    TransactionV1,
)
from schemas.outputs import (
    AnomalyResult,
    Contribution,
    Embedding,
    ModelInfo,
    Novelty,
    SourceRef,
    Timings,
)

MAX_DEAD_LETTER_VALUE = 512 * 1024
MAX_DEAD_LETTER_KEY = 16 * 1024  # together with the value, well under 1 MB once in base64


@dataclass(frozen=True)
class Origin:
    """Where one input record came from and when it was read."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None
    key: bytes | None
    consumed_at: datetime
    value: bytes | None = field(default=None, repr=False)
    incarnation: int | None = None  # of the partition's tracking when the record was read

    @property
    def ref(self) -> SourceRef:
        return SourceRef(
            topic=self.topic,
            partition=self.partition,
            offset=self.offset,
            timestamp_ms=self.timestamp_ms,
        )


def now() -> datetime:
    return datetime.now(UTC)


def encode_embedding(vector: np.ndarray, encoding: str) -> Embedding | None:
    if encoding == "none":
        return None
    if encoding == "float_list":
        values = [round(float(v), 6) for v in vector]
        return Embedding(encoding="float_list", dim=len(vector), values=values)
    dtype = "<f2" if encoding == "base64_f16" else "<f4"
    data = base64.b64encode(np.asarray(vector, dtype=dtype).tobytes()).decode()
    return Embedding(encoding=encoding, dim=len(vector), data=data)


def _timings(origin: Origin, batch_size: int, inference_ms: float) -> Timings:
    return Timings(
        consumed_at=origin.consumed_at,
        processed_at=now(),
        batch_size=batch_size,
        inference_ms=round(inference_ms, 3),
    )


def enriched_transaction(
    event: TransactionV1,
    origin: Origin,
    scores: Scores,
    row: int,
    vector: np.ndarray | None,
    threshold: float,
    model: ModelInfo,
    encoding: str,
    inference_ms: float,
) -> EnrichedTransactionV1:
    score = float(scores.calibrated[row])
    anomaly = AnomalyResult(
        score=score,
        raw_score=float(scores.raw[row]),
        threshold=threshold,
        is_anomaly=score >= threshold,
        top_features=[Contribution(feature=f, share=round(s, 4)) for f, s in scores.top(row)],
    )
    return EnrichedTransactionV1(
        event_id=event.event_id,
        account_id=event.account_id,
        event=event,
        embedding=encode_embedding(vector, encoding) if vector is not None else None,
        anomaly=anomaly,
        model=model,
        source=origin.ref,
        timings=_timings(origin, len(scores.raw), inference_ms),
    )


def alert(record: EnrichedTransactionV1) -> AlertV1:
    reasons = [
        f"{c.feature}: setting it to its usual value removes {c.share:.0%} of the score"
        for c in record.anomaly.top_features
    ]
    return AlertV1(
        alert_id=str(uuid.uuid4()),
        event_id=record.event_id,
        account_id=record.account_id,
        score=record.anomaly.score,
        threshold=record.anomaly.threshold,
        reasons=reasons,
        model_version=record.model.anomaly_model or "",
        created_at=now(),
        source=record.source,
    )


def enriched_document(
    event: DocumentV1,
    origin: Origin,
    vector: DocumentVector,
    novelty: NoveltyResult | None,
    model: ModelInfo,
    encoding: str,
    batch_size: int,
    inference_ms: float,
) -> EnrichedDocumentV1:
    return EnrichedDocumentV1(
        event_id=event.event_id,
        entity_id=event.entity_id,
        source_name=event.source,
        doc_type=event.doc_type,
        characters=len(event.text),
        tokens=vector.tokens,
        chunks=vector.chunks,
        truncated=vector.truncated,
        embedding=encode_embedding(vector.vector, encoding),
        novelty=Novelty(**novelty.__dict__) if novelty is not None else None,
        model=model,
        source=origin.ref,
        timings=_timings(origin, batch_size, inference_ms),
    )


def dead_letter(
    origin: Origin, value: bytes | None, reason: DeadLetterReason, detail: str
) -> DeadLetterV1:
    kept = value[:MAX_DEAD_LETTER_VALUE] if value is not None else None
    return DeadLetterV1(
        reason=reason,
        detail=printable(detail)[:4096],
        source=origin.ref,
        key_b64=(
            base64.b64encode(origin.key[:MAX_DEAD_LETTER_KEY]).decode()
            if origin.key is not None
            else None
        ),
        key_truncated=origin.key is not None and len(origin.key) > MAX_DEAD_LETTER_KEY,
        value_b64=base64.b64encode(kept).decode() if kept is not None else None,
        value_bytes=len(value) if value is not None else 0,
        value_truncated=value is not None and len(value) > MAX_DEAD_LETTER_VALUE,
        processor_version=__version__,
        created_at=now(),
    )
