"""Input events, version 1: what producers write to the raw topics."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.common import Currency, Identifier, Money, Timestamp

MAX_TEXT_CHARS = 2_000_000
MAX_ATTRIBUTES = 64


def _has_content(text: str) -> str:
    if not any(ch.isprintable() and not ch.isspace() for ch in text):
        raise ValueError("text has no printable content (only whitespace or control characters)")
    return text


def _finite_attributes(values: dict[str, float]) -> dict[str, float]:
    for name, value in values.items():
        if not math.isfinite(value):
            raise ValueError(f"attribute {name!r} is not finite")
    return values


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Merchant(_Event):
    name: Annotated[str, AfterValidator(_has_content)] = Field(min_length=1, max_length=256)
    category: str | None = Field(default=None, max_length=64)
    city: str | None = Field(default=None, max_length=128)
    state: str | None = Field(default=None, max_length=64)
    country: str | None = Field(default=None, max_length=2, min_length=2)
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)


class Customer(_Event):
    lat: float | None = Field(default=None, ge=-90, le=90)
    lon: float | None = Field(default=None, ge=-180, le=180)
    city_population: int | None = Field(default=None, ge=0, le=100_000_000)
    job: str | None = Field(default=None, max_length=256)
    birth_year: int | None = Field(default=None, ge=1900, le=2100)


class TransactionV1(_Event):
    """A card or account transaction.

    ``attributes`` holds numeric features the producer already computed (for example rolling
    per-account aggregates); the model uses the ones it was trained with.
    """

    type: Literal["transaction"] = "transaction"
    version: Literal[1] = 1
    event_id: Identifier
    occurred_at: Timestamp
    account_id: Identifier
    amount: Money
    currency: Currency
    merchant: Merchant
    customer: Customer | None = None
    terminal_id: Identifier | None = None
    attributes: Annotated[
        dict[Annotated[str, Field(max_length=64)], float],
        Field(max_length=MAX_ATTRIBUTES),
        AfterValidator(_finite_attributes),
    ] = Field(default_factory=dict)


class DocumentV1(_Event):
    """A financial document as text: a filing section, a receipt, a statement."""

    type: Literal["document"] = "document"
    version: Literal[1] = 1
    event_id: Identifier
    occurred_at: Timestamp
    source: str = Field(min_length=1, max_length=64, description="e.g. 'sec-8k', 'receipt'")
    doc_type: str | None = Field(default=None, max_length=64)
    entity_id: Identifier | None = Field(default=None, description="the company or account")
    title: str | None = Field(default=None, max_length=1024)
    text: Annotated[str, AfterValidator(_has_content)] = Field(
        min_length=1, max_length=MAX_TEXT_CHARS
    )
    metadata: dict[
        Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=1024)]
    ] = Field(default_factory=dict, max_length=32)


EVENT_MODELS: dict[tuple[str, int], type[_Event]] = {
    ("transaction", 1): TransactionV1,
    ("document", 1): DocumentV1,
}
