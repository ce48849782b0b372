"""Output records: enriched events, alerts and dead letters, version 1."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.common import Timestamp
from schemas.events import TransactionV1


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceRef(_Record):
    """Where the input came from: the exact Kafka record."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)
    timestamp_ms: int | None = Field(default=None, description="the input record's timestamp")


class Embedding(_Record):
    """A vector, as a JSON list of floats or base64 of little-endian float16/float32."""

    encoding: Literal["float_list", "base64_f32", "base64_f16"]
    dim: int = Field(ge=1)
    values: list[float] | None = None
    data: str | None = None


class Contribution(_Record):
    feature: str
    share: float = Field(
        ge=0,
        le=1,
        description="share of the score removed by setting this feature to its usual value",
    )


class AnomalyResult(_Record):
    score: float = Field(
        ge=0, le=1, description="calibrated: share of training events scored lower"
    )
    raw_score: float = Field(ge=0, description="reconstruction error")
    threshold: float = Field(ge=0, le=1)
    is_anomaly: bool
    top_features: list[Contribution]


class Timings(_Record):
    consumed_at: Timestamp
    processed_at: Timestamp
    batch_size: int = Field(ge=1)
    inference_ms: float = Field(ge=0)


class ModelInfo(_Record):
    anomaly_model: str | None = None
    embedding_model: str
    device: str


class EnrichedTransactionV1(_Record):
    type: Literal["transaction.enriched"] = "transaction.enriched"
    version: Literal[1] = 1
    event_id: str
    account_id: str
    event: TransactionV1
    embedding: Embedding | None
    anomaly: AnomalyResult
    model: ModelInfo
    source: SourceRef
    timings: Timings


class Novelty(_Record):
    score: float = Field(ge=0, le=1, description="1 - cosine similarity to the nearest reference")
    nearest_id: str | None
    nearest_similarity: float
    near_duplicate: bool


class EnrichedDocumentV1(_Record):
    type: Literal["document.enriched"] = "document.enriched"
    version: Literal[1] = 1
    event_id: str
    entity_id: str | None
    source_name: str
    doc_type: str | None
    characters: int = Field(ge=0)
    tokens: int = Field(ge=0)
    chunks: int = Field(ge=1)
    truncated: bool = Field(description="true when only the first chunks were embedded")
    embedding: Embedding | None
    novelty: Novelty | None
    model: ModelInfo
    source: SourceRef
    timings: Timings


class AlertV1(_Record):
    type: Literal["alert"] = "alert"
    version: Literal[1] = 1
    alert_id: str
    event_id: str
    account_id: str
    kind: Literal["transaction_anomaly"] = "transaction_anomaly"
    score: float = Field(ge=0, le=1)
    threshold: float = Field(ge=0, le=1)
    reasons: list[str]
    model_version: str
    created_at: Timestamp
    source: SourceRef


class DeadLetterReason(StrEnum):
    """Why an input could not be processed. A closed set: alert on new values."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    EMPTY_PAYLOAD = "empty_payload"
    TOO_LARGE = "too_large"
    UNKNOWN_TYPE = "unknown_type"
    SCHEMA_INVALID = "schema_invalid"
    INFERENCE_FAILED = "inference_failed"
    OUTPUT_REJECTED = "output_rejected"


class DeadLetterV1(_Record):
    type: Literal["dead_letter"] = "dead_letter"
    version: Literal[1] = 1
    reason: DeadLetterReason
    detail: str = Field(max_length=4096)
    source: SourceRef
    key_b64: str | None = Field(description="the original key, base64")
    key_truncated: bool = Field(default=False, description="true when key_b64 holds a prefix")
    value_b64: str | None = Field(description="the original bytes, base64")
    value_bytes: int = Field(ge=0, description="size of the original value")
    value_truncated: bool = Field(description="true when value_b64 holds only a prefix")
    processor_version: str
    created_at: Timestamp


OUTPUT_MODELS = {
    "transaction.enriched.v1": EnrichedTransactionV1,
    "document.enriched.v1": EnrichedDocumentV1,
    "alert.v1": AlertV1,
    "dead_letter.v1": DeadLetterV1,
}
