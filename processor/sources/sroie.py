"""Adapter for the SROIE scanned-receipt data set (OCR lines and key fields, no images)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import date
from itertools import islice
from typing import Any

from processor.sources.base import (
    PathLike,
    SourceEvent,
    clip,
    identifier,
    midnight_utc,
    open_text,
    slug,
)

logger = logging.getLogger(__name__)

FALLBACK_DATE = date(2018, 1, 1)
"""Date used when a receipt's date cannot be read. Real receipts carry that date too, so such
events also get ``metadata["date_unparsed"] = "true"``; the raw text stays in ``date_raw``."""
METADATA_CHARS = 1024
TITLE_CHARS = 1024

_MONTHS = {
    name: number
    for number, name in enumerate(
        ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"), 1
    )
}
_SEP = r"[/.\-]"
_YEAR_FIRST = re.compile(rf"(\d{{4}}){_SEP}(\d{{1,2}}){_SEP}(\d{{1,2}})")
_DAY_FIRST = re.compile(rf"(\d{{1,2}}){_SEP}(\d{{1,2}}){_SEP}(\d{{4}}|\d{{2}})")
_COMPACT = re.compile(r"(\d{2})(\d{2})(\d{2})(\d{2})")
_NAMED_DAY_FIRST = re.compile(r"(\d{1,2})[ /.\-]*([A-Z]{3})[A-Z]*\.?[ /.\-,]*(\d{4}|\d{2})")
_NAMED_MONTH_FIRST = re.compile(r"([A-Z]{3})[A-Z]*\.?\s*(\d{1,2})\s*,?\s*(\d{4}|\d{2})")


def read_sroie(path: PathLike, limit: int | None = None) -> Iterator[SourceEvent]:
    """Read a SROIE metadata file (``.jsonl`` or ``.jsonl.gz``): one document per receipt.

    The text is the OCR lines joined with newlines; the company gives title and entity id; the
    receipt date (a calendar date, no time) becomes ``occurred_at`` at 00:00 UTC, or
    ``FALLBACK_DATE`` when it cannot be read. Metadata: ``total``, ``date_raw``, ``address``.
    """
    return islice(_read_receipts(path), limit)


def _read_receipts(path: PathLike) -> Iterator[SourceEvent]:
    with open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            record = json.loads(line)
            if not any(word.strip() for word in record.get("words") or ()):
                logger.warning(
                    "%s:%d: receipt %s has no text, skipped", path, number, record["key"]
                )
                continue
            yield sroie_event(record, where=f"{path}:{number}")


def sroie_event(record: dict[str, Any], where: str = "receipt") -> SourceEvent:
    """Map one SROIE metadata record to a receipt document event."""
    entities: dict[str, Any] = record.get("entities") or {}
    company = (entities.get("company") or "").strip() or None
    date_raw = entities.get("date") or ""
    day = parse_receipt_date(date_raw)
    if day is None:
        logger.debug("%s: unreadable receipt date %r, using %s", where, date_raw, FALLBACK_DATE)
    event_id = identifier(f"sroie-{record['key']}")
    entity_id = slug(company)
    event: dict[str, Any] = {
        "type": "document",
        "version": 1,
        "event_id": event_id,
        "occurred_at": midnight_utc(day or FALLBACK_DATE),
        "source": "receipt",
        "doc_type": "receipt",
        "entity_id": entity_id,
        "title": clip(company, TITLE_CHARS) if company else None,
        "text": "\n".join(record["words"]),
        "metadata": _metadata(entities, date_unparsed=day is None),
    }
    return SourceEvent(event=event, key=entity_id or event_id, label=None)


def _metadata(entities: dict[str, Any], date_unparsed: bool) -> dict[str, str]:
    fields = {"total": "total", "date_raw": "date", "address": "address"}
    metadata = {
        name: clip(str(entities[field]), METADATA_CHARS)
        for name, field in fields.items()
        if entities.get(field) is not None
    }
    if date_unparsed:
        metadata["date_unparsed"] = "true"
    return metadata


def parse_receipt_date(raw: str) -> date | None:
    """Read the many date spellings of the receipts; ``None`` when it cannot.

    Day first (Malaysian receipts): ``25/12/2018``, ``25-12-18``, ``25.12.18``, ``25122018``,
    ``25 DEC 2018``, ``25-DEC-18``; also ``2018-12-25``, ``2018/12/25``, ``20181225`` and
    ``DEC 25, 2018``. Two-digit years are 20yy. When the "month" is over 12 and the day is not,
    the two are swapped (a few receipts write month first, e.g. ``12/13/2016``).
    """
    text = raw.strip().strip("()").strip().upper()
    if match := _YEAR_FIRST.fullmatch(text):
        year, month, day = match.groups()
        return _make_date(year, month, day)
    if match := _DAY_FIRST.fullmatch(text):
        day, month, year = match.groups()
        return _day_first_date(day, month, year)
    if match := _COMPACT.fullmatch(text):
        return _compact_date(*match.groups())
    if match := _NAMED_DAY_FIRST.fullmatch(text):
        day, month_name, year = match.groups()
        return _named_date(day, month_name, year)
    if match := _NAMED_MONTH_FIRST.fullmatch(text):
        month_name, day, year = match.groups()
        return _named_date(day, month_name, year)
    return None


def _compact_date(a: str, b: str, c: str, d: str) -> date | None:
    """``yyyymmdd`` when that is a date in 1990..2099, else ``ddmmyyyy``."""
    if a in ("19", "20") and (found := _make_date(a + b, c, d)) and found.year >= 1990:
        return found
    return _day_first_date(a, b, c + d)


def _day_first_date(day: str, month: str, year: str) -> date | None:
    if int(month) > 12 >= int(day):
        day, month = month, day
    return _make_date(year, month, day)


def _named_date(day: str, month_name: str, year: str) -> date | None:
    month = _MONTHS.get(month_name)
    return _make_date(year, str(month), day) if month else None


def _make_date(year: str, month: str, day: str) -> date | None:
    full_year = int(year) + 2000 if len(year) == 2 else int(year)
    try:
        return date(full_year, int(month), int(day))
    except ValueError:
        return None
