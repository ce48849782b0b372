"""Adapter for the Sparkov simulated card transactions (Kaggle fraudTrain.csv / fraudTest.csv)."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterator
from itertools import islice
from typing import Any

from processor.sources.base import (
    PathLike,
    SourceEvent,
    exact_amount,
    open_text,
    require_columns,
    utc_timestamp,
)

logger = logging.getLogger(__name__)

CURRENCY = "USD"
EVENT_ID_PREFIX = "sparkov-"
# Every merchant name the Sparkov generator writes starts with "fraud_", genuine or not: it is
# an artefact of the generator, NOT a fraud label, so it is removed from the merchant name.
GENERATOR_MERCHANT_PREFIX = "fraud_"
COLUMNS = (
    "trans_date_trans_time",
    "cc_num",
    "merchant",
    "category",
    "amt",
    "lat",
    "long",
    "city_pop",
    "job",
    "dob",
    "trans_num",
    "merch_lat",
    "merch_long",
    "is_fraud",
)


def read_sparkov(path: PathLike, limit: int | None = None) -> Iterator[SourceEvent]:
    """Read a Sparkov CSV (``.csv`` or ``.csv.gz``) as TransactionV1 events keyed by card number.

    Timestamps are taken as UTC (the generator writes no zone), ``amt`` is copied as text, and
    the label is ``is_fraud``.
    """
    return islice(_read_rows(path), limit)


def _read_rows(path: PathLike) -> Iterator[SourceEvent]:
    with open_text(path) as handle:
        reader = csv.DictReader(handle)
        require_columns(reader.fieldnames, COLUMNS, path)
        for row in reader:
            yield sparkov_event(row)


def sparkov_event(row: dict[str, str]) -> SourceEvent:
    """Map one Sparkov CSV row (column name -> text) to a transaction event."""
    event: dict[str, Any] = {
        "type": "transaction",
        "version": 1,
        "event_id": f"{EVENT_ID_PREFIX}{row['trans_num']}",
        "occurred_at": utc_timestamp(row["trans_date_trans_time"]),
        "account_id": row["cc_num"],
        "amount": exact_amount(row["amt"]),
        "currency": CURRENCY,
        "merchant": _merchant(row),
        "customer": _customer(row),
        "attributes": {},
    }
    return SourceEvent(event=event, key=row["cc_num"], label=int(row["is_fraud"]))


def _merchant(row: dict[str, str]) -> dict[str, Any]:
    name = row["merchant"].removeprefix(GENERATOR_MERCHANT_PREFIX) or row["merchant"]
    # The data has no merchant city: only the merchant's coordinates.
    return {
        "name": name,
        "category": row["category"] or None,
        "lat": float(row["merch_lat"]),
        "lon": float(row["merch_long"]),
    }


def _customer(row: dict[str, str]) -> dict[str, Any]:
    return {
        "lat": float(row["lat"]),
        "lon": float(row["long"]),
        "city_population": int(row["city_pop"]),
        "job": row["job"] or None,
        "birth_year": int(row["dob"][:4]),
    }
