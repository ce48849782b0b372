"""Turning a Kafka record's bytes into a validated event, or a dead-letter reason.

JSON is decoded with the standard library so that numbers stay exact (Decimal), NaN and
Infinity are refused, and duplicate keys are refused rather than silently overwritten.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal

from pydantic import BaseModel, ValidationError

from schemas import EVENT_MODELS, DeadLetterReason

MAX_ERRORS_SHOWN = 3


@dataclass(frozen=True)
class Decoded:
    """Exactly one of: an event, a dead-letter reason, or a skip."""

    event: BaseModel | None = None
    reason: DeadLetterReason | None = None
    detail: str = ""
    skipped: bool = False


class _Refused(ValueError):
    pass


def _no_constants(name: str) -> None:
    raise _Refused(f"{name} is not a number JSON allows")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise _Refused(f"duplicate key {key!r}")
        out[key] = value
    return out


def _dead(reason: DeadLetterReason, detail: str) -> Decoded:
    return Decoded(reason=reason, detail=printable(detail)[:4000])


def printable(text: str) -> str:
    """``text`` with lone surrogates (from escapes such as ``"\\ud800"`` in the input, which
    pydantic quotes in its messages) written as escapes, so that it can be encoded as UTF-8."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def parse_json(text: str) -> object:
    """json.loads with exact decimals, no NaN/Infinity, and no duplicate keys."""
    return json.loads(
        text, parse_float=Decimal, parse_constant=_no_constants, object_pairs_hook=_unique_keys
    )


def summarise(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:MAX_ERRORS_SHOWN]:
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - MAX_ERRORS_SHOWN
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def decode(value: bytes | None, expected_type: str, max_bytes: int) -> Decoded:
    """Decode one record value that arrived on the topic for ``expected_type`` events."""
    if value is None:
        return Decoded(skipped=True, detail="tombstone (null value)")
    if len(value) > max_bytes:
        return _dead(DeadLetterReason.TOO_LARGE, f"{len(value)} bytes > limit {max_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return _dead(DeadLetterReason.NOT_UTF8, f"byte {exc.start}: {exc.reason}")
    if not text.strip():
        return _dead(DeadLetterReason.EMPTY_PAYLOAD, "empty or whitespace-only value")
    try:
        data = parse_json(text)
    except _Refused as exc:
        return _dead(DeadLetterReason.NOT_JSON, str(exc))
    except json.JSONDecodeError as exc:
        return _dead(DeadLetterReason.NOT_JSON, f"{exc.msg} at line {exc.lineno} col {exc.colno}")
    except RecursionError:
        return _dead(DeadLetterReason.NOT_JSON, "nesting too deep")
    except ValueError as exc:  # e.g. an integer longer than Python converts (4300 digits)
        return _dead(DeadLetterReason.NOT_JSON, str(exc))
    except ArithmeticError:  # decimal.InvalidOperation: an exponent beyond what Decimal holds
        return _dead(DeadLetterReason.NOT_JSON, "a number's exponent is beyond any decimal range")
    if not isinstance(data, dict):
        return _dead(
            DeadLetterReason.SCHEMA_INVALID, f"expected a JSON object, got {type(data).__name__}"
        )
    kind = data.get("type", expected_type)
    version = data.get("version", 1)
    known = isinstance(kind, str) and type(version) is int
    model = EVENT_MODELS.get((kind, version)) if known else None
    if model is None or kind != expected_type:
        return _dead(
            DeadLetterReason.UNKNOWN_TYPE,
            f"type={kind!r} version={version!r} is not accepted on this topic "
            f"(expected type {expected_type!r}, versions "
            f"{sorted(v for k, v in EVENT_MODELS if k == expected_type)})",
        )
    try:
        return Decoded(event=model.model_validate(data))
    except ValidationError as exc:
        return _dead(DeadLetterReason.SCHEMA_INVALID, summarise(exc))
