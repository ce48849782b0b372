"""Shared pieces of the data-source adapters: the event record and small field converters."""

from __future__ import annotations

import gzip
import logging
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TextIO

from schemas.common import MAX_AMOUNT_PLACES

logger = logging.getLogger(__name__)

PathLike = str | Path
MAX_ID_CHARS = 128
_NOT_ID_CHAR = re.compile(r"[^\x21-\x7e]+")
_NOT_SLUG_CHAR = re.compile(r"[^a-z0-9]+")
_ROUNDING_STEP = Decimal(1).scaleb(-MAX_AMOUNT_PLACES)


@dataclass(frozen=True)
class SourceEvent:
    """One event read from a data file, ready to be produced to Kafka.

    ``event`` is a JSON-ready dict that validates as ``TransactionV1`` or ``DocumentV1``;
    ``key`` is the Kafka message key; ``label`` is the ground-truth fraud label when the data
    set has one (1 = fraud), else ``None``.
    """

    event: dict[str, Any]
    key: str
    label: int | None = None


def open_text(path: PathLike) -> TextIO:
    """Open a UTF-8 text file for reading, gunzipping it when the name ends in ``.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def expand_paths(paths: PathLike | Iterable[PathLike], patterns: Sequence[str]) -> list[Path]:
    """Turn one path or many into a list of files; a directory gives its matching files, sorted."""
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    files: list[Path] = []
    for item in map(Path, items):
        if item.is_dir():
            matches = sorted({f for pattern in patterns for f in item.glob(pattern)})
            if not matches:
                raise FileNotFoundError(f"{item}: no files matching {', '.join(patterns)}")
            files.extend(matches)
        elif item.exists():
            files.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such file or directory")
    return files


def require_columns(fieldnames: Sequence[str] | None, required: Iterable[str], path: Path) -> None:
    """Fail with a readable message when a CSV file lacks the columns an adapter needs."""
    missing = sorted(set(required) - set(fieldnames or ()))
    if missing:
        raise ValueError(f"{path}: missing columns {', '.join(missing)} (wrong file or source?)")


def exact_amount(text: str) -> str:
    """Return an amount as decimal text the schema accepts, without ever going through a float.

    The text is returned unchanged when it has at most ``MAX_AMOUNT_PLACES`` decimal places.
    Longer texts are float artefacts of a data generator (e.g. ``604.9499999999999`` for
    ``120.99 * 5``); they are rounded half-even to that many places and trailing zeros beyond
    the cents are dropped, which gives back the intended value (``604.95``).
    """
    text = text.strip()
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise ValueError(f"amount {text!r} is not a decimal number") from None
    exponent = value.as_tuple().exponent
    if not isinstance(exponent, int):
        raise ValueError(f"amount {text!r} is not finite")
    if exponent >= -MAX_AMOUNT_PLACES:
        return text
    whole, _, places = format(value.quantize(_ROUNDING_STEP, ROUND_HALF_EVEN), "f").partition(".")
    return f"{whole}.{places.rstrip('0').ljust(2, '0')}"


def utc_timestamp(text: str, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    """Parse a timestamp without an offset, treat it as UTC and write it as RFC 3339 (``...Z``)."""
    return datetime.strptime(text.strip(), fmt).strftime("%Y-%m-%dT%H:%M:%SZ")


def midnight_utc(day: date) -> str:
    """The RFC 3339 timestamp of 00:00 UTC on ``day``."""
    return f"{day.isoformat()}T00:00:00Z"


def identifier(text: str) -> str:
    """Make ``text`` a schema identifier: printable ASCII without spaces, at most 128 chars."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    cleaned = _NOT_ID_CHAR.sub("_", ascii_text).strip("_")[:MAX_ID_CHARS]
    if not cleaned:
        raise ValueError(f"cannot make an identifier from {text!r}")
    return cleaned


def slug(text: str | None) -> str | None:
    """Lower-case ASCII slug (``abc-ho-trading``) of a name, or ``None`` when nothing is left."""
    if not text:
        return None
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return _NOT_SLUG_CHAR.sub("-", ascii_text.lower()).strip("-")[:MAX_ID_CHARS].strip("-") or None


def clip(text: str, limit: int) -> str:
    """Cut ``text`` to at most ``limit`` characters (schema field limits)."""
    return text if len(text) <= limit else text[:limit]
