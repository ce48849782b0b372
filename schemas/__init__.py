"""Versioned event schemas (pydantic v2): inputs, enriched outputs, alerts, dead letters.

Downstream consumers that do not use Python read the JSON Schemas in ``schemas/json/``,
written by ``processor schemas``.
"""

from schemas.events import EVENT_MODELS, DocumentV1, TransactionV1
from schemas.outputs import (
    OUTPUT_MODELS,
    AlertV1,
    DeadLetterReason,
    DeadLetterV1,
    EnrichedDocumentV1,
    EnrichedTransactionV1,
)

ALL_MODELS = {
    "transaction.v1": TransactionV1,
    "document.v1": DocumentV1,
    **OUTPUT_MODELS,
}

__all__ = [
    "ALL_MODELS",
    "EVENT_MODELS",
    "OUTPUT_MODELS",
    "AlertV1",
    "DeadLetterReason",
    "DeadLetterV1",
    "DocumentV1",
    "EnrichedDocumentV1",
    "EnrichedTransactionV1",
    "TransactionV1",
]
