"""Field types shared by every event schema: exact money, currencies, RFC 3339 timestamps."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated

import pycountry
from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, WithJsonSchema

MAX_AMOUNT_DIGITS = 18
MAX_AMOUNT_PLACES = 6

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_MONEY_TEXT = re.compile(r"^-?\d+(\.\d+)?$")
_CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)


def _parse_rfc3339(value: object) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("timestamp has no UTC offset; write it as RFC 3339, e.g. ...Z")
        return value
    if not isinstance(value, str):
        raise ValueError(
            "timestamp must be an RFC 3339 string with an offset (numbers are refused: "
            "seconds or milliseconds since the epoch are ambiguous)"
        )
    if not _RFC3339.fullmatch(value):
        raise ValueError("timestamp must be RFC 3339 with an offset, e.g. 2024-05-01T12:00:00Z")
    return datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))


def _parse_money(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise ValueError(
            "amount must be a decimal string or a JSON number decoded exactly "
            f"(got {type(value).__name__})"
        )
    if isinstance(value, str) and not _MONEY_TEXT.fullmatch(value):
        raise ValueError(f"amount {value!r} must be plain decimal text such as '12.30'")
    try:
        amount = Decimal(value) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ValueError(f"amount {value!r} is not a decimal number") from None
    if not amount.is_finite():
        raise ValueError("amount must be finite (NaN and Infinity are refused)")
    exponent = amount.as_tuple().exponent
    places = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    if places > MAX_AMOUNT_PLACES:
        raise ValueError(f"amount has {places} decimal places; at most {MAX_AMOUNT_PLACES}")
    # adjusted(): the power of ten of the leading digit, whatever the notation (1E+9 is 9).
    if amount and amount.adjusted() >= MAX_AMOUNT_DIGITS - MAX_AMOUNT_PLACES:
        raise ValueError(
            f"amount is out of range: at most {MAX_AMOUNT_DIGITS - MAX_AMOUNT_PLACES} digits "
            "before the decimal point"
        )
    return amount


def _check_currency(code: str) -> str:
    if code not in _CURRENCIES:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code (write e.g. 'USD', 'EUR')")
    return code


Timestamp = Annotated[
    datetime,
    BeforeValidator(_parse_rfc3339),
    PlainSerializer(lambda d: d.isoformat(), return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An RFC 3339 timestamp that must carry a UTC offset; epoch numbers are refused."""

Money = Annotated[
    Decimal,
    BeforeValidator(_parse_money),
    PlainSerializer(lambda d: format(d, "f"), return_type=str),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": r"^-?\d+(\.\d+)?$"}, {"type": "number"}],
            "description": "exact decimal; outputs always write it as a string",
        }
    ),
]
"""An exact decimal amount: a string, an integer, or a JSON number decoded as Decimal."""

Currency = Annotated[
    str, Field(min_length=3, max_length=3, pattern=r"^[A-Z]{3}$"), AfterValidator(_check_currency)
]
"""An ISO 4217 alphabetic currency code."""

Identifier = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
"""A printable ASCII identifier without spaces, up to 128 characters."""
