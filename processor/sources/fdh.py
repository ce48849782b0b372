"""Adapter for the Fraud Detection Handbook (ULB) simulated transactions, and its test protocol.

The data is not shipped with the processor (its repository has no license); point the adapter at
your copy, e.g. ``../shared/data/fdh-simulated-transactions``.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

from processor.sources.base import (
    PathLike,
    SourceEvent,
    exact_amount,
    expand_paths,
    open_text,
    require_columns,
    utc_timestamp,
)

logger = logging.getLogger(__name__)

CURRENCY = "EUR"
FILE_PATTERNS = ("*.csv.gz", "*.csv")
FEATURES = (
    "TX_DURING_WEEKEND",
    "TX_DURING_NIGHT",
    "CUSTOMER_ID_NB_TX_1DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_1DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_7DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_7DAY_WINDOW",
    "CUSTOMER_ID_NB_TX_30DAY_WINDOW",
    "CUSTOMER_ID_AVG_AMOUNT_30DAY_WINDOW",
    "TERMINAL_ID_NB_TX_1DAY_WINDOW",
    "TERMINAL_ID_RISK_1DAY_WINDOW",
    "TERMINAL_ID_NB_TX_7DAY_WINDOW",
    "TERMINAL_ID_RISK_7DAY_WINDOW",
    "TERMINAL_ID_NB_TX_30DAY_WINDOW",
    "TERMINAL_ID_RISK_30DAY_WINDOW",
)
"""The handbook's engineered features other than the amount, sent as ``attributes``."""
COLUMNS = ("TRANSACTION_ID", "TX_DATETIME", "CUSTOMER_ID", "TERMINAL_ID", "TX_AMOUNT", "TX_FRAUD")
PROTOCOL_TRAIN_START = date(2018, 7, 11)
_WEEK_FILE = re.compile(r"(\d{4}-\d{2}-\d{2})_to_(\d{4}-\d{2}-\d{2})")


def read_fdh(
    paths: PathLike | Iterable[PathLike], limit: int | None = None
) -> Iterator[SourceEvent]:
    """Read FDH weekly CSV files (or a directory of them, in name order) as transaction events.

    Keyed by ``C<CUSTOMER_ID>``; the label is ``TX_FRAUD``. ``TX_FRAUD_SCENARIO`` is not sent:
    it would give the label away.
    """
    files = expand_paths(paths, FILE_PATTERNS)
    return islice((fdh_event(row) for row in _rows(files)), limit)


def fdh_event(row: dict[str, str]) -> SourceEvent:
    """Map one FDH CSV row (column name -> text) to a transaction event."""
    account_id = f"C{row['CUSTOMER_ID']}"
    event: dict[str, Any] = {
        "type": "transaction",
        "version": 1,
        "event_id": f"fdh-{row['TRANSACTION_ID']}",
        "occurred_at": utc_timestamp(row["TX_DATETIME"]),
        "account_id": account_id,
        "amount": exact_amount(row["TX_AMOUNT"]),
        "currency": CURRENCY,
        "merchant": {"name": f"terminal {row['TERMINAL_ID']}"},
        "terminal_id": f"T{row['TERMINAL_ID']}",
        "attributes": {name: float(row[name]) for name in FEATURES},
    }
    return SourceEvent(event=event, key=account_id, label=int(row["TX_FRAUD"]))


def _rows(files: Iterable[Path]) -> Iterator[dict[str, str]]:
    for path in files:
        with open_text(path) as handle:
            reader = csv.DictReader(handle)
            require_columns(reader.fieldnames, COLUMNS + FEATURES, path)
            yield from reader


@dataclass(frozen=True)
class _Windows:
    train_start: date
    delay_start: date
    test_start: date
    test_end: date  # exclusive
    delta_delay: int

    def known_until(self, test_day: date) -> date:
        """Last day whose frauds are known when scoring ``test_day`` (inclusive)."""
        return test_day - timedelta(days=self.delta_delay + 1)


def fdh_protocol_split(
    paths_or_dir: PathLike | Iterable[PathLike],
    train_start: date = PROTOCOL_TRAIN_START,
    delta_train: int = 7,
    delta_delay: int = 7,
    delta_test: int = 7,
) -> tuple[list[SourceEvent], list[SourceEvent]]:
    """Split FDH transactions into (train, test) events as the handbook's ``get_train_test_set``.

    With the defaults this is the unsupervised protocol of the handbook's chapter 7.3 (see the
    data's SOURCE.md): train = 2018-07-11..17, delay week 2018-07-18..24 (not returned),
    test = 2018-07-25..31. Pass the directory or the weekly files covering those days; files
    named ``..._<from>_to_<to>.csv.gz`` outside the window are not read.

    Test days drop customers already known to be defrauded. Reading of the protocol, chosen to
    match the handbook's code exactly: a fraud becomes known ``delta_delay`` days after the day
    it happened. For test day ``d`` the known-defrauded customers are those with a fraud in the
    training set or on any day from the training start up to ``d - delta_delay - 1`` inclusive.
    So test day 1 (07-25) excludes training-week frauds only, 07-26 adds frauds of 07-18, ...,
    07-31 adds frauds up to 07-23; frauds of 07-24 and of the test week itself never become known
    inside the test week. Events keep file (time) order, which is also TRANSACTION_ID order.
    """
    windows = _protocol_windows(train_start, delta_train, delta_delay, delta_test)
    files = [f for f in expand_paths(paths_or_dir, FILE_PATTERNS) if _overlaps(f, windows)]
    train: list[SourceEvent] = []
    candidates: list[tuple[date, str, dict[str, str]]] = []
    first_fraud: dict[str, date] = {}
    for row in _rows(files):
        day = date.fromisoformat(row["TX_DATETIME"][:10])
        if not windows.train_start <= day < windows.test_end:
            continue
        if row["TX_FRAUD"] == "1":
            customer = row["CUSTOMER_ID"]
            first_fraud[customer] = min(day, first_fraud.get(customer, day))
        if day < windows.delay_start:
            train.append(fdh_event(row))
        elif day >= windows.test_start:
            candidates.append((day, row["CUSTOMER_ID"], row))
    test = [
        fdh_event(row)
        for day, customer, row in candidates
        if not _known_defrauded(first_fraud.get(customer), windows.known_until(day))
    ]
    logger.info(
        "fdh protocol split: %d train, %d test (%d rows of known-defrauded customers dropped)",
        len(train),
        len(test),
        len(candidates) - len(test),
    )
    return train, test


def _protocol_windows(
    train_start: date, delta_train: int, delta_delay: int, delta_test: int
) -> _Windows:
    if min(delta_train, delta_test) < 1 or delta_delay < 0:
        raise ValueError("delta_train and delta_test must be >= 1 day, delta_delay >= 0")
    delay_start = train_start + timedelta(days=delta_train)
    test_start = delay_start + timedelta(days=delta_delay)
    return _Windows(
        train_start=train_start,
        delay_start=delay_start,
        test_start=test_start,
        test_end=test_start + timedelta(days=delta_test),
        delta_delay=delta_delay,
    )


def _known_defrauded(first_fraud_day: date | None, known_until: date) -> bool:
    return first_fraud_day is not None and first_fraud_day <= known_until


def _overlaps(path: Path, windows: _Windows) -> bool:
    """False only for files whose name says they lie wholly outside the protocol window."""
    match = _WEEK_FILE.search(path.name)
    if not match:
        return True
    first, last = (date.fromisoformat(text) for text in match.groups())
    return first < windows.test_end and last >= windows.train_start
