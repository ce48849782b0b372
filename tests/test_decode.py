"""decode(): a record value becomes a validated event, a dead-letter reason, or a skip."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from processor.pipeline.decode import Decoded, decode
from processor.pipeline.records import Origin, dead_letter
from schemas import DeadLetterReason, DocumentV1, TransactionV1

LIMIT = 1_000_000
TRANSACTION = "transaction"


def sparkov_like(**changes: object) -> dict[str, object]:
    """A transaction shaped like the Sparkov adapter's output."""
    event: dict[str, object] = {
        "type": "transaction",
        "version": 1,
        "event_id": "sparkov-2da90c7d74bd46a0caf3777415b3ebd3",
        "occurred_at": "2020-06-21T12:14:25Z",
        "account_id": "2291163933867244",
        "amount": "2.86",
        "currency": "USD",
        "merchant": {
            "name": "Kirlin and Sons",
            "category": "personal_care",
            "lat": 33.986391,
            "lon": -81.200714,
        },
        "customer": {
            "lat": 33.9659,
            "lon": -80.9355,
            "city_population": 333497,
            "job": "Mechanical engineer",
            "birth_year": 1968,
        },
        "attributes": {},
    }
    event.update(changes)
    return event


def _encode(doc: object) -> bytes:
    return json.dumps(doc).encode()


def _dead(result: Decoded, reason: DeadLetterReason) -> str:
    assert result.event is None
    assert not result.skipped
    assert result.reason is reason, result.detail
    assert result.detail
    return result.detail


def test_tombstone_is_skipped_not_dead_lettered() -> None:
    result = decode(None, TRANSACTION, LIMIT)

    assert result.skipped
    assert result.event is None
    assert result.reason is None


@pytest.mark.parametrize("value", [b"", b" ", b"\n\t  \r\n"])
def test_empty_or_whitespace_value_is_empty_payload(value: bytes) -> None:
    _dead(decode(value, TRANSACTION, LIMIT), DeadLetterReason.EMPTY_PAYLOAD)


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\xfe{}",
        b'{"event_id": "\xc3"}',
        b"\xed\xa0\x80",  # an encoded lone surrogate (CESU / WTF-8), not UTF-8
        b'{"a": "\xed\xb0\x80"}',
    ],
)
def test_invalid_utf8_is_not_utf8(value: bytes) -> None:
    _dead(decode(value, TRANSACTION, LIMIT), DeadLetterReason.NOT_UTF8)


@pytest.mark.parametrize("value", [b"not json", b"{", b"{'a': 1}", b'{"a": 1,}', b"0x10"])
def test_non_json_is_not_json(value: bytes) -> None:
    _dead(decode(value, TRANSACTION, LIMIT), DeadLetterReason.NOT_JSON)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_not_json(literal: str) -> None:
    text = json.dumps(sparkov_like()).replace('"2.86"', literal)

    detail = _dead(decode(text.encode(), TRANSACTION, LIMIT), DeadLetterReason.NOT_JSON)

    assert literal in detail


def test_duplicate_key_is_not_json_naming_the_key() -> None:
    text = json.dumps(sparkov_like())[:-1] + ', "amount": "9999.00"}'

    detail = _dead(decode(text.encode(), TRANSACTION, LIMIT), DeadLetterReason.NOT_JSON)

    assert "duplicate" in detail
    assert "amount" in detail


def test_duplicate_key_in_nested_object_is_not_json() -> None:
    text = json.dumps(sparkov_like()).replace('"name": ', '"name": "a", "name": ', 1)

    detail = _dead(decode(text.encode(), TRANSACTION, LIMIT), DeadLetterReason.NOT_JSON)

    assert "'name'" in detail


@pytest.mark.parametrize("opener", [b"[", b'{"a":'])
def test_deep_nesting_is_not_json_without_crashing(opener: bytes) -> None:
    value = opener * 100_000

    detail = _dead(decode(value, TRANSACTION, 10 * len(value)), DeadLetterReason.NOT_JSON)
    assert detail == "nesting too deep"


def test_deep_but_closed_nesting_is_not_json_without_crashing() -> None:
    value = b"[" * 100_000 + b"]" * 100_000

    detail = _dead(decode(value, TRANSACTION, 10 * len(value)), DeadLetterReason.NOT_JSON)
    assert detail == "nesting too deep"


@pytest.mark.parametrize("doc", [[sparkov_like()], "a string", 12, None, True])
def test_json_that_is_not_an_object_is_schema_invalid(doc: object) -> None:
    detail = _dead(decode(_encode(doc), TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)

    assert "JSON object" in detail


def test_oversize_value_is_too_large_before_any_parsing() -> None:
    value = _encode(sparkov_like())

    detail = _dead(decode(value, TRANSACTION, len(value) - 1), DeadLetterReason.TOO_LARGE)

    assert str(len(value)) in detail
    assert decode(value, TRANSACTION, len(value)).event is not None


def test_oversize_invalid_bytes_are_too_large_not_not_utf8() -> None:
    _dead(decode(b"\xff" * 2048, TRANSACTION, 1024), DeadLetterReason.TOO_LARGE)


def test_document_on_transactions_topic_is_unknown_type() -> None:
    doc = {
        "type": "document",
        "version": 1,
        "event_id": "d1",
        "occurred_at": "2024-05-01T12:00:00Z",
        "source": "receipt",
        "text": "TOTAL 12.00",
    }
    assert isinstance(decode(_encode(doc), "document", LIMIT).event, DocumentV1)

    detail = _dead(decode(_encode(doc), TRANSACTION, LIMIT), DeadLetterReason.UNKNOWN_TYPE)

    assert "'document'" in detail


@pytest.mark.parametrize("version", ["2", "0", '"1"', "1.0", "null"])
def test_unaccepted_version_is_unknown_type(version: str) -> None:
    text = json.dumps(sparkov_like()).replace('"version": 1', f'"version": {version}')
    assert f'"version": {version}' in text

    detail = _dead(decode(text.encode(), TRANSACTION, LIMIT), DeadLetterReason.UNKNOWN_TYPE)

    assert "version=" in detail


@pytest.mark.parametrize("kind", ["alert", "", None])
def test_unknown_type_name_is_unknown_type(kind: object) -> None:
    _dead(
        decode(_encode(sparkov_like(type=kind)), TRANSACTION, LIMIT),
        DeadLetterReason.UNKNOWN_TYPE,
    )


@pytest.mark.parametrize("kind", [["transaction"], {"name": "transaction"}])
def test_unhashable_type_field_is_unknown_type_not_a_crash(kind: object) -> None:
    _dead(
        decode(_encode(sparkov_like(type=kind)), TRANSACTION, LIMIT),
        DeadLetterReason.UNKNOWN_TYPE,
    )


def test_valid_sparkov_transaction_decodes_to_event() -> None:
    result = decode(_encode(sparkov_like()), TRANSACTION, LIMIT)

    assert result.reason is None
    assert not result.skipped
    event = result.event
    assert isinstance(event, TransactionV1)
    assert event.event_id == "sparkov-2da90c7d74bd46a0caf3777415b3ebd3"
    assert event.amount == Decimal("2.86")
    assert event.occurred_at == datetime(2020, 6, 21, 12, 14, 25, tzinfo=UTC)
    assert event.merchant.category == "personal_care"
    assert event.customer is not None and event.customer.city_population == 333497


def test_type_and_version_default_to_the_topic_type() -> None:
    doc = sparkov_like()
    del doc["type"], doc["version"]

    result = decode(_encode(doc), TRANSACTION, LIMIT)

    assert isinstance(result.event, TransactionV1)


@pytest.mark.parametrize(
    "number",
    ["12345678901.23", "0.10", "-5.000001", "999999999999.999999", "7"],
)
def test_json_number_amount_stays_an_exact_decimal(number: str) -> None:
    text = json.dumps(sparkov_like()).replace('"2.86"', number)

    result = decode(text.encode(), TRANSACTION, LIMIT)

    assert isinstance(result.event, TransactionV1), result.detail
    assert result.event.amount == Decimal(number)
    assert str(result.event.amount) == number  # the digits, trailing zeros included


def test_string_amount_keeps_trailing_zeros() -> None:
    result = decode(_encode(sparkov_like(amount="10.10")), TRANSACTION, LIMIT)

    assert isinstance(result.event, TransactionV1)
    assert str(result.event.amount) == "10.10"


def test_float_attributes_from_json_numbers_are_floats() -> None:
    result = decode(_encode(sparkov_like(attributes={"amt_7d": 12.5})), TRANSACTION, LIMIT)

    assert isinstance(result.event, TransactionV1)
    assert result.event.attributes == {"amt_7d": 12.5}
    assert type(result.event.attributes["amt_7d"]) is float


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"amount": "1.2345678"}, "amount"),
        ({"amount": 1.2345678}, "amount"),
        ({"amount": "1234567890123.5"}, "amount"),
        ({"amount": True}, "amount"),
        ({"amount": "ten"}, "amount"),
        ({"currency": "XYZ"}, "currency"),
        ({"currency": "usd"}, "currency"),
        ({"occurred_at": "2024-05-01T12:00:00"}, "occurred_at"),
        ({"occurred_at": "2024-05-01"}, "occurred_at"),
        ({"occurred_at": 1714564800}, "occurred_at"),
        ({"occurred_at": 1714564800000}, "occurred_at"),
        ({"occurred_at": "2024-13-01T12:00:00Z"}, "occurred_at"),
        ({"loyalty_tier": "gold"}, "loyalty_tier"),
        ({"event_id": "has space"}, "event_id"),
        ({"event_id": ""}, "event_id"),
        ({"merchant": {"name": "m", "mcc": "5411"}}, "merchant.mcc"),
    ],
)
def test_invalid_field_is_schema_invalid_naming_the_field(
    changes: dict[str, object], field: str
) -> None:
    detail = _dead(
        decode(_encode(sparkov_like(**changes)), TRANSACTION, LIMIT),
        DeadLetterReason.SCHEMA_INVALID,
    )

    assert detail.startswith(field) or f"; {field}" in detail, detail


def test_attribute_that_overflows_to_infinity_is_schema_invalid() -> None:
    text = json.dumps(sparkov_like(attributes={"x": 1.0})).replace("1.0}", "1e400}")
    assert "1e400" in text

    detail = _dead(decode(text.encode(), TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)

    assert detail.startswith("attributes")
    assert "'x'" in detail


def test_missing_required_field_is_schema_invalid_naming_it() -> None:
    doc = sparkov_like()
    del doc["account_id"]

    detail = _dead(decode(_encode(doc), TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)

    assert "account_id" in detail


def test_many_errors_are_summarised_not_listed_in_full() -> None:
    doc = sparkov_like(a=1, b=2, c=3, d=4, e=5)

    detail = _dead(decode(_encode(doc), TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)

    assert "and 2 more" in detail


def test_escaped_lone_surrogate_in_a_string_is_schema_invalid() -> None:
    value = _encode(sparkov_like()).replace(b"Kirlin", b"\\ud800Kirlin")

    detail = _dead(decode(value, TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)

    assert "merchant.name" in detail


def test_integer_longer_than_python_converts_is_not_json_not_a_crash() -> None:
    value = b'{"amount": ' + b"1" * 5000 + b"}"
    detail = _dead(decode(value, TRANSACTION, LIMIT), DeadLetterReason.NOT_JSON)
    assert "integer string conversion" in detail


@pytest.mark.parametrize("amount", ["1E+2000000", "1e400", "1E+12", "-1E+12"])
def test_amount_in_exponent_notation_is_range_checked(amount: str) -> None:
    text = json.dumps(sparkov_like(amount="PLACEHOLDER")).replace('"PLACEHOLDER"', amount)
    detail = _dead(decode(text.encode(), TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)
    assert "out of range" in detail


def test_amount_in_exponent_notation_within_range_is_exact() -> None:
    text = json.dumps(sparkov_like(amount="PLACEHOLDER")).replace('"PLACEHOLDER"', "1.5E+3")
    result = decode(text.encode(), TRANSACTION, LIMIT)
    assert result.event is not None and result.event.amount == Decimal("1500")
    assert result.event.model_dump(mode="json")["amount"] == "1500"


def test_timestamp_with_a_trailing_newline_is_schema_invalid() -> None:
    value = _encode(sparkov_like(occurred_at="2020-06-21T12:14:25Z\n"))
    detail = _dead(decode(value, TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)
    assert "RFC 3339" in detail


@pytest.mark.parametrize("text", [" \n\t ", "\x00\x01\x02", "\u200b\u200b"])
def test_document_without_printable_text_is_schema_invalid(text: str) -> None:
    doc = {
        "type": "document",
        "event_id": "doc-1",
        "occurred_at": "2020-06-21T12:14:25Z",
        "source": "test",
        "text": text,
    }
    detail = _dead(decode(_encode(doc), "document", LIMIT), DeadLetterReason.SCHEMA_INVALID)
    assert "text" in detail


# -- hostile kinds: surrogates in keys, numbers beyond Decimal, blank names, scripts, money ----


@pytest.mark.parametrize(
    "replacement",
    ['"attributes": {}, "\\ud800": 1', '"attributes": {"\\ud800": 1.0}'],
)
def test_lone_surrogate_in_a_key_gives_a_detail_a_dead_letter_can_carry(replacement: str) -> None:
    text = json.dumps(sparkov_like()).replace('"attributes": {}', replacement)
    assert replacement in text

    detail = _dead(decode(text.encode(), TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)

    detail.encode("utf-8")  # strict: a raw surrogate could not be written to the dead letter
    origin = Origin("tx", 0, 7, None, None, datetime.now(UTC), text.encode())
    record = dead_letter(origin, text.encode(), DeadLetterReason.SCHEMA_INVALID, detail)
    assert json.loads(record.model_dump_json())["detail"] == detail


def test_a_dead_letter_detail_with_a_raw_surrogate_is_escaped_not_a_crash() -> None:
    origin = Origin("tx", 0, 7, None, None, datetime.now(UTC), b"x")
    record = dead_letter(origin, b"x", DeadLetterReason.SCHEMA_INVALID, "key \ud800: refused")
    assert json.loads(record.model_dump_json())["detail"] == "key \\ud800: refused"


@pytest.mark.parametrize("number", ["1E+999999999999999999999", "1E-999999999999999999999"])
def test_exponent_beyond_what_decimal_holds_is_not_json_not_a_crash(number: str) -> None:
    text = json.dumps(sparkov_like()).replace('"2.86"', number)
    detail = _dead(decode(text.encode(), TRANSACTION, LIMIT), DeadLetterReason.NOT_JSON)
    assert "exponent" in detail


@pytest.mark.parametrize("name", ["", " ", "\x00\x01", "\u200b\u200b", "\t\n"])
def test_merchant_name_without_printable_content_is_schema_invalid(name: str) -> None:
    merchant = {"name": name, "category": "personal_care"}
    value = _encode(sparkov_like(merchant=merchant))
    detail = _dead(decode(value, TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)
    assert detail.startswith("merchant.name")


SCRIPTS = [
    "東京都港区 領収書 合計 1200円",
    "ጠቅላላ ድምር 120 ብር",
    "🧾💳✅ 12.00",
    "المجموع 12.00 درهم",
    "סה״כ 12.00 ₪",
    "Σύνολο 12,00 €",
]


@pytest.mark.parametrize("text", SCRIPTS)
@pytest.mark.parametrize("ensure_ascii", [True, False])  # escaped (surrogate pairs) or raw UTF-8
def test_text_in_any_script_decodes_exactly(text: str, ensure_ascii: bool) -> None:
    doc = {
        "type": "document",
        "event_id": "doc-1",
        "occurred_at": "2020-06-21T12:14:25Z",
        "source": "test",
        "text": text,
    }
    result = decode(json.dumps(doc, ensure_ascii=ensure_ascii).encode(), "document", LIMIT)
    assert isinstance(result.event, DocumentV1), result.detail
    assert result.event.text == text
    assert json.loads(result.event.model_dump_json())["text"] == text


@pytest.mark.parametrize("amount", ["1E+3", "+1.00", "1,00", ".5", "5.", " 1.00", "NaN", "0x10"])
def test_amount_text_that_is_not_plain_decimal_is_schema_invalid(amount: str) -> None:
    value = _encode(sparkov_like(amount=amount))
    detail = _dead(decode(value, TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)
    assert detail.startswith("amount") and "plain decimal text" in detail


@pytest.mark.parametrize(("amount", "currency"), [("0.001", "USD"), ("1.5", "JPY")])
def test_decimal_places_are_not_checked_against_the_currency(amount: str, currency: str) -> None:
    # the rule is at most 6 places whatever the currency (README, Events); pinned here
    result = decode(_encode(sparkov_like(amount=amount, currency=currency)), TRANSACTION, LIMIT)
    assert isinstance(result.event, TransactionV1), result.detail
    assert str(result.event.amount) == amount


@pytest.mark.parametrize(
    ("number", "words"), [("1E-2000000", "decimal places"), ("1" + "0" * 30, "out of range")]
)
def test_amount_out_of_range_either_way_is_schema_invalid(number: str, words: str) -> None:
    text = json.dumps(sparkov_like()).replace('"2.86"', number)
    detail = _dead(decode(text.encode(), TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)
    assert detail.startswith("amount") and words in detail


def test_huge_integer_in_a_float_field_is_schema_invalid() -> None:
    value = _encode(sparkov_like(attributes={"x": 10**400}))
    detail = _dead(decode(value, TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)
    assert detail.startswith("attributes")


@pytest.mark.parametrize("epoch", [1714564800, 1714564800000])
def test_epoch_timestamps_are_refused_as_ambiguous(epoch: int) -> None:
    value = _encode(sparkov_like(occurred_at=epoch))
    detail = _dead(decode(value, TRANSACTION, LIMIT), DeadLetterReason.SCHEMA_INVALID)
    assert detail.startswith("occurred_at") and "ambiguous" in detail
