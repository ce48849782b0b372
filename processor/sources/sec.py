"""Adapter for SEC EDGAR filings already split into items (EDGAR-CRAWLER JSON Lines)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from datetime import date
from itertools import islice
from pathlib import PurePath
from typing import Any

from processor.sources.base import PathLike, SourceEvent, clip, identifier, midnight_utc, open_text
from schemas.events import MAX_TEXT_CHARS

logger = logging.getLogger(__name__)

ITEM_PREFIX = "item_"
METADATA_CHARS = 1024
TITLE_CHARS = 1024
_NOT_ALNUM = re.compile(r"[^a-z0-9]+")


def read_sec(path: PathLike, limit: int | None = None) -> Iterator[SourceEvent]:
    """Read an EDGAR-CRAWLER JSON Lines file: one document per non-empty item of each filing.

    ``doc_type`` is the item key (``item_2.02``), ``source`` is ``sec-8k`` / ``sec-10k`` from
    the filing type, the entity is ``CIK<cik>`` and ``occurred_at`` the filing date at 00:00 UTC.
    """
    return islice(_read_items(path), limit)


def _read_items(path: PathLike) -> Iterator[SourceEvent]:
    with open_text(path) as handle:
        for line in handle:
            if line.strip():
                yield from sec_events(json.loads(line))


def sec_events(filing: dict[str, Any]) -> Iterator[SourceEvent]:
    """Map one filing record to one document event per item with text, in file order."""
    for item, text in filing.items():
        if item.startswith(ITEM_PREFIX) and isinstance(text, str) and text.strip():
            yield _item_event(filing, item, text)


def _item_event(filing: dict[str, Any], item: str, text: str) -> SourceEvent:
    company = str(filing["company"]).strip()
    filing_type = str(filing["filing_type"]).strip()
    entity_id = f"CIK{filing['cik']}"
    if len(text) > MAX_TEXT_CHARS:
        logger.warning(
            "%s %s: text cut to %d characters", filing["filename"], item, MAX_TEXT_CHARS
        )
    event: dict[str, Any] = {
        "type": "document",
        "version": 1,
        "event_id": identifier(f"sec-{PurePath(filing['filename']).stem}-{item}"),
        "occurred_at": midnight_utc(date.fromisoformat(filing["filing_date"])),
        "source": source_name(filing_type),
        "doc_type": item,
        "entity_id": entity_id,
        "title": clip(f"{company} {filing_type} {item}", TITLE_CHARS),
        "text": clip(text, MAX_TEXT_CHARS),
        "metadata": {
            "company": clip(company, METADATA_CHARS),
            "filing_type": clip(filing_type, METADATA_CHARS),
            "cik": clip(str(filing["cik"]), METADATA_CHARS),
        },
    }
    return SourceEvent(event=event, key=entity_id, label=None)


def source_name(filing_type: str) -> str:
    """``8-K`` -> ``sec-8k``, ``10-K`` -> ``sec-10k``, ``10-K405`` -> ``sec-10k405``."""
    return "sec-" + _NOT_ALNUM.sub("", filing_type.lower())
